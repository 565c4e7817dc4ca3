package pgview

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
	pt "github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// caughtUp waits until f has folded everything r's ledger holds.
func (r *rig) caughtUp(f *Follower) {
	r.tb.Helper()
	last := int64(r.count(`SELECT max(pos) FROM ledger`))
	poll.Until(r.tb, 60*time.Second, fmt.Sprintf("the follower folded through position %d", last), func() bool {
		cp, _, err := ReadCheckpoint(context.Background(), r.pool, Name)
		if err != nil {
			r.tb.Fatal(err)
		}
		return cp.LastPos >= last
	})
}

// TestFollowerEqualsReference commits random ledgers by two edges at once,
// in random batches, with two Followers folding behind the commits, and
// checks that the live tables equal the one-batch fold of the whole
// ledger in pos order, row for row, and that check agrees.
func TestFollowerEqualsReference(t *testing.T) {
	for seed := range uint64(2) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := newRig(t)
			f, stop := r.follow()
			defer stop()
			// A second follower of the same projection (a replica): the
			// checkpoint lock lets one fold each run of records.
			g := NewFollower(New(nil), r.l, r.pool)
			g.Idle = time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- g.Run(ctx) }()
			defer func() { cancel(); <-done }()

			l := pt.Random(t, seed, 400)
			byEdge := map[string][]projection.Record{}
			for _, rec := range l.Recs {
				byEdge[rec.Edge] = append(byEdge[rec.Edge], rec)
			}
			var wg sync.WaitGroup
			errs := make(chan error, len(byEdge))
			for e, recs := range byEdge {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(seed, uint64(len(e))))
					for len(recs) > 0 {
						n := min(len(recs), 1+rng.IntN(30))
						if err := r.commitErr(recs[:n]...); err != nil {
							errs <- err
							return
						}
						recs = recs[n:]
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			r.caughtUp(f)
			for _, d := range r.reference() {
				t.Errorf("live differs from the fold: %v", d)
			}
			res, err := Rebuild(context.Background(), r.pool, RebuildOptions{Page: 100})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Equal() {
				t.Errorf("check: %+v", res)
			}
			if f.Folds()+g.Folds() == 0 {
				t.Errorf("no fold committed")
			}
		})
	}
}

// TestFollowerWaitsForLowerPositions: a commit that took lower positions
// and has not committed holds back the records of a later commit, so the
// follower never folds a record before one with a lower position commits.
func TestFollowerWaitsForLowerPositions(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	s := protocoltest.NewSigner(t)
	if _, err := r.l.AddEdge(ctx, "e3", s.Public()); err != nil {
		t.Fatal(err)
	}
	r.chains["e3"] = protocoltest.NewStream(t, "e3", s)
	r.exec(`UPDATE edges SET tenant = 't1' WHERE id = 'e3'`)
	h := &holdFirst{in: make(chan struct{}), release: make(chan struct{})}
	// The hold is the only projection in the commit: the follower folds.
	r.l = ledger.New(r.pool, ledger.Options{Projections: []ledger.Projection{h}})
	f := NewFollower(r.p, r.l, r.pool)

	body := pt.MustBody(t, pt.Txn(pt.Day, "X1", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20)))
	sale := func(edge string) projection.Record {
		return projection.Record{Record: protocol.Record{Edge: edge, Device: "till", ID: "sale-" + edge,
			Type: pos.TypeSaleCompleted, EdgeTime: protocol.HLCFromTime(time.Date(2026, 11, 30, 15, 0, 0, 0, time.UTC)), Body: body}}
	}
	first := make(chan struct{})
	go func() { defer close(first); r.commit(sale("e1")) }()
	<-h.in
	r.commit(sale("e3")) // commits: nothing orders it after e1's commit
	n, err := f.CatchUp(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the follower folded %d records while a commit with lower positions was open", n)
	}
	close(h.release)
	<-first
	// Both have committed: the follower folds both (as soon as no other
	// transaction of the server holds the horizon below them).
	want := int64(r.count(`SELECT max(pos) FROM ledger`))
	poll.Until(t, 60*time.Second, fmt.Sprintf("the follower folded through position %d", want), func() bool {
		if _, err := f.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		return f.Through() >= want
	})
	res, err := Rebuild(ctx, r.pool, RebuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Equal() {
		t.Fatalf("live rows differ from the rebuild in pos order: %+v", res.Diffs)
	}
	var other int64
	var first1 string
	if err := r.pool.QueryRow(ctx, `SELECT a.event_id, a.other_pos FROM anomalies a`).Scan(&first1, &other); err != nil {
		t.Fatal(err)
	}
	if first1 != "sale-e3" {
		t.Errorf("the duplicate listed is %s, want sale-e3 (the higher position)", first1)
	}
}

// TestFollowerLateEventLandsByItself: with the projection folded behind
// the commits, a sale a till held for a week lands in its own business
// day's rows, and the day that had matched its Z shows restated, with no
// step but the commit: the running follower folds it.
func TestFollowerLateEventLandsByItself(t *testing.T) {
	r := newRig(t)
	_, stop := r.follow()
	defer stop()
	l := pt.New(t)
	const old = "2026-11-23"
	l.At = time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	a := pt.Txn(old, "A", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20))
	ra := l.Add("e1", "a", pos.TypeSaleCompleted, a)
	k := pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: old, Currency: "USD"}
	l.At = l.At.Add(6 * time.Hour)
	l.Add("e1", "z", pos.TypeTillClosed, pt.ZOf(t, k, ra))
	r.commit(l.Recs...)
	poll.Until(t, 60*time.Second, "day "+old+" matched its Z", func() bool {
		return r.statusOr(k) == projection.StatusMatch
	})
	l.Recs = nil
	l.At = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	l.Add("e1", "n", pos.TypeSaleCompleted, pt.Txn(pt.Day, "N", "USD", false, 0, "card", 0, pt.Line("pear", 1000, 90, 0, 7)))
	late := pt.Txn(old, "C", "USD", false, 0, "card", 0, pt.Line("apple", 3000, 250, 0, 60))
	l.Add("e1", "c", pos.TypeSaleCompleted, late)
	r.commit(l.Recs...)
	poll.Until(t, 60*time.Second, "the late sale in day "+old, func() bool {
		return r.count(`SELECT count(*) FROM sales_summary WHERE store = 's1' AND business_day = $1 AND transactions = 2`, old) == 1
	})
	if st := r.status(k); st != projection.StatusRestated {
		t.Errorf("day %s after the late sale: %s, want restated", old, st)
	}
	if n := r.count(`SELECT count(*) FROM restatements WHERE event_id = 'c'`); n != 1 {
		t.Errorf("%d restatements of the late sale, want 1", n)
	}
}

// statusOr is the till day's status, or "" when it has no row yet.
func (r *rig) statusOr(k pos.TillKey) string {
	if r.count(`SELECT count(*) FROM till_reconciliation WHERE store = $1 AND terminal = $2 AND business_day = $3 AND currency = $4`,
		k.Store, k.Terminal, k.BusinessDay, k.Currency) == 0 {
		return ""
	}
	return r.status(k)
}
