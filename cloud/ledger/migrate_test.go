package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/protocol"
)

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	url := pgtest.New(t)
	conn := MustConn(t, url)

	if err := ledger.CheckSchema(ctx, conn); !errors.Is(err, ledger.ErrSchemaBehind) {
		t.Fatalf("CheckSchema on an empty database: %v, want ErrSchemaBehind", err)
	}

	// Several instances starting at once: the advisory lock lets one apply
	// the migrations and the others find nothing to do.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		c := MustConn(t, url)
		wg.Go(func() { errs[i] = ledger.Migrate(ctx, c) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate %d: %v", i, err)
		}
	}
	if err := ledger.Migrate(ctx, conn); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	if err := ledger.CheckSchema(ctx, conn); err != nil {
		t.Fatalf("CheckSchema: %v", err)
	}
	if n := count(t, conn, `SELECT count(*) FROM schema_migrations`); n != ledger.SchemaVersion() {
		t.Fatalf("schema_migrations has %d rows, want %d", n, ledger.SchemaVersion())
	}
	if mode, err := ledger.Partitioning(ctx, conn); err != nil || mode != ledger.PartitionNative {
		t.Fatalf("Partitioning = %q, %v; want native (no TimescaleDB here)", mode, err)
	}

	// A database migrated by a newer binary is refused, and left alone.
	next := ledger.SchemaVersion() + 1
	if _, err := conn.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')`, next); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("database schema is version %d, this binary knows up to %d: upgrade the binary",
		next, ledger.SchemaVersion())
	err := ledger.Migrate(ctx, conn)
	if !errors.Is(err, ledger.ErrSchemaTooNew) || err.Error() != want {
		t.Fatalf("Migrate on a newer schema: %v, want %q", err, want)
	}
	if err := ledger.CheckSchema(ctx, conn); !errors.Is(err, ledger.ErrSchemaTooNew) {
		t.Fatalf("CheckSchema on a newer schema: %v, want ErrSchemaTooNew", err)
	}
	if n := count(t, conn, `SELECT count(*) FROM schema_migrations`); n != next {
		t.Fatalf("refused Migrate changed schema_migrations: %d rows", n)
	}
}

func TestPartitions(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	now := time.Now()

	parts, err := ledger.Partitions(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ledger_default", ledger.PartitionName(now),
		ledger.PartitionName(now.AddDate(0, 1, 0)), ledger.PartitionName(now.AddDate(0, 2, 0))} {
		if !slices.Contains(parts, want) {
			t.Errorf("after Migrate, partitions %v lack %s", parts, want)
		}
	}
	created, err := ledger.EnsurePartitions(ctx, conn, now, ledger.DefaultPartitionsAhead)
	if err != nil || len(created) != 0 {
		t.Fatalf("EnsurePartitions again = %v, %v; want nothing to do", created, err)
	}

	// Commits land in the current month's partition.
	l := ledger.New(conn, ledger.Options{})
	e := MustAddEdge(t, l, "edge-p")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 5, now)
	MustCommit(t, l, inputs(segment(c, e, 1, 5))...)
	var part string
	if err := conn.QueryRow(ctx, `SELECT DISTINCT tableoid::regclass::text FROM ledger`).Scan(&part); err != nil {
		t.Fatal(err)
	}
	if part != ledger.PartitionName(now) {
		t.Errorf("committed rows are in %s, want %s", part, ledger.PartitionName(now))
	}

	// A row in a month with no partition lands in DEFAULT; making the
	// partition later moves it there.
	future := time.Date(now.Year()+3, 6, 15, 12, 0, 0, 0, time.UTC)
	if _, err := conn.Exec(ctx, `INSERT INTO ledger (edge, epoch, seq, pos, committed_at, device, event_id, type, class,
		device_ts, edge_time, hlc, hash, raw) SELECT edge, epoch, seq, pos, $1, device, event_id, type, class,
		device_ts, edge_time, hlc, hash, raw FROM ledger WHERE seq = 1`, future); err != nil {
		t.Fatal(err)
	}
	if n := count(t, conn, `SELECT count(*) FROM ledger_default`); n != 1 {
		t.Fatalf("ledger_default holds %d rows, want 1", n)
	}
	created, err = ledger.EnsurePartitions(ctx, conn, future, 0)
	if err != nil || !slices.Equal(created, []string{ledger.PartitionName(future)}) {
		t.Fatalf("EnsurePartitions(%v) = %v, %v", future, created, err)
	}
	if n := count(t, conn, `SELECT count(*) FROM ledger_default`); n != 0 {
		t.Errorf("ledger_default still holds %d rows", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM `+ledger.PartitionName(future)); n != 1 {
		t.Errorf("%s holds %d rows, want 1", ledger.PartitionName(future), n)
	}
	if n := count(t, conn, `SELECT count(*) FROM ledger`); n != 6 {
		t.Errorf("ledger holds %d rows, want 6", n)
	}
}
