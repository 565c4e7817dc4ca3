package mqtt_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The fault of issue 10 end to end, on the real ledger: the ingest's
// connection is lost and the broker refuses its SUBSCRIBE while the edge
// keeps selling. Once the broker accepts it again, ingest is back by
// itself, and /v1/streams' lag (ledger.Streams) shows what the edge holds
// as soon as its next hello is answered, then drains to 0.
func TestLagAfterIngestRecovers(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := ledger.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	led := ledger.New(pool, ledger.Options{})
	edgeKey := protocoltest.Signer(t, "e1")
	if _, err := led.AddEdge(ctx, "e1", edgeKey.Public()); err != nil {
		t.Fatal(err)
	}
	h := &subscribeFaults{ingestClientID: "ingest-1"}
	srv, url := startBroker(t, h)
	cl := runCloudOn(t, url, h, led, nil)
	poll.Until(t, 10*time.Second, "ingest to subscribe", cl.c.Connected)

	st := protocoltest.NewStream(t, "e1", edgeKey).AddN(t, 50)
	e := newEdge(t, url)
	hello := func(seq uint64) []byte {
		// The lag counts only what the edge signed (hello version 2).
		return protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: st.Stream.Epoch, Seq: seq, Checkpoint: st.Checkpoint(seq)})
	}
	e.publish(t, protocol.KindSegment, protocoltest.Encode(t, st.Segment(1, 10), false))
	poll.Until(t, 10*time.Second, "a receipt for 1-10", func() bool { h, _ := e.hwm(t, cl.signer); return h == 10 })
	e.publish(t, protocol.KindHello, hello(10))
	lag := func() uint64 {
		ss, err := led.Streams(ctx)
		if err != nil || len(ss) != 1 {
			t.Fatalf("streams %+v, %v", ss, err)
		}
		return ss[0].Lag
	}

	// The broker loses the ingest and then refuses its subscriptions.
	h.refuse.Store(1 << 40)
	c, ok := srv.Clients.Get("ingest-1")
	if !ok {
		t.Fatal("no ingest client on the broker")
	}
	c.Stop(errors.New("test: the broker restarted"))
	poll.Until(t, 10*time.Second, "ingest to notice", func() bool { return !cl.c.Connected() && h.refused.Load() > 0 })
	// The edge, now holding 50, says hello: nobody answers.
	e.publish(t, protocol.KindHello, hello(50))

	h.refuse.Store(0)
	poll.Until(t, 10*time.Second, "ingest to subscribe again", cl.c.Connected)
	// The edge repeats its unanswered hello (its hello timeout), until the
	// ledger knows what it holds.
	last := time.Time{}
	poll.Until(t, 10*time.Second, "the lag to show the 40 records the edge holds", func() bool {
		if time.Since(last) > 100*time.Millisecond {
			e.publish(t, protocol.KindHello, hello(50))
			last = time.Now()
		}
		return lag() == 40
	})
	e.publish(t, protocol.KindSegment, protocoltest.Encode(t, st.Segment(11, 50), false))
	poll.Until(t, 10*time.Second, "a receipt for 11-50", func() bool { h, _ := e.hwm(t, cl.signer); return h == 50 })
	if l := lag(); l != 0 {
		t.Fatalf("lag %d after everything is committed", l)
	}
}
