package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/simulator"
)

// TestProjectionsRebuildEqualsIncremental runs the fleet with every
// fault the read models must survive: a till that holds a week-old
// business day and sends it after the traffic, devices publishing their
// backlog after an outage (a cut uplink), retransmits and duplicate
// publishes, sales sent again under new event ids, skewed clocks, voids
// and returns, and two currencies (the third store sells in USD). The
// cloud folds every commit into the projections; then, while the fleet
// still runs, `cloud projections check` recomputes them from the ledger
// and must find them equal row for row, and `cloud projections rebuild`
// swaps an equal copy in.
func TestProjectionsRebuildEqualsIncremental(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postgres, a cloud and three edges for about half a minute")
	}
	binDir := buildPrograms(t)
	url := pgtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := ledger.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	// The stores the simulator's edges sell in (store ids are the edge
	// ids), in the default tenant the enrolled edges belong to.
	if _, err := pool.Exec(ctx, `INSERT INTO stores (tenant, id, name, time_zone, currency) VALUES
		('default', 'shop-1', 'Shop one', 'Europe/Berlin', 'EUR'),
		('default', 'shop-2', 'Shop two', 'America/New_York', 'EUR'),
		('default', 'shop-3', 'Shop three', 'Asia/Tokyo', 'USD')`); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	m := NewMain(stdout, stderr)
	err = m.ParseFlags([]string{"--dir", dir, "--bin-dir", binDir, "--database-url", url,
		"--stores", "3", "--devices", "4", "--rate", "6", "--duration", "7s", "--seed", "11",
		"--faults", "cut:shop-2@1s+3s", "--retransmit", "0.08", "--duplicate", "0.05", "--skewed", "0.5",
		"--late-tills", "1", "--late-days", "7", "--duplicate-txn", "0.05",
		"--drain-timeout", "90s", "--hold", "no", "--progress-every", "2s"})
	if err != nil {
		t.Fatal(err)
	}
	cloud := filepath.Join(binDir, "cloud")
	var checkOut, rebuildOut string
	var checkErr, rebuildErr error
	m.AfterVerdict = func(ctx context.Context, r *simulator.Report) {
		var b []byte
		b, checkErr = exec.CommandContext(ctx, cloud, "projections", "check", "--database-url", url).CombinedOutput()
		checkOut = string(b)
		b, rebuildErr = exec.CommandContext(ctx, cloud, "projections", "rebuild", "--database-url", url).CombinedOutput()
		rebuildOut = string(b)
	}
	runErr := m.Run(ctx)
	if cerr := m.Close(); cerr != nil {
		t.Errorf("close: %v", cerr)
	}
	t.Logf("stdout:\n%s", stdout.String())
	if runErr != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "logs", "cloud.log"))
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		t.Fatalf("run: %v\nstderr:\n%s\n--- tail of cloud.log:\n%s", runErr, stderr.String(), b)
	}
	if v := m.Report.Verdict; !v.OK {
		t.Fatalf("verdict failed: %v %v", v.Counts, v.Discrepancies)
	}
	if checkErr != nil || !strings.Contains(checkOut, "equal to the live rows") {
		t.Errorf("cloud projections check: %v\n%s", checkErr, checkOut)
	}
	if rebuildErr != nil || !strings.Contains(rebuildOut, "equal to the live rows") || !strings.Contains(rebuildOut, "swapped in") {
		t.Errorf("cloud projections rebuild: %v\n%s", rebuildErr, rebuildOut)
	}
	if m.Report.Traffic.Late == 0 {
		t.Errorf("the holding till sent nothing late")
	}

	// What the faults must have put into the reports.
	old := time.Now().UTC().AddDate(0, 0, -7).Format(time.DateOnly)
	count := func(what, sql string, args ...any) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return n
	}
	if n := count("late day", `SELECT count(*) FROM till_reconciliation WHERE store = 'shop-1' AND business_day = $1 AND status = 'match'`, old); n != 1 {
		t.Errorf("%d till days of shop-1 on %s that match their Z, want 1 (the held day)", n, old)
	}
	if n := count("duplicates", `SELECT count(*) FROM anomalies WHERE kind = 'duplicate_transaction' AND other_pos IS NOT NULL AND other_pos < pos`); n == 0 {
		t.Errorf("no duplicate transaction listed with both ledger positions")
	}
	if n := count("currencies", `SELECT count(DISTINCT currency) FROM sales_summary`); n != 2 {
		t.Errorf("%d currencies in the sales summary, want 2", n)
	}
	if n := count("voids", `SELECT coalesce(sum(voids_count), 0) + coalesce(sum(returns_count), 0) FROM sales_summary`); n == 0 {
		t.Errorf("no voids or returns in the sales summary")
	}
	if n := count("till days", `SELECT count(*) FROM till_reconciliation WHERE status <> 'match'`); n != 0 {
		t.Errorf("%d till days do not match their Z report after the drain", n)
	}
	if n := count("unknown", `SELECT count(*) FROM anomalies WHERE kind IN ('unknown_store', 'foreign_store', 'undecodable')`); n != 0 {
		t.Errorf("%d records of unknown or foreign stores or undecodable bodies", n)
	}
}
