package ledger_test

import (
	"context"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
)

// The partitioning decision, case by case, and what it tells the operator.
func TestDecidePartitioning(t *testing.T) {
	ready := ledger.TimescaleProbe{Available: true, Preload: "timescaledb", PreloadReadable: true,
		Superuser: false, CreateOnDB: true, Role: "outpost", Database: "outpost"}
	for name, tc := range map[string]struct {
		probe func(p *ledger.TimescaleProbe)
		mode  string
		says  []string
	}{
		"not installed": {func(p *ledger.TimescaleProbe) { p.Available = false }, ledger.PartitionNative,
			[]string{"not installed"}},
		"installed, not preloaded": {func(p *ledger.TimescaleProbe) { p.Preload = "pg_stat_statements" }, ledger.PartitionNative,
			[]string{"not preloaded", `shared_preload_libraries is "pg_stat_statements"`, "add timescaledb to shared_preload_libraries", "restart"}},
		"installed, preload not readable, not loaded": {func(p *ledger.TimescaleProbe) { p.Preload, p.PreloadReadable = "", false },
			ledger.PartitionNative, []string{"not preloaded", "role outpost may not read shared_preload_libraries"}},
		"preload not readable, but loaded": {func(p *ledger.TimescaleProbe) { p.Preload, p.PreloadReadable, p.Loaded = "", false, true },
			ledger.PartitionTimescaleDB, []string{"preloaded"}},
		"preloaded with a path and others": {func(p *ledger.TimescaleProbe) { p.Preload = `pg_stat_statements, '$libdir/timescaledb'` },
			ledger.PartitionTimescaleDB, []string{"may create it"}},
		"a toolkit is not timescaledb": {func(p *ledger.TimescaleProbe) { p.Preload = "timescaledb_toolkit" },
			ledger.PartitionNative, []string{"not preloaded"}},
		"no CREATE on the database": {func(p *ledger.TimescaleProbe) { p.CreateOnDB = false }, ledger.PartitionNative,
			[]string{"role outpost may not create extensions in database outpost", "GRANT CREATE ON DATABASE outpost TO outpost"}},
		"superuser without the grant": {func(p *ledger.TimescaleProbe) { p.CreateOnDB, p.Superuser = false, true },
			ledger.PartitionTimescaleDB, []string{"may create it"}},
		"already created": {func(p *ledger.TimescaleProbe) { p.Created, p.CreateOnDB = true, false }, ledger.PartitionTimescaleDB,
			[]string{"exists in database outpost"}},
	} {
		t.Run(name, func(t *testing.T) {
			p := ready
			tc.probe(&p)
			c := ledger.DecidePartitioning(p)
			if c.Mode != tc.mode {
				t.Fatalf("mode %s (%s), want %s", c.Mode, c.Reason, tc.mode)
			}
			for _, s := range tc.says {
				if !strings.Contains(c.Reason, s) {
					t.Errorf("reason %q does not say %q", c.Reason, s)
				}
			}
		})
	}
}

// The probe reads what it needs as any role may: a role with no CREATE on
// the database and no superuser is seen as such (and told so when
// TimescaleDB is there), and MigrateReport says why the ledger is native.
func TestProbeTimescale(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.New(t)
	admin := MustConn(t, dbURL)
	c, err := ledger.MigrateReport(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ledger.ProbeTimescale(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if want := ledger.DecidePartitioning(p); !p.Created && c.Mode != want.Mode {
		t.Fatalf("MigrateReport chose %s, the decision for %+v is %s", c, p, want)
	}
	if c.Reason == "" {
		t.Fatalf("MigrateReport gives no reason: %+v", c)
	}
	if !p.Superuser || !p.PreloadReadable {
		t.Fatalf("the test's superuser probed as %+v", p)
	}
	again, err := ledger.MigrateReport(ctx, admin) // nothing to apply: reports the existing ledger
	if err != nil || again.Mode != c.Mode || again.Reason == "" {
		t.Fatalf("MigrateReport again: %+v, %v (first %+v)", again, err, c)
	}

	// Roles are the cluster's, not the database's: one name per test database.
	var role string
	if err := admin.QueryRow(ctx, `SELECT 'probe_' || md5(current_database())`).Scan(&role); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `CREATE ROLE `+role+` LOGIN`); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	plain := MustConn(t, u.String())
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), `DROP ROLE IF EXISTS `+role) })
	p, err = ledger.ProbeTimescale(ctx, plain)
	if err != nil {
		t.Fatal(err)
	}
	if p.Superuser || p.CreateOnDB || p.Role != role {
		t.Fatalf("a plain role probed as %+v", p)
	}
	p.Available, p.Preload, p.PreloadReadable = true, "timescaledb", true
	if d := ledger.DecidePartitioning(p); d.Mode != ledger.PartitionNative || !strings.Contains(d.Reason, "may not create extensions") {
		t.Fatalf("with TimescaleDB there, a plain role would be told %s", d)
	}
}

// The keeper makes the partitions of the policy (the current month and
// the two after it) at once, and stops when its context ends.
func TestPartitionKeeper(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url := MustMigratedDB(t)
	conn, keeperConn := MustConn(t, url), MustConn(t, url)
	now := time.Date(2031, 5, 15, 12, 0, 0, 0, time.UTC)
	done := make(chan error, 1)
	go func() {
		done <- ledger.PartitionKeeper{DB: keeperConn, Now: func() time.Time { return now },
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.Run(ctx)
	}()
	want := []string{"ledger_p203105", "ledger_p203106", "ledger_p203107"}
	poll.Until(t, 30*time.Second, "the partitions of May to July 2031", func() bool {
		var n int
		_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname = ANY($1)`, want).Scan(&n)
		return n == len(want)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	have, err := ledger.Partitions(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(have, "ledger_p203108") {
		t.Fatalf("partitions %v go beyond the policy's two months ahead", have)
	}
}
