package pgview

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
	pt "github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// TestLateEventLandsInItsDay: a sale a till held for a week lands in its
// own business day's rows in the commit that brings it, and a day that had
// matched its Z report shows restated, with the event in the restatement
// log; a late sale for a day with no Z just lands.
func TestLateEventLandsInItsDay(t *testing.T) {
	r := newRig(t)
	l := pt.New(t)
	const old, older = "2026-11-23", "2026-11-22"
	l.At = time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	a := pt.Txn(old, "A", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20))
	b := pt.Txn(old, "B", "USD", false, 0, "cash", 30, pt.Line("tea", 2000, 100, 10, 16))
	ra := l.Add("e1", "a", pos.TypeSaleCompleted, a)
	rb := l.Add("e1", "b", pos.TypeSaleCompleted, b)
	k := pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: old, Currency: "USD"}
	l.At = l.At.Add(6 * time.Hour)
	l.Add("e1", "z", pos.TypeTillClosed, pt.ZOf(t, k, ra, rb))
	r.commit(l.Recs...)
	if st := r.status(k); st != projection.StatusMatch {
		t.Fatalf("day %s before the late sale: %s, want match", old, st)
	}
	// A week of business, then the held sales.
	l.Recs = nil
	l.At = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	for _, id := range []string{"N1", "N2", "N3"} {
		l.Add("e1", "n"+id, pos.TypeSaleCompleted, pt.Txn(pt.Day, id, "USD", false, 0, "card", 0, pt.Line("pear", 1000, 90, 0, 7)))
	}
	r.commit(l.Recs...)
	l.Recs = nil
	late := pt.Txn(old, "C", "USD", false, 0, "card", 0, pt.Line("apple", 3000, 250, 0, 60))
	rc := l.Add("e1", "c", pos.TypeSaleCompleted, late)
	l.Add("e1", "d", pos.TypeSaleCompleted, pt.Txn(older, "D", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20)))
	r.commit(l.Recs...)

	ctx := context.Background()
	var n, net int64
	if err := r.pool.QueryRow(ctx, `SELECT transactions, net_sales FROM sales_summary WHERE tenant = 't1' AND store = 's1'
		AND business_day = $1 AND currency = 'USD'`, old).Scan(&n, &net); err != nil {
		t.Fatal(err)
	}
	wantNet := a.Total - a.Tax + b.Total - b.Tax + late.Total - late.Tax
	if n != 3 || net != wantNet {
		t.Errorf("day %s: %d transactions, net %d; want 3, %d", old, n, net, wantNet)
	}
	if st := r.status(k); st != projection.StatusRestated {
		t.Errorf("day %s after the late sale: %s, want restated", old, st)
	}
	var rpos int64
	var id, status string
	if err := r.pool.QueryRow(ctx, `SELECT pos, event_id, status FROM restatements WHERE store = 's1' AND business_day = $1`, old).
		Scan(&rpos, &id, &status); err != nil {
		t.Fatalf("restatement of %s: %v", old, err)
	}
	if id != rc.ID || status != projection.StatusMismatch {
		t.Errorf("restatement: event %s, status %s; want %s, mismatch (the ledger now exceeds the Z)", id, status, rc.ID)
	}
	if st := r.status(pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: older, Currency: "USD"}); st != projection.StatusOpen {
		t.Errorf("day %s (no Z): %s, want open", older, st)
	}
	if n := r.count(`SELECT count(*) FROM restatements`); n != 1 {
		t.Errorf("%d restatements, want 1", n)
	}
	for _, d := range r.reference() {
		t.Errorf("live differs from the fold: %v", d)
	}
}

func (r *rig) status(k pos.TillKey) string {
	r.tb.Helper()
	var s string
	if err := r.pool.QueryRow(context.Background(), `SELECT status FROM till_reconciliation WHERE store = $1 AND terminal = $2
		AND business_day = $3 AND currency = $4`, k.Store, k.Terminal, k.BusinessDay, k.Currency).Scan(&s); err != nil {
		r.tb.Fatalf("status of %v: %v", k, err)
	}
	return s
}

// TestConcurrentApplies runs Apply in many transactions at once, without
// the ledger's commit lock, on the same keys: the checkpoint lock orders
// them, so no update is lost and none deadlocks.
func TestConcurrentApplies(t *testing.T) { concurrentApplies(t, pgx.ReadCommitted) }

// TestConcurrentAppliesRepeatableRead is TestConcurrentApplies in
// REPEATABLE READ transactions, retried when they cannot serialize: the
// rows read under the checkpoint lock are not locked themselves, and a
// transaction whose snapshot predates another's commit must fail (at the
// checkpoint lock), not fold on rows older than that commit.
func TestConcurrentAppliesRepeatableRead(t *testing.T) {
	concurrentApplies(t, pgx.RepeatableRead)
}

func concurrentApplies(t *testing.T, iso pgx.TxIsoLevel) {
	r := newRig(t)
	ctx := context.Background()
	const workers, each = 6, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				p := int64(1 + w*each + i)
				body, err := protocol.NewBody(pt.Txn(pt.Day, "X"+string(rune('a'+w))+string(rune('a'+i)), "USD", false, 0, "card", 0,
					pt.Line("apple", 1000, 100, 0, 10)))
				if err != nil {
					errs <- err
					return
				}
				rec := protocol.Record{V: protocol.RecordVersion, Edge: "e1", Seq: uint64(p), ID: "ev", Type: pos.TypeSaleCompleted,
					EdgeTime: protocol.HLCFromTime(time.Date(2026, 11, 30, 15, 0, 0, 0, time.UTC)), Body: []byte(body)}
				c := ledger.Committed{Record: rec, Pos: p, Hash: protocol.Hash{byte(p)}}
				for range 1000 {
					err = pgx.BeginTxFunc(ctx, r.pool, pgx.TxOptions{IsoLevel: iso}, func(tx pgx.Tx) error {
						return r.p.Apply(ctx, tx, []ledger.Committed{c})
					})
					if pe := (*pgconn.PgError)(nil); iso == pgx.ReadCommitted || !errors.As(err, &pe) || pe.Code != "40001" {
						break
					}
				}
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var n, items int64
	if err := r.pool.QueryRow(ctx, `SELECT transactions, items FROM sales_summary WHERE store = 's1'`).Scan(&n, &items); err != nil {
		t.Fatal(err)
	}
	if n != workers*each || items != workers*each*1000 {
		t.Errorf("%d transactions, %d items; want %d, %d", n, items, workers*each, workers*each*1000)
	}
	if got := r.count(`SELECT on_hand FROM inventory_on_hand WHERE store = 's1' AND sku = 'apple'`); got != -workers*each*1000 {
		t.Errorf("on hand %d, want %d", got, -workers*each*1000)
	}
	cp, _, err := ReadCheckpoint(ctx, r.pool, Name)
	if err != nil || cp.LastPos != workers*each {
		t.Errorf("checkpoint %+v, %v; want last_pos %d", cp, err, workers*each)
	}
}
