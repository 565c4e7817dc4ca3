package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/protocol"
)

// pgTool finds a PostgreSQL client program (pg_dump, pg_restore) on PATH or
// in /usr/lib/postgresql/*/bin, the newest first, as pgtest finds the
// server.
func pgTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	sort.Strings(m)
	if len(m) == 0 {
		t.Skipf("%s is not installed (Debian package postgresql-client): the restore test needs it", name)
	}
	return m[len(m)-1]
}

// restoreSite is a site whose database can be dumped and restored as an
// operator would: pg_dump -Fc, then pg_restore --clean into the same
// database while the cloud is stopped.
type restoreSite struct {
	*site
	dump, restore string
}

func newRestoreSite(t *testing.T, o siteOptions) *restoreSite {
	s := &restoreSite{dump: pgTool(t, "pg_dump"), restore: pgTool(t, "pg_restore")}
	s.site = newSiteWith(t, o)
	return s
}

func (s *restoreSite) backup() string {
	s.t.Helper()
	f := filepath.Join(s.dir, "backup.dump")
	run(s.t, s.dump, "--format=custom", "--file", f, s.dbURL)
	return f
}

// restoreTo stops the cloud, restores the backup over the database, and
// starts the cloud again.
func (s *restoreSite) restoreTo(backup string) {
	s.t.Helper()
	s.cloud.stop()
	run(s.t, s.restore, "--clean", "--if-exists", "--no-owner", "--single-transaction", "--dbname", s.dbURL, backup)
	s.startCloud()
}

func (s *restoreSite) query(sql string, args ...any) int64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.dbURL)
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int64
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestCloudRestoredToOlderPoint: the cloud's database is restored from a
// backup taken before its last commits, so every edge's acknowledged
// watermark is ahead of the database. An edge that still holds those
// records (--retain) must be asked to resend them and must do so: the
// ledger gets them back, in the same stream, nothing is quarantined, and
// the edge keeps sending new events.
func TestCloudRestoredToOlderPoint(t *testing.T) {
	for _, tr := range []struct {
		name string
		o    siteOptions
	}{
		{"mqtt", siteOptions{}},
		{"nats", siteOptions{nats: natsEmbedded}}, // the JetStream stream is not restored: it holds nothing committed
	} {
		t.Run(tr.name, func(t *testing.T) {
			tr.o.edgeArgs = []string{"--retain", "24h"}
			cloudRestoredToOlderPoint(t, tr.o)
		})
	}
}

func cloudRestoredToOlderPoint(t *testing.T, so siteOptions) {
	s := newRestoreSite(t, so)
	e := s.addEdge("e1", "till-1")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	o := newOracle()
	if err := httpDevice(ctx, e, "till-1", 40, o, 0); err != nil {
		t.Fatal(err)
	}
	s.drained(60 * time.Second)
	backup := s.backup()
	if err := httpDevice(ctx, e, "till-1", 30, o, 40); err != nil {
		t.Fatal(err)
	}
	s.drained(60 * time.Second)
	if n := s.query(`SELECT count(*) FROM ledger WHERE edge = 'e1'`); n != 70 {
		t.Fatalf("%d rows before the restore, want 70", n)
	}

	s.restoreTo(backup)
	if n := s.query(`SELECT count(*) FROM ledger WHERE edge = 'e1'`); n != 40 {
		t.Fatalf("%d rows after the restore, want the backup's 40", n)
	}
	if err := httpDevice(ctx, e, "till-1", 10, o, 70); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ledger has all 80 records of the edge's one stream again", 90*time.Second, func() bool {
		return s.query(`SELECT count(*) FROM ledger WHERE edge = 'e1'`) == 80 &&
			s.query(`SELECT max(hwm) FROM streams WHERE edge = 'e1'`) == 80
	}, s.cloud, e.proc)
	if n := s.query(`SELECT count(*) FROM streams WHERE edge = 'e1'`); n != 1 {
		t.Errorf("%d streams of e1, want the one (the edge resent; it did not start a new epoch)", n)
	}
	if n := s.query(`SELECT count(*) FROM quarantine`); n != 0 {
		t.Errorf("%d segments quarantined, want none", n)
	}
	if n := s.query(`SELECT count(DISTINCT seq) FROM ledger WHERE edge = 'e1' AND seq BETWEEN 1 AND 80`); n != 80 {
		t.Errorf("%d distinct seqs 1..80, want 80", n)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "e1")); err != nil {
		t.Fatal(err)
	}
	stuck, _ := filepath.Glob(filepath.Join(s.dir, "e1", "outbox.stuck-*.db"))
	if len(stuck) != 0 {
		t.Errorf("stuck outbox files %v, want none: the edge could resend everything", stuck)
	}
}

