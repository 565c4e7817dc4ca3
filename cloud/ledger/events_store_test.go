package ledger_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outpost-edge/outpost/cloud/ledger"
)

// TestEventsByStoreUseTheIndex: the store and business-day filters of
// Events select through projection_txns' (store, business_day, pos)
// index, never by reading bodies or scanning every transaction. (Sequential
// scans are turned off so that the planner shows whether the index can
// serve the query at all; on an empty table it would rightly prefer one.)
func TestEventsByStoreUseTheIndex(t *testing.T) {
	ctx := context.Background()
	pool := MustPool(t, MustMigratedDB(t))
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	for _, f := range []ledger.Filter{
		{Store: "s1", BusinessDay: "2026-02-10", Limit: 100},
		{Store: "s1", Limit: 100},
	} {
		q, args := ledger.EventsQuery(f, pgtype.Timestamptz{Time: time.Unix(0, 0), Valid: true})
		if strings.Contains(q, "body") {
			t.Fatalf("the query reads bodies: %s", q)
		}
		rows, err := conn.Query(ctx, "EXPLAIN "+q, args...)
		if err != nil {
			t.Fatalf("explain %s: %v", q, err)
		}
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, line)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if p := strings.Join(plan, "\n"); !strings.Contains(p, "projection_txns_store_day") {
			t.Errorf("filter %+v: the plan does not use projection_txns_store_day:\n%s", f, p)
		}
	}
}
