package ledger_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// The hypertable path, when the test server has TimescaleDB (installed and
// preloaded): 30-day chunks, an events page after a cursor that leaves the
// older chunks out of its plan, and retention by drop_chunks that moves the
// streams' floors. Skipped, and says so, on a server without it.
func TestTimescaleHypertable(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	mode, err := ledger.Partitioning(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if mode != ledger.PartitionTimescaleDB {
		c, _ := ledger.PartitioningReport(ctx, conn)
		t.Skipf("skipped: TimescaleDB is not usable on this test server, the ledger is %s (%s)", mode, c.Reason)
	}
	var interval time.Duration
	if err := conn.QueryRow(ctx, `SELECT time_interval FROM timescaledb_information.dimensions
		WHERE hypertable_name = 'ledger' AND column_name = 'committed_at'`).Scan(&interval); err != nil {
		t.Fatal(err)
	}
	if interval != 30*24*time.Hour {
		t.Errorf("chunk interval %s, want 30 days", interval)
	}

	l := ledger.New(conn, ledger.Options{})
	e := MustAddEdge(t, l, "edge-ts")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 30, time.Now())
	for _, seg := range cut(c, e, 10) {
		MustCommit(t, l, inputs(seg)...)
	}
	// Rows in six older chunks.
	for m := 2; m <= 7; m++ {
		at := time.Now().AddDate(0, -m, 0)
		if _, err := conn.Exec(ctx, `INSERT INTO ledger (edge, epoch, seq, pos, committed_at, device, event_id, type, class,
			device_ts, edge_time, hlc, hash, raw) SELECT edge, 'old'::bytea, seq, -pos - $2, $1, device, event_id, type, class,
			device_ts, edge_time, hlc, hash, raw FROM ledger WHERE seq = 1 AND epoch <> 'old'::bytea`, at, m*1000); err != nil {
			t.Fatal(err)
		}
	}
	page, err := l.Events(ctx, ledger.Filter{Limit: 5})
	if err != nil || len(page.Events) != 5 {
		t.Fatalf("first page: %d events, %v", len(page.Events), err)
	}
	var since time.Time
	if err := conn.QueryRow(ctx, `SELECT committed_at FROM ledger_marks WHERE pos <= $1 ORDER BY pos DESC LIMIT 1`,
		page.Next).Scan(&since); err != nil {
		t.Fatal(err)
	}
	q, args := ledger.EventsQuery(ledger.Filter{After: page.Next, Limit: 100}, pgtype.Timestamptz{Time: since, Valid: true})
	plan := explain(t, conn, "COSTS OFF", q, args...)
	var chunks int
	for _, line := range strings.Split(plan, "\n") {
		if strings.Contains(line, "_hyper_") && strings.Contains(line, "_chunk") {
			chunks++
		}
	}
	if chunks > 2 {
		t.Errorf("the events page after pos %d plans %d chunk scans, want the newest one or two:\n%s", page.Next, chunks, plan)
	}

	dropped, err := ledger.DropBefore(ctx, conn, time.Now().AddDate(0, 1, 0))
	if err != nil || len(dropped) == 0 {
		t.Fatalf("DropBefore = %v, %v", dropped, err)
	}
	if n := count(t, conn, `SELECT floor_seq FROM streams WHERE edge = $1`, e.ID); n != 30 {
		t.Errorf("floor_seq %d after dropping every chunk, want 30", n)
	}
	if o := MustCommit(t, l, inputs(segment(c, e, 5, 15))...)[0]; o.Kind != ledger.KindDuplicate {
		t.Errorf("redelivery after retention: %+v, want a duplicate", o)
	}
}
