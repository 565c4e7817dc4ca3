package pgview

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
	pt "github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// countingTx counts the batches (round trips) sent through it.
type countingTx struct {
	pgx.Tx
	batches *atomic.Int64
}

func (c countingTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	c.batches.Add(1)
	return c.Tx.SendBatch(ctx, b)
}

// countingProjection is p, counting the round trips each Apply makes.
type countingProjection struct {
	p       *Projection
	batches atomic.Int64
}

func (c *countingProjection) Apply(ctx context.Context, tx pgx.Tx, recs []ledger.Committed) error {
	return c.p.Apply(ctx, countingTx{Tx: tx, batches: &c.batches}, recs)
}

// TestVoidNeedsNoThirdRoundTrip commits sales, then, in later batches,
// their voids (and a void of an already voided sale), and expects each of
// those Applies to make two round trips, one reading and one writing: the
// sales-by-SKU and on-hand rows a void reverses are read with the sale
// row, not in a round trip of their own after it. The rows must still
// equal the fold.
func TestVoidNeedsNoThirdRoundTrip(t *testing.T) {
	r := newRig(t)
	cp := &countingProjection{p: r.p}
	r.l = ledger.New(r.pool, ledger.Options{Projections: []ledger.Projection{cp}})
	l := pt.New(t)
	a := pt.Txn(pt.Day, "A", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20), pt.Line("tea", 2000, 100, 10, 16))
	b := pt.Txn(pt.Day, "B", "USD", false, 0, "cash", 30, pt.Line("apple", 3000, 250, 0, 60), pt.Line("pear", 1000, 90, 0, 7))
	c := pt.Txn(pt.Day, "C", "USD", false, 0, "card", 0, pt.Line("plum", 1000, 80, 0, 6))
	r.commit(l.Add("e1", "a", pos.TypeSaleCompleted, a), l.Add("e1", "b", pos.TypeSaleCompleted, b),
		l.Add("e1", "c", pos.TypeSaleCompleted, c))
	for i, batch := range [][]string{{"A"}, {"B", "A"}, {"C"}} {
		var in []pos.Void
		for _, id := range batch {
			in = append(in, pt.VoidOf(map[string]pos.Transaction{"A": a, "B": b, "C": c}[id], "V"+id+string(rune('0'+i))))
		}
		cp.batches.Store(0)
		var prs []projection.Record
		for j, v := range in {
			prs = append(prs, l.Add("e1", "v"+string(rune('0'+i))+string(rune('0'+j)), pos.TypeSaleVoided, v))
		}
		r.commit(prs...)
		if n := cp.batches.Load(); n != 2 {
			t.Errorf("batch %d (voids of %v): %d round trips in Apply, want 2 (read, write)", i, batch, n)
		}
	}
	for _, d := range r.reference() {
		t.Errorf("live differs from the fold: %v", d)
	}
	if n := r.count(`SELECT count(*) FROM sales_by_sku WHERE store = 's1' AND qty_voided > 0`); n != 4 {
		t.Errorf("%d SKU rows with voids, want 4 (apple, tea, pear, plum)", n)
	}
	if n := r.count(`SELECT count(*) FROM anomalies WHERE kind = $1`, projection.AnomalyVoidTwice); n != 1 {
		t.Errorf("%d void_twice anomalies, want 1 (A voided twice)", n)
	}
}

// TestEmptyZReprintInLaterCommit: a Z report of a day that took nothing
// (tenders an empty list, not absent) and its reprint, committed apart.
// The reprint is the same report and must count as one (ZCount 2, no
// z_superseded anomaly), as the fold of the whole ledger in one batch
// (and a rebuild whose page holds both) finds, whether the Z comes back
// from the kept rows or from its row in the database.
func TestEmptyZReprintInLaterCommit(t *testing.T) {
	for _, c := range []struct {
		name string
		drop bool // the kept rows dropped between the commits: the Z is read back from its row
	}{{"kept", false}, {"read", true}} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			l := pt.New(t)
			k := pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: pt.Day, Currency: "USD"}
			z := pos.TillClosed{Store: k.Store, Terminal: k.Terminal, BusinessDay: k.BusinessDay, Currency: k.Currency,
				Tenders: []pos.TenderTally{}}
			r.commit(l.Add("e1", "z1", pos.TypeTillClosed, z))
			if c.drop {
				r.p.rows.mu.Lock()
				r.p.rows.drop()
				r.p.rows.mu.Unlock()
			}
			r.commit(l.Add("e1", "z2", pos.TypeTillClosed, z))
			for _, d := range r.reference() {
				t.Errorf("live differs from the fold: %v", d)
			}
			if n := r.count(`SELECT count(*) FROM anomalies WHERE kind = $1`, projection.AnomalyZSuperseded); n != 0 {
				t.Errorf("%d z_superseded anomalies, want 0 (a reprint)", n)
			}
		})
	}
}
