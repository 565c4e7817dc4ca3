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
func TestConcurrentApplies(t *testing.T) {
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
				errs <- pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error { return r.p.Apply(ctx, tx, []ledger.Committed{c}) })
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

// TestCompleteness: a store is complete through a day when its edges have
// nothing pending and were heard of after the day ended in its time zone;
// an edge that says it holds more than is committed makes it incomplete;
// a tenant sees only its own streams and stores.
func TestCompleteness(t *testing.T) {
	r := newRig(t)
	r.exec(`UPDATE edges SET store = 's1' WHERE id = 'e1'`)
	l := pt.New(t)
	l.Add("e1", "a", pos.TypeSaleCompleted, pt.Txn(pt.Day, "A", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20)))
	l.Add("e2", "b", pos.TypeSaleCompleted, pt.Txn(pt.Day, "B", "EUR", false, 0, "card", 0, pt.Line("tea", 1000, 100, 0, 8)))
	r.commit(l.Recs...)
	ctx := context.Background()
	c, err := ReadCompleteness(ctx, r.pool, "t1")
	if err != nil {
		t.Fatal(err)
	}
	last, _ := ledger.LastPos(ctx, r.pool)
	if c.AsOf != last || len(c.Streams) != 1 || c.Streams[0].Edge != "e1" || len(c.Stores) != 1 || c.Stores[0].Store != "s1" {
		t.Fatalf("completeness of t1: %+v", c)
	}
	s := c.Stores[0]
	if s.Pending != 0 || len(s.Edges) != 1 || s.LastCommit.IsZero() {
		t.Errorf("store s1: %+v", s)
	}
	// s1 is in New York; its edge was last heard of now.
	yesterday := time.Now().In(s.Location).AddDate(0, 0, -1).Format(time.DateOnly)
	today := time.Now().In(s.Location).Format(time.DateOnly)
	if !s.CompleteThrough(yesterday) || s.CompleteThrough(today) {
		t.Errorf("complete through %s: %v, through %s: %v; want true, false", yesterday, s.CompleteThrough(yesterday), today, s.CompleteThrough(today))
	}
	r.exec(`UPDATE streams SET edge_seq = hwm + 3 WHERE edge = 'e1'`)
	if c, err = ReadCompleteness(ctx, r.pool, "t1"); err != nil {
		t.Fatal(err)
	}
	if s := c.Stores[0]; s.Pending != 3 || s.CompleteThrough(yesterday) {
		t.Errorf("with 3 events pending at the edge: %+v", s)
	}
	if c, err = ReadCompleteness(ctx, r.pool, "t2"); err != nil || len(c.Streams) != 1 || c.Streams[0].Edge != "e2" ||
		len(c.Stores) != 1 || len(c.Stores[0].Edges) != 0 || c.Stores[0].CompleteThrough(yesterday) {
		t.Errorf("completeness of t2 (whose edge serves no store): %+v, %v", c, err)
	}
}
