package mqtt_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/cloud/ingest"
	ingestmqtt "github.com/outpost-edge/outpost/cloud/ingest/mqtt"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// floodEdge is one edge of the stall test: it publishes its segments as
// fast as the broker takes them and records the highest receipted
// watermark. A stuck edge never PUBACKs its receipts (its window fills).
type floodEdge struct {
	id  string
	c   paho.Client
	mu  sync.Mutex
	hwm uint64
	bad error
}

func newFloodEdge(t *testing.T, url, id string, cloud *protocol.Signer, stuck bool) *floodEdge {
	t.Helper()
	e := &floodEdge{id: id}
	o := paho.NewClientOptions().AddBroker(url).SetClientID("outpost-edge-" + id).SetAutoReconnect(false).SetAutoAckDisabled(stuck)
	e.c = paho.NewClient(o)
	if tok := e.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("edge %s connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { e.c.Disconnect(0) })
	topic, _ := protocol.EdgeTopic(id, protocol.KindReceipt)
	keys := protocol.NewKeyMap(cloud.Public())
	tok := e.c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		r, err := protocol.VerifyReply(m.Payload(), keys)
		e.mu.Lock()
		defer e.mu.Unlock()
		switch {
		case err != nil:
			e.bad = err
		case r.Receipt != nil:
			e.hwm = max(e.hwm, r.Receipt.HWM)
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("edge %s subscribe: %v", id, tok.Error())
	}
	return e
}

func (e *floodEdge) state() (uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hwm, e.bad
}

// Issue 16 (the simload finding): many edges sending many small segments
// stalled the cloud's receipting. The ingest received segments and
// published receipts on one paho connection, whose packets paho reads in
// order: a receipt's PUBACK waited behind every segment the broker had
// sent before it, each waiting for room in the ingest queue, which waited
// for the commit workers, which waited for those PUBACKs. Offer's wait
// then ran out and segments were dropped (Stats.Overflow), and replies
// timed out (Stats.ReplyErrs). Now every segment of every edge that acks
// its receipts is receipted, none is dropped and no reply fails, also
// with an edge that never acks its receipts at all.
func TestManySmallSegmentsKeepReceiptsFlowing(t *testing.T) {
	const (
		edges    = 8
		segments = 120 // one record each
	)
	h := &subscribeFaults{ingestClientID: "ingest-1"}
	_, url := startBroker(t, h)
	signer := protocoltest.Signer(t, "cloud")
	// A small queue and batch, so the queue is full most of the time.
	svc, err := ingest.New(ingest.Options{Ledger: &memLedger{hwm: map[protocol.Stream]uint64{}}, Signer: signer,
		Workers: 1, Queue: 4, MaxBatch: 4, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ingestmqtt.New(ingestmqtt.Options{Broker: url, Service: svc, ClientID: h.ingestClientID,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, ReplyTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	go func() { defer wg.Done(); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	poll.Until(t, 10*time.Second, "ingest to subscribe", c.Connected)

	stuck := newFloodEdge(t, url, "stuck", signer, true)
	all := []*floodEdge{stuck}
	var payloads [][][]byte
	for i := range edges + 1 {
		id := "stuck"
		if i > 0 {
			id = fmt.Sprintf("e%d", i)
			all = append(all, newFloodEdge(t, url, id, signer, false))
		}
		st := protocoltest.NewStream(t, id, protocoltest.Signer(t, id)).AddN(t, segments)
		var ps [][]byte
		for _, seg := range st.Segments(1) {
			ps = append(ps, protocoltest.Encode(t, seg, false))
		}
		payloads = append(payloads, ps)
	}
	var pub sync.WaitGroup
	errs := make(chan error, len(all))
	for i, e := range all {
		pub.Add(1)
		go func() {
			defer pub.Done()
			topic, _ := protocol.EdgeTopic(e.id, protocol.KindSegment)
			toks := make([]paho.Token, 0, segments)
			for _, p := range payloads[i] {
				toks = append(toks, e.c.Publish(topic, 1, false, p))
			}
			for _, tok := range toks {
				if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
					errs <- fmt.Errorf("edge %s: publish: %v", e.id, tok.Error())
					return
				}
			}
		}()
	}
	pub.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	poll.Until(t, 120*time.Second, "every acking edge to be receipted up to its last segment", func() bool {
		if s := svc.Stats(); s.Overflow > 0 || s.ReplyErrs > 0 {
			t.Fatalf("the ingest dropped %d segments (queue full) and failed %d replies: receipts stalled", s.Overflow, s.ReplyErrs)
		}
		for _, e := range all[1:] {
			hwm, bad := e.state()
			if bad != nil {
				t.Fatalf("edge %s: a bad reply: %v", e.id, bad)
			}
			if hwm != segments {
				return false
			}
		}
		return true
	})
	// The stuck edge's segments were all accepted by the broker too (its
	// publishes were acked): they are committed, though it never acks a
	// receipt; they may still be on their way when the others are done.
	poll.Until(t, 120*time.Second, "every edge's segments, the stuck one's too, to be committed", func() bool {
		return svc.Stats().Committed >= uint64(len(all)*segments)
	})
	if s := svc.Stats(); s.Committed != uint64(len(all)*segments) {
		t.Fatalf("%d segments committed, want %d (stats %+v)", s.Committed, len(all)*segments, s)
	}
}

// Losing the reply connection ends the session like losing the segment
// one: both are made again, and receipts flow again.
func TestReconnectAfterLostReplyConnection(t *testing.T) {
	h := &subscribeFaults{ingestClientID: "ingest-1"}
	srv, url := startBroker(t, h)
	cl := runCloud(t, url, h, nil)
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	works(t, url, cl, st, 1, 5)
	c, ok := srv.Clients.Get("ingest-1-reply")
	if !ok {
		t.Fatal("no reply connection on the broker")
	}
	c.Stop(errors.New("test: cut the ingest's reply connection"))
	poll.Until(t, 10*time.Second, "the ingest to subscribe again", func() bool { return h.seen.Load() >= 2 && cl.c.Connected() })
	works(t, url, cl, st, 6, 9)
}
