package pgview

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
)

// TestCommitsEqualTheFold commits random ledgers through the real commit,
// cut into random batches, with the live projection on, and checks that
// the live tables hold exactly what folding the whole committed ledger in
// one batch gives, row for row; then that a check and a rebuild agree.
func TestCommitsEqualTheFold(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := newRig(t)
			l := projectiontest.Random(t, seed, 250)
			r.commitSplit(seed, l.Recs)
			for _, d := range r.reference() {
				t.Errorf("live differs from the fold: %v", d)
			}
			ctx := context.Background()
			last, err := ledger.LastPos(ctx, r.pool)
			if err != nil {
				t.Fatal(err)
			}
			cp, ok, err := ReadCheckpoint(ctx, r.pool, Name)
			if err != nil || !ok {
				t.Fatalf("checkpoint: %v, %v", ok, err)
			}
			if cp.LastPos != last {
				t.Errorf("checkpoint last_pos %d, ledger last pos %d", cp.LastPos, last)
			}
			res, err := Rebuild(ctx, r.pool, RebuildOptions{Page: 40})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Equal() || res.Swapped || res.Through != last {
				t.Errorf("check: %+v", res)
			}
			res, err = Rebuild(ctx, r.pool, RebuildOptions{Swap: true, Page: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Equal() || !res.Swapped {
				t.Errorf("rebuild: %+v", res)
			}
			for _, d := range r.reference() {
				t.Errorf("after the rebuild, live differs from the fold: %v", d)
			}
			if n := r.count(`SELECT count(*) FROM anomalies WHERE kind = 'duplicate_transaction' AND other_pos IS NOT NULL`); n == 0 {
				t.Errorf("no duplicate transaction listed with both positions")
			}
			// Tenant isolation: e1 (t1) sends sales of s2 (t2) and e2 of
			// s1; none of them is in the other tenant's rows.
			if n := r.count(`SELECT count(*) FROM anomalies WHERE kind = 'foreign_store'`); n == 0 {
				t.Errorf("the random ledger sent no body naming another tenant's store")
			}
			if n := r.count(`SELECT count(*) FROM anomalies WHERE kind = 'foreign_store' AND tenant <> CASE store WHEN 's1' THEN 't2' ELSE 't1' END`); n != 0 {
				t.Errorf("%d foreign-store anomalies not under the sending edge's tenant", n)
			}
			for _, tbl := range []string{"sales_summary", "sales_by_sku", "sales_by_hour", "tenders", "inventory_on_hand",
				"inventory_movements", "till_reconciliation", "restatements", "projection_txns"} {
				if n := r.count(`SELECT count(*) FROM ` + tbl + ` x JOIN stores s ON s.id = x.store WHERE x.tenant <> s.tenant`); n != 0 {
					t.Errorf("%s: %d rows under another tenant than their store's", tbl, n)
				}
			}
			if n := r.count(`SELECT count(*) FROM projection_txns x JOIN ledger l ON l.pos = x.pos JOIN edges e ON e.id = l.edge WHERE e.tenant <> x.tenant`); n != 0 {
				t.Errorf("%d transactions counted from an edge of another tenant", n)
			}
		})
	}
}

// TestCheckFindsADifference tampers with live rows and expects check to
// name the first differing row without changing anything, and rebuild to
// put the rows right.
func TestCheckFindsADifference(t *testing.T) {
	r := newRig(t)
	r.commitSplit(9, projectiontest.Random(t, 9, 120).Recs)
	for _, tbl := range []string{"sales_summary", "till_reconciliation", "inventory_movements", "telemetry_per_minute", "anomalies"} {
		if r.count(`SELECT count(*) FROM `+tbl) == 0 {
			t.Fatalf("%s is empty: the random ledger does not exercise it", tbl)
		}
	}
	r.exec(`UPDATE sales_summary SET net_sales = net_sales + 1 WHERE (tenant, store, business_day, currency) =
		(SELECT tenant, store, business_day, currency FROM sales_summary ORDER BY 1, 2, 3, 4 LIMIT 1)`)
	r.exec(`DELETE FROM inventory_movements WHERE pos = (SELECT max(pos) FROM inventory_movements)`)
	ctx := context.Background()
	res, err := Rebuild(ctx, r.pool, RebuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Equal() || res.Swapped || len(res.Diffs) != 2 {
		t.Fatalf("check after tampering: %+v", res)
	}
	if d := res.Diffs[0]; d.Table != "sales_summary" || d.LiveOnly != 1 || d.RebuiltOnly != 1 || d.FirstLive == "" {
		t.Errorf("first diff: %v", d)
	}
	if d := res.Diffs[1]; d.Table != "inventory_movements" || d.LiveOnly != 0 || d.RebuiltOnly != 1 {
		t.Errorf("second diff: %v", d)
	}
	if len(r.reference()) != 2 {
		t.Errorf("check changed the live rows")
	}
	if res, err = Rebuild(ctx, r.pool, RebuildOptions{Swap: true}); err != nil || !res.Swapped {
		t.Fatalf("rebuild: %+v, %v", res, err)
	}
	for _, d := range r.reference() {
		t.Errorf("after the rebuild, live differs from the fold: %v", d)
	}
	for _, tbl := range tables {
		if n := r.count(`SELECT count(*) FROM pg_tables WHERE tablename = $1`, tbl.name+shadowSuffix); n != 0 {
			t.Errorf("shadow table of %s left behind", tbl.name)
		}
	}
}

// TestOneRebuildAtATime: while another rebuild or check holds the
// database, a rebuild is refused with ErrBusy and changes nothing.
func TestOneRebuildAtATime(t *testing.T) {
	r := newRig(t)
	r.commitSplit(3, projectiontest.Random(t, 3, 40).Recs)
	ctx := context.Background()
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockRebuild); err != nil {
		t.Fatal(err)
	}
	if _, err := Rebuild(ctx, r.pool, RebuildOptions{Swap: true}); !errors.Is(err, ErrBusy) {
		t.Fatalf("rebuild while another holds the lock: %v, want ErrBusy", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, lockRebuild); err != nil {
		t.Fatal(err)
	}
	if res, err := Rebuild(ctx, r.pool, RebuildOptions{}); err != nil || !res.Equal() {
		t.Fatalf("check after the lock was released: %+v, %v", res, err)
	}
}
