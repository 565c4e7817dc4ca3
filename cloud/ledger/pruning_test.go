package ledger_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// explain returns the plan of q with args, one line per node.
func explain(t *testing.T, conn *pgx.Conn, opts, q string, args ...any) string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "EXPLAIN ("+opts+") "+q, args...)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	return strings.Join(lines, "\n")
}

// scans returns the plan lines that scan partition name.
func scans(plan, name string) []string {
	var out []string
	for _, l := range strings.Split(plan, "\n") {
		if strings.Contains(l, " on "+name+" ") || strings.HasSuffix(l, " on "+name) || strings.Contains(l, " on "+name+" (") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// The hot reads name the partitions they need (native partitioning; the
// same predicates let TimescaleDB exclude chunks): a year of monthly
// partitions exists, and the events page after a cursor plans only the
// months from the cursor's commit time on, while the duplicate check of a
// record between checkpoints reads only the partition of its commit.
func TestHotReadsPrune(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	if mode, err := ledger.Partitioning(ctx, conn); err != nil || mode != ledger.PartitionNative {
		t.Skipf("partitioning is %q (%v): this test reads native partition plans", mode, err)
	}
	now := time.Now().UTC()
	yearAgo := now.AddDate(-1, 0, 0)
	if _, err := ledger.EnsurePartitions(ctx, conn, yearAgo, 366*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	var old []string
	for m := 1; m <= 11; m++ {
		old = append(old, ledger.PartitionName(now.AddDate(0, -m, 0)))
	}
	current := ledger.PartitionName(now)

	l := ledger.New(conn, ledger.Options{})
	e := MustAddEdge(t, l, "edge-prune")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 30, now)
	for _, seg := range cut(c, e, 10) {
		MustCommit(t, l, inputs(seg)...)
	}
	// Rows in the old months too, so that nothing is pruned for being
	// empty.
	for _, p := range old {
		var at time.Time
		if err := conn.QueryRow(ctx, `SELECT lower_bound FROM (SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid),
			'FROM \(''([^'']+)''\)'))[1]::timestamptz AS lower_bound FROM pg_class c WHERE c.relname = $1) s`, p).Scan(&at); err != nil {
			t.Fatalf("bound of %s: %v", p, err)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO ledger (edge, epoch, seq, pos, committed_at, device, event_id, type, class,
			device_ts, edge_time, hlc, hash, raw) SELECT edge, 'old'::bytea, seq, -pos, $1, device, event_id, type, class,
			device_ts, edge_time, hlc, hash, raw FROM ledger WHERE seq = 1 AND epoch <> 'old'::bytea`, at.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, `ANALYZE ledger`); err != nil {
		t.Fatal(err)
	}

	// The events page after the 5th record.
	var page ledger.Page
	poll.For(t, time.Minute, func() error { // a shared server's writers may hold the horizon a moment
		var err error
		if page, err = l.Events(ctx, ledger.Filter{Limit: 5}); err != nil || len(page.Events) != 5 {
			return fmt.Errorf("first page: %d events, %v", len(page.Events), err)
		}
		return nil
	})
	var since time.Time
	if err := conn.QueryRow(ctx, `SELECT committed_at FROM ledger_marks WHERE pos <= $1 ORDER BY pos DESC LIMIT 1`,
		page.Next).Scan(&since); err != nil {
		t.Fatalf("no ledger mark at or before pos %d: %v", page.Next, err)
	}
	q, args := ledger.EventsQuery(ledger.Filter{After: page.Next, Limit: 100}, pgtype.Timestamptz{Time: since, Valid: true})
	plan := explain(t, conn, "COSTS OFF", q, args...)
	for _, p := range old {
		if s := scans(plan, p); len(s) > 0 {
			t.Errorf("the events page after pos %d scans %s, committed before its cursor: %v\n%s", page.Next, p, s, plan)
		}
	}
	if len(scans(plan, current)) == 0 {
		t.Errorf("the events page does not scan %s, where its rows are:\n%s", current, plan)
	}
	// Without the bound, every partition is in the plan: what the bound
	// saves.
	q, args = ledger.EventsQuery(ledger.Filter{After: page.Next, Limit: 100},
		pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true})
	if plan := explain(t, conn, "COSTS OFF", q, args...); len(scans(plan, old[5])) == 0 {
		t.Errorf("without a committed_at bound the plan still leaves out %s:\n%s", old[5], plan)
	}
	next, err := l.Events(ctx, ledger.Filter{After: page.Next, Limit: 100})
	if err != nil || len(next.Events) != 25 || next.Events[0].Pos <= page.Next {
		t.Fatalf("second page: %d events, %v", len(next.Events), err)
	}

	// The duplicate check of seq 15 (between the checkpoints at 10 and 20).
	plan = explain(t, conn, "ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF", ledger.DupCheckQuery,
		[]int32{0}, []string{e.ID}, [][]byte{c.Stream.Epoch[:]}, []int64{15})
	for _, p := range old {
		for _, s := range scans(plan, p) {
			if !strings.Contains(s, "never executed") {
				t.Errorf("the duplicate check reads %s: %s\n%s", p, s, plan)
			}
		}
	}
	ran := false
	for _, s := range scans(plan, current) {
		ran = ran || !strings.Contains(s, "never executed")
	}
	if !ran {
		t.Errorf("the duplicate check never reads %s, where seq 15 is:\n%s", current, plan)
	}
}
