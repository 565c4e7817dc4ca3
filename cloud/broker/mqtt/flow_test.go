package mqtt_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	broker "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	"github.com/outpost-edge/outpost/internal/poll"
)

// The saturate scenario's memory: the broker delivered the whole fleet's
// windows to the cloud's ingest, holding each until ingest committed it,
// up to mochi's 8192 per client, and dropped the rest. Now an edge's
// segment waits while the ingest holds MaxIngestInflight unacknowledged,
// and is delivered as soon as the ingest acknowledges one: nothing is
// dropped and the broker holds at most MaxIngestInflight for it.
func TestIngestBackpressure(t *testing.T) {
	defer func(d time.Duration) { *broker.IngestWait = d }(*broker.IngestWait)
	*broker.IngestWait = 10 * time.Minute // never runs out in this test
	b := startBroker(t)

	var mu sync.Mutex
	var held []paho.Message
	autoAck := false
	received := 0
	o := paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("outpost-cloud-test").SetUsername(broker.InternalUser).
		SetPassword(b.InternalPassword()).SetAutoReconnect(false).SetAutoAckDisabled(true).SetCleanSession(true)
	ing := paho.NewClient(o)
	if tok := ing.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ingest connect: %v", tok.Error())
	}
	t.Cleanup(func() { ing.Disconnect(0) })
	tok := ing.Subscribe("$share/g/outpost/v1/edge/+/seg", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		defer mu.Unlock()
		received++
		if autoAck {
			m.Ack()
			return
		}
		held = append(held, m)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ingest subscribe: %v", tok.Error())
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return received }

	edge, err := connect(t, b, "outpost-edge-e1", "e1", token(signer("e1"), "e1"))
	if err != nil {
		t.Fatal(err)
	}
	const n = broker.MaxIngestInflight + 20
	toks := make([]paho.Token, n)
	for i := range n {
		toks[i] = edge.Publish("outpost/v1/edge/e1/seg", 1, false, fmt.Appendf(nil, "segment %d", i))
	}
	poll.Until(t, 30*time.Second, "the ingest to hold MaxIngestInflight and the edge to wait", func() bool {
		w, _ := b.IngestWaits()
		return count() == broker.MaxIngestInflight && w > 0
	})
	if got := count(); got != broker.MaxIngestInflight {
		t.Fatalf("the ingest got %d segments while it held %d unacknowledged", got, broker.MaxIngestInflight)
	}
	mu.Lock()
	autoAck = true
	for _, m := range held {
		m.Ack()
	}
	mu.Unlock()
	poll.Until(t, 30*time.Second, "every segment to reach the ingest once it acknowledges", func() bool { return count() == n })
	for i, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("edge publish %d: %v", i, tok.Error())
		}
	}
	if _, expired := b.IngestWaits(); expired != 0 {
		t.Fatalf("%d segments were delivered after their wait ran out", expired)
	}
}
