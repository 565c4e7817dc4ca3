package intake_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/edge/intake/intaketest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// A till on paho.mqtt.golang, configured as tills are (auto-reconnect, a
// persistent session, a store), must not be able to take a refused publish
// for a delivered one. paho completes the token of an unacknowledged
// publish without an error when it reconnects and resends from its store,
// so the edge must not refuse a 3.1.1 publish by disconnecting: it holds
// the PUBACK and stores the events itself as soon as it can.
func TestPaho311StorageRefusalIsNotAnAck(t *testing.T) {
	f := newFake(t)
	var full atomic.Bool
	full.Store(true)
	var tries atomic.Int64
	f.Fail = func(_ string, ev protocol.Event) error {
		if ev.ID == "till-7" {
			tries.Add(1)
			if full.Load() {
				return intaketest.QuotaError{}
			}
		}
		return nil
	}
	h := intaketest.MustStart(t, f, func(s *intake.Server) { s.HoldRetry = 5 * time.Millisecond })
	var connects atomic.Int64
	o := paho.NewClientOptions().
		AddBroker("tcp://" + h.MQTTAddr()).
		SetClientID("till").
		SetUsername("dev-1").
		SetPassword(h.Secret("dev-1")).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(10 * time.Millisecond).
		SetMaxReconnectInterval(50 * time.Millisecond).
		SetStore(paho.NewMemoryStore()).
		SetOnConnectHandler(func(paho.Client) { connects.Add(1) })
	c := paho.NewClient(o)
	waitToken(t, c.Connect())
	t.Cleanup(func() { c.Disconnect(0) })

	tok := c.Publish(evTopic("dev-1"), 1, false, eventJSON("till-7", "sale.note"))
	// The edge tries, and tries again, while the quota is full.
	poll.Until(t, waitLimit, "the edge to retry the refused append", func() bool { return tries.Load() >= 3 })
	select {
	case <-tok.Done():
		t.Fatalf("paho completed the publish (err %v) while the edge had stored nothing (%d records, %d connects)", tok.Error(), len(f.RecordsOfType("sale.note")), connects.Load())
	default:
	}
	if n := len(f.RecordsOfType("sale.note")); n != 0 {
		t.Fatalf("%d records stored while the quota is full", n)
	}
	full.Store(false)
	waitToken(t, tok)
	if n := len(f.RecordsOfType("sale.note")); n != 1 {
		t.Fatalf("%d records when paho completed the publish, want 1", n)
	}
	if n := connects.Load(); n != 1 {
		t.Fatalf("the till reconnected %d times; the refusal must not cost it its connection", n-1)
	}
	// The till goes on as usual.
	for i := range 3 {
		waitToken(t, c.Publish(evTopic("dev-1"), 1, false, eventJSON(fmt.Sprintf("till-8-%d", i), "sale.note")))
	}
	if n := len(f.RecordsOfType("sale.note")); n != 4 {
		t.Fatalf("%d records, want 4", n)
	}
}
