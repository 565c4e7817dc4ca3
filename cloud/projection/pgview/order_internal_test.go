package pgview

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
	pt "github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// holdFirst is a projection, run before the real one, that holds the
// first commit of edge e1 inside its transaction (after it took its
// positions) until released.
type holdFirst struct {
	once    sync.Once
	in      chan struct{}
	release chan struct{}
}

func (h *holdFirst) Apply(ctx context.Context, tx pgx.Tx, recs []ledger.Committed) error {
	if recs[0].Record.Edge != "e1" {
		return nil
	}
	h.once.Do(func() {
		close(h.in)
		<-h.release
	})
	return nil
}

// TestCommitsApplyInPositionOrder: commits of different edges run at
// once, so a commit holding lower positions can reach the projection after
// a commit holding higher ones. Two tills of one store send the same
// transaction (a duplicate: the first in pos order counts, the other is an
// anomaly naming both positions). The commit of e1 takes its positions and
// is held; e3's commit comes after it. Whatever the timing, the live rows
// must equal the rebuild, which folds in pos order.
func TestCommitsApplyInPositionOrder(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	s := protocoltest.NewSigner(t)
	if _, err := r.l.AddEdge(ctx, "e3", s.Public()); err != nil {
		t.Fatal(err)
	}
	r.chains["e3"] = protocoltest.NewStream(t, "e3", s)
	r.exec(`UPDATE edges SET tenant = 't1' WHERE id = 'e3'`)
	h := &holdFirst{in: make(chan struct{}), release: make(chan struct{})}
	r.l = ledger.New(r.pool, ledger.Options{Projections: []ledger.Projection{h, r.p}})

	body := pt.MustBody(t, pt.Txn(pt.Day, "X1", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20)))
	sale := func(edge string) projection.Record {
		return projection.Record{Record: protocol.Record{Edge: edge, Device: "till", ID: "sale-" + edge,
			Type: pos.TypeSaleCompleted, EdgeTime: protocol.HLCFromTime(time.Date(2026, 11, 30, 15, 0, 0, 0, time.UTC)), Body: body}}
	}
	first := make(chan struct{})
	go func() { defer close(first); r.commit(sale("e1")) }()
	<-h.in
	second := make(chan struct{})
	go func() { defer close(second); r.commit(sale("e3")) }()
	// Release e1 once e3 has either committed (without order, it does) or
	// is waiting on a lock (with it, it waits for e1).
	poll.Until(t, 60*time.Second, "e3 committed or waiting on a lock", func() bool {
		select {
		case <-second:
			return true
		default:
		}
		var waiting int
		if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND state = 'active'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting > 0
	})
	close(h.release)
	<-first
	<-second

	res, err := Rebuild(ctx, r.pool, RebuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Equal() {
		t.Fatalf("live rows differ from the rebuild in pos order: %+v", res.Diffs)
	}
	if n := r.count(`SELECT count(*) FROM anomalies`); n != 1 {
		t.Errorf("%d anomalies, want the one duplicate", n)
	}
}