// TestCloudRestoredPastRetention: as TestCloudRestoredToOlderPoint, but
// the edge keeps nothing after a receipt (no --retain), so what the
// restore lost is gone from the edge too. The edge must not hang or be
// quarantined: it leaves the stream for a new epoch whose first record
// (edge.epoch_restarted) names the lost range, keeps what it still held
// for an operator, and new events flow in the new stream.
func TestCloudRestoredPastRetention(t *testing.T) {
	s := newRestoreSite(t, siteOptions{})
	e := s.addEdge("e1", "till-1")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	o := newOracle()
	if err := httpDevice(ctx, e, "till-1", 40, o, 0); err != nil {
		t.Fatal(err)
	}
	s.drained(60 * time.Second)
	backup := s.backup()
	if err := httpDevice(ctx, e, "till-1", 30, o, 40); err != nil {
		t.Fatal(err)
	}
	s.drained(60 * time.Second)
	s.restoreTo(backup)

	// An idle edge cannot tell yet (the hello's receipt below its
	// watermark could be a stale one); the first new events it sends are
	// nacked for the gap, bound to their segment, and that is certain.
	if err := httpDevice(ctx, e, "till-1", 10, o, 70); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the edge in a second stream", 90*time.Second, func() bool {
		return s.query(`SELECT count(*) FROM streams WHERE edge = 'e1'`) == 2
	}, s.cloud, e.proc)
	// The new stream: the epoch_restarted record and the 10 new events,
	// entered again from the old stream's file.
	waitFor(t, "the new stream committed", 90*time.Second, func() bool {
		return s.query(`SELECT count(*) FROM ledger l JOIN streams s ON s.edge = l.edge AND s.epoch = l.epoch
			WHERE l.edge = 'e1' AND s.prev_epoch IS NOT NULL`) == 11
	}, s.cloud, e.proc)
	if n := s.query(`SELECT count(*) FROM quarantine`); n != 0 {
		t.Errorf("%d segments quarantined, want none", n)
	}
	if n := s.query(`SELECT hwm FROM streams WHERE edge = 'e1' AND next_epoch IS NOT NULL`); n != 40 {
		t.Errorf("the old stream ends at %d, want the backup's 40", n)
	}

	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	c, err := pgx.Connect(ctx2, s.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx2)
	var raw []byte
	if err := c.QueryRow(ctx2, `SELECT l.raw FROM ledger l JOIN streams s ON s.edge = l.edge AND s.epoch = l.epoch
		WHERE l.edge = 'e1' AND s.prev_epoch IS NOT NULL AND l.seq = 1`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	rec, err := protocol.DecodeRecord(raw)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := cbor.Unmarshal(rec.Body, &m); err != nil {
		t.Fatal(err)
	}
	if rec.Type != "edge.epoch_restarted" || fmt.Sprint(m["lost_from"]) != "41" || fmt.Sprint(m["lost_to"]) != "70" || fmt.Sprint(m["cloud_hwm"]) != "40" {
		t.Fatalf("first record of the new stream: %s %v; want edge.epoch_restarted naming lost 41..70 and cloud_hwm 40", rec.Type, m)
	}
	if fmt.Sprint(m["reentered_from"]) != "71" || fmt.Sprint(m["reentered_to"]) != "80" {
		t.Errorf("epoch_restarted %v: want reentered 71..80", m)
	}
	var ids []string
	rows, err := c.Query(ctx2, `SELECT l.event_id FROM ledger l JOIN streams s ON s.edge = l.edge AND s.epoch = l.epoch
		WHERE l.edge = 'e1' AND s.prev_epoch IS NOT NULL AND l.seq > 1 ORDER BY l.seq`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 10 || ids[0] != "till-1-00070" || ids[9] != "till-1-00079" {
		t.Errorf("the new stream holds %v, want till-1-00070..79 entered again", ids)
	}
	stuck, _ := filepath.Glob(filepath.Join(s.dir, "e1", "outbox.stuck-*.db"))
	if len(stuck) != 1 {
		t.Errorf("stuck outbox files %v, want the old stream's one", stuck)
	}
}
