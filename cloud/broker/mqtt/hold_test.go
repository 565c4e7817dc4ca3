package mqtt_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	broker "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// heldIngest is a cloud ingest client that acks only when told to.
type heldIngest struct {
	mu   sync.Mutex
	msgs []paho.Message
	seen map[string]int
	max  int // most held unacked at once
	c    paho.Client
}

func (h *heldIngest) held() int { h.mu.Lock(); defer h.mu.Unlock(); return len(h.msgs) }

func (h *heldIngest) ackAll() int {
	h.mu.Lock()
	msgs := h.msgs
	h.msgs = nil
	h.mu.Unlock()
	for _, m := range msgs {
		m.Ack()
	}
	return len(msgs)
}

func startHoldBroker(t *testing.T, limit int) *broker.Broker {
	t.Helper()
	keys := map[string]protocol.Keys{}
	for _, e := range []string{"e1", "e2", "e3"} {
		keys[e] = protocol.NewKeyMap(signer(e).Public())
	}
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", MaxIngestHeld: limit, Keys: func(_ context.Context, edge string) (protocol.Keys, error) {
		if k, ok := keys[edge]; ok {
			return k, nil
		}
		return nil, errors.New("unknown edge")
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func subscribeIngest(t *testing.T, b *broker.Broker, id string) *heldIngest {
	t.Helper()
	h := &heldIngest{seen: map[string]int{}}
	o := paho.NewClientOptions().AddBroker("tcp://" + b.InternalAddr()).SetClientID(id).
		SetUsername(broker.InternalUser).SetPassword(b.InternalPassword()).SetAutoReconnect(false).
		SetAutoAckDisabled(true).SetCleanSession(true).SetOrderMatters(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ingest connect: %v", tok.Error())
	}
	h.c = c
	t.Cleanup(func() { c.Disconnect(0) })
	filter, err := protocol.SharedSegmentFilter("g")
	if err != nil {
		t.Fatal(err)
	}
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		h.mu.Lock()
		h.msgs = append(h.msgs, m)
		h.seen[string(m.Payload())]++
		h.max = max(h.max, len(h.msgs))
		h.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ingest subscribe: %v", tok.Error())
	}
	return h
}

func connectEdge(t *testing.T, b *broker.Broker, name string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("outpost-edge-" + name).SetUsername(name).
		SetPassword(token(signer(name), name)).SetAutoReconnect(false).SetCleanSession(true).SetKeepAlive(time.Minute)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s connect: %v", name, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// TestSegmentsHeldWhileIngestIsBehind: the broker hands the cloud's ingest
// at most MaxIngestHeld unacknowledged segments; the rest wait, un-acked,
// on their edges' connections (the cloud's memory used to follow every
// edge's window: 9.4 GiB in a saturation run). As ingest acks, the others
// come, every one exactly once, edges taking turns, and hellos are not
// held behind the limit.
func TestSegmentsHeldWhileIngestIsBehind(t *testing.T) {
	const limit, perEdge = 4, 15
	b := startHoldBroker(t, limit)
	ing := subscribeIngest(t, b, "outpost-cloud-1")
	edges := []string{"e1", "e2", "e3"}
	var toks []paho.Token
	for _, e := range edges {
		c := connectEdge(t, b, e)
		for i := range perEdge {
			toks = append(toks, c.Publish("outpost/v1/edge/"+e+"/seg", 1, false, fmt.Sprintf("%s-%d", e, i)))
		}
	}
	// The broker stops: ingest holds the limit, and the rest wait.
	poll.Until(t, 30*time.Second, "ingest to hold the limit and an edge to wait", func() bool {
		return ing.held() == limit && b.HeldSegments() > 0
	})
	acked := 0
	for _, tok := range toks {
		if tok.WaitTimeout(0) {
			acked++
		}
	}
	if acked > limit+len(edges) {
		t.Fatalf("%d segments acknowledged to edges while ingest held %d: the broker took more than it holds back", acked, limit)
	}
	// Ingest acks what it has, again and again: everything comes, once.
	total := len(edges) * perEdge
	got := 0
	poll.Until(t, 60*time.Second, "every segment to reach ingest", func() bool {
		got += ing.ackAll()
		return got == total
	})
	for _, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("a held segment was never acknowledged to its edge: %v", tok.Error())
		}
	}
	ing.mu.Lock()
	defer ing.mu.Unlock()
	if ing.max > limit {
		t.Errorf("ingest held %d unacknowledged at once, limit %d", ing.max, limit)
	}
	for _, e := range edges {
		for i := range perEdge {
			if n := ing.seen[fmt.Sprintf("%s-%d", e, i)]; n != 1 {
				t.Errorf("%s-%d reached ingest %d times", e, i, n)
			}
		}
	}
}

// TestHeldEdgeThatLeavesGivesBackItsTurn: an edge whose connection ends
// while its segment waits is not acknowledged (it sends it again), and the
// room and the turn it held pass to the others; an ingest client that
// disconnects takes its unacknowledged segments' room with it.
func TestHeldEdgeThatLeavesGivesBackItsTurn(t *testing.T) {
	const limit = 2
	b := startHoldBroker(t, limit)
	ing := subscribeIngest(t, b, "outpost-cloud-1")
	quitter := connectEdge(t, b, "e1")
	var qtoks []paho.Token
	for i := range 5 {
		qtoks = append(qtoks, quitter.Publish("outpost/v1/edge/e1/seg", 1, false, fmt.Sprintf("e1-%d", i)))
	}
	poll.Until(t, 30*time.Second, "ingest to hold the limit and e1 to wait", func() bool {
		return ing.held() == limit && b.HeldSegments() > 0
	})
	quitter.Disconnect(0)
	stayer := connectEdge(t, b, "e2")
	tok := stayer.Publish("outpost/v1/edge/e2/seg", 1, false, "e2-0")
	got := 0
	poll.Until(t, 30*time.Second, "e2's segment to reach ingest", func() bool {
		got += ing.ackAll()
		ing.mu.Lock()
		defer ing.mu.Unlock()
		return ing.seen["e2-0"] == 1
	})
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("e2's segment: %v", tok.Error())
	}
	for i, q := range qtoks[limit+1:] {
		if q.WaitTimeout(0) && q.Error() == nil {
			t.Errorf("e1's segment %d was acknowledged after its connection ended", limit+1+i)
		}
	}
	// An ingest client that goes away with segments unacknowledged takes
	// their room with it: the next one gets segments at once.
	ing.ackAll()
	e3 := connectEdge(t, b, "e3")
	for i := range limit {
		e3.Publish("outpost/v1/edge/e3/seg", 1, false, fmt.Sprintf("e3-%d", i))
	}
	poll.Until(t, 30*time.Second, "ingest to hold the limit again", func() bool { return ing.held() == limit })
	ing.c.Disconnect(0)
	ing2 := subscribeIngest(t, b, "outpost-cloud-2")
	last := e3.Publish("outpost/v1/edge/e3/seg", 1, false, "e3-after")
	poll.Until(t, 30*time.Second, "the new ingest client to get room", func() bool {
		ing2.mu.Lock()
		defer ing2.mu.Unlock()
		return ing2.seen["e3-after"] == 1
	})
	if !last.WaitTimeout(30*time.Second) || last.Error() != nil {
		t.Fatalf("e3's segment: %v", last.Error())
	}
	_ = got
}
