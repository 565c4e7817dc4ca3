package mqtt_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	broker "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	"github.com/outpost-edge/outpost/internal/poll"
)

// An edge that never acknowledges its receipts (QoS 1) used to make the
// broker hold up to mochi's MaximumInflight (8192) of them, for each such
// edge: the saturate scenario's memory. It is now disconnected once it
// leaves more than MaxEdgeInflight unacknowledged, counted, and the
// receipts of an edge that acknowledges keep flowing.
func TestSlowEdgeDisconnected(t *testing.T) {
	b := startBroker(t)
	subscribe := func(name string, ack bool, n *atomic.Int64) paho.Client {
		o := paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("outpost-edge-" + name).SetUsername(name).
			SetPassword(token(signer(name), name)).SetAutoReconnect(false).SetAutoAckDisabled(!ack).SetCleanSession(true)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s connect: %v", name, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(0) })
		tok := c.Subscribe("outpost/v1/edge/"+name+"/rcpt", 1, func(paho.Client, paho.Message) { n.Add(1) })
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s subscribe: %v", name, tok.Error())
		}
		return c
	}
	var stuckGot, healthyGot atomic.Int64
	stuck := subscribe("e1", false, &stuckGot)
	subscribe("e2", true, &healthyGot)
	cloud, err := connect(t, b, "outpost-cloud-test", broker.InternalUser, b.InternalPassword())
	if err != nil {
		t.Fatal(err)
	}
	const n = broker.MaxEdgeInflight + 50
	for i := range n {
		for _, e := range []string{"e1", "e2"} {
			tok := cloud.Publish("outpost/v1/edge/"+e+"/rcpt", 1, false, fmt.Appendf(nil, "receipt %d", i))
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Fatalf("the cloud's publish %d to %s: %v (a stuck edge must not hold up the cloud)", i, e, tok.Error())
			}
		}
	}
	poll.Until(t, 30*time.Second, "the healthy edge to get every receipt", func() bool { return healthyGot.Load() == n })
	poll.Until(t, 30*time.Second, "the stuck edge to be disconnected", func() bool { return !stuck.IsConnectionOpen() })
	if got := b.SlowEdgeDisconnects(); got != 1 {
		t.Fatalf("SlowEdgeDisconnects = %d, want 1", got)
	}
	if got := stuckGot.Load(); got > broker.MaxEdgeInflight+1 {
		t.Fatalf("the stuck edge got %d receipts, more than the %d the broker may hold for it", got, broker.MaxEdgeInflight+1)
	}
}
