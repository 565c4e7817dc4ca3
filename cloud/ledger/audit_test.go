package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// auditFixture is a migrated database with two edges' streams committed
// through Commit: shop-1's 20 records in segments of 5 (checkpoints at 5,
// 10, 15, 20), and shop-2's 7 records, which every case leaves alone.
type auditFixture struct {
	conn   *pgx.Conn
	led    *ledger.Ledger
	s1, s2 protocol.Stream
	c1     *chain
	e1     *testEdge
}

func newAuditFixture(t *testing.T) *auditFixture {
	t.Helper()
	url := MustMigratedDB(t)
	f := &auditFixture{conn: MustConn(t, url)}
	f.led = ledger.New(f.conn, ledger.Options{})
	e1, e2 := MustAddEdge(t, f.led, "shop-1"), MustAddEdge(t, f.led, "shop-2")
	f.s1 = protocol.Stream{Edge: "shop-1", Epoch: newEpoch(t)}
	f.s2 = protocol.Stream{Edge: "shop-2", Epoch: newEpoch(t)}
	base := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	f.e1 = e1
	f.c1 = makeChain(t, f.s1, 20, base)
	c2 := makeChain(t, f.s2, 7, base)
	for _, in := range [][]ledger.Input{inputs(cut(f.c1, e1, 5)...), inputs(cut(c2, e2, 3)...)} {
		for _, o := range MustCommit(t, f.led, in...) {
			if o.Kind != ledger.KindCommitted {
				t.Fatalf("commit: %+v", o)
			}
		}
	}
	return f
}

func (f *auditFixture) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := f.conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// forged returns record seq of shop-1 with another event id, re-encoded:
// bytes that decode and are well formed, but not what the edge signed.
func (f *auditFixture) forged(t *testing.T, seq int) ([]byte, protocol.Hash) {
	t.Helper()
	r, err := protocol.DecodeRecord(f.c1.Raws[seq-1])
	if err != nil {
		t.Fatal(err)
	}
	r.ID = "forged"
	raw := r.Encode()
	return raw, r.LinkHash(raw)
}

func MustAudit(t *testing.T, l *ledger.Ledger, opts ledger.AuditOptions) ledger.AuditReport {
	t.Helper()
	rep, err := l.Audit(context.Background(), opts)
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	return rep
}

func TestAuditCleanLedger(t *testing.T) {
	f := newAuditFixture(t)
	rep := MustAudit(t, f.led, ledger.AuditOptions{})
	if !rep.OK() {
		t.Fatalf("faults on a clean ledger: %v", rep.Faults)
	}
	if len(rep.Streams) != 2 || rep.Records != 27 || rep.Checkpoints != 4+3 {
		t.Fatalf("checked %d streams, %d records, %d checkpoints; want 2, 27, 7", len(rep.Streams), rep.Records, rep.Checkpoints)
	}
	for _, s := range rep.Streams {
		if want := map[string]uint64{"shop-1": 20, "shop-2": 7}[s.Stream.Edge]; s.Verified != want {
			t.Errorf("stream %s verified up to %d, want %d", s.Stream, s.Verified, want)
		}
	}
	if rep := MustAudit(t, f.led, ledger.AuditOptions{Edge: "shop-2"}); len(rep.Streams) != 1 || rep.Streams[0].Stream != f.s2 {
		t.Fatalf("--edge shop-2 checked %+v", rep.Streams)
	}
}

func TestAuditFindsTampering(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, f *auditFixture)
		seq    uint64
		kind   ledger.AuditFaultKind
	}{
		{"altered bytes", func(t *testing.T, f *auditFixture) {
			raw, _ := f.forged(t, 7)
			f.exec(t, `UPDATE ledger SET raw = $3 WHERE edge = $1 AND epoch = $2 AND seq = 7`, f.s1.Edge, f.s1.Epoch[:], raw)
		}, 7, ledger.AuditAltered},
		{"altered bytes and their hash", func(t *testing.T, f *auditFixture) {
			raw, h := f.forged(t, 7)
			f.exec(t, `UPDATE ledger SET raw = $3, hash = $4 WHERE edge = $1 AND epoch = $2 AND seq = 7`, f.s1.Edge, f.s1.Epoch[:], raw, h[:])
		}, 7, ledger.AuditAltered},
		{"altered last record of a segment, with its hash", func(t *testing.T, f *auditFixture) {
			raw, h := f.forged(t, 10)
			f.exec(t, `UPDATE ledger SET raw = $3, hash = $4 WHERE edge = $1 AND epoch = $2 AND seq = 10`, f.s1.Edge, f.s1.Epoch[:], raw, h[:])
		}, 10, ledger.AuditAltered},
		{"bytes that do not decode", func(t *testing.T, f *auditFixture) {
			f.exec(t, `UPDATE ledger SET raw = '\x00ff'::bytea WHERE edge = $1 AND epoch = $2 AND seq = 3`, f.s1.Edge, f.s1.Epoch[:])
		}, 3, ledger.AuditAltered},
		{"altered column", func(t *testing.T, f *auditFixture) {
			f.exec(t, `UPDATE ledger SET type = 'sale.voided' WHERE edge = $1 AND epoch = $2 AND seq = 9`, f.s1.Edge, f.s1.Epoch[:])
		}, 9, ledger.AuditAltered},
		{"altered edge time", func(t *testing.T, f *auditFixture) {
			f.exec(t, `UPDATE ledger SET edge_time = edge_time + interval '1 day' WHERE edge = $1 AND epoch = $2 AND seq = 11`, f.s1.Edge, f.s1.Epoch[:])
		}, 11, ledger.AuditAltered},
		{"deleted row", func(t *testing.T, f *auditFixture) {
			f.exec(t, `DELETE FROM ledger WHERE edge = $1 AND epoch = $2 AND seq = 12`, f.s1.Edge, f.s1.Epoch[:])
		}, 12, ledger.AuditMissing},
		{"deleted row at a checkpoint", func(t *testing.T, f *auditFixture) {
			f.exec(t, `DELETE FROM ledger WHERE edge = $1 AND epoch = $2 AND seq = 15`, f.s1.Edge, f.s1.Epoch[:])
		}, 15, ledger.AuditMissing},
		{"deleted last rows and their checkpoint", func(t *testing.T, f *auditFixture) {
			f.exec(t, `DELETE FROM ledger WHERE edge = $1 AND epoch = $2 AND seq > 15`, f.s1.Edge, f.s1.Epoch[:])
			f.exec(t, `DELETE FROM checkpoints WHERE edge = $1 AND epoch = $2 AND seq > 15`, f.s1.Edge, f.s1.Epoch[:])
		}, 16, ledger.AuditMissing},
		{"swapped seqs", func(t *testing.T, f *auditFixture) {
			f.exec(t, `UPDATE ledger SET seq = CASE seq WHEN 3 THEN 4 ELSE 3 END
				WHERE edge = $1 AND epoch = $2 AND seq IN (3, 4)`, f.s1.Edge, f.s1.Epoch[:])
		}, 3, ledger.AuditOrder},
		{"swapped bytes", func(t *testing.T, f *auditFixture) {
			f.exec(t, `UPDATE ledger l SET raw = o.raw, hash = o.hash FROM ledger o
				WHERE l.edge = $1 AND l.epoch = $2 AND o.edge = l.edge AND o.epoch = l.epoch
				AND l.seq IN (8, 9) AND o.seq = 17 - l.seq`, f.s1.Edge, f.s1.Epoch[:])
		}, 8, ledger.AuditOrder},
		{"swapped commit order", func(t *testing.T, f *auditFixture) {
			f.exec(t, `UPDATE ledger l SET pos = o.pos FROM ledger o
				WHERE l.edge = $1 AND l.epoch = $2 AND o.edge = l.edge AND o.epoch = l.epoch
				AND l.seq IN (13, 14) AND o.seq = 27 - l.seq`, f.s1.Edge, f.s1.Epoch[:])
		}, 14, ledger.AuditOrder},
		{"row stored twice", func(t *testing.T, f *auditFixture) {
			f.exec(t, `INSERT INTO ledger SELECT * FROM ledger WHERE edge = $1 AND epoch = $2 AND seq = 6`, f.s1.Edge, f.s1.Epoch[:])
		}, 6, ledger.AuditDuplicate},
		{"checkpoint signature altered", func(t *testing.T, f *auditFixture) {
			f.exec(t, `UPDATE checkpoints SET signature = set_byte(signature, length(signature) - 1, get_byte(signature, length(signature) - 1) # 1)
				WHERE edge = $1 AND epoch = $2 AND seq = 10`, f.s1.Edge, f.s1.Epoch[:])
		}, 10, ledger.AuditCheckpoint},
		{"checkpoint of another stream", func(t *testing.T, f *auditFixture) {
			f.exec(t, `UPDATE checkpoints c SET signature = o.signature FROM checkpoints o
				WHERE c.edge = $1 AND c.epoch = $2 AND c.seq = 5 AND o.edge = $3 AND o.seq = 3`, f.s1.Edge, f.s1.Epoch[:], f.s2.Edge)
		}, 5, ledger.AuditCheckpoint},
		{"key revoked before the commit", func(t *testing.T, f *auditFixture) {
			f.exec(t, `UPDATE edge_keys SET status = 'revoked', revoked_at = now() - interval '1 hour' WHERE edge = $1`, f.s1.Edge)
		}, 5, ledger.AuditCheckpoint},
		{"key registered after the commit", func(t *testing.T, f *auditFixture) {
			f.exec(t, `UPDATE edge_keys SET created_at = now() + interval '1 hour' WHERE edge = $1`, f.s1.Edge)
		}, 5, ledger.AuditCheckpoint},
		{"record no checkpoint covers", func(t *testing.T, f *auditFixture) {
			f.exec(t, `DELETE FROM checkpoints WHERE edge = $1 AND epoch = $2 AND seq = 20`, f.s1.Edge, f.s1.Epoch[:])
		}, 16, ledger.AuditUncovered},
		{"watermark moved", func(t *testing.T, f *auditFixture) {
			f.exec(t, `UPDATE streams SET hwm = 18 WHERE edge = $1 AND epoch = $2`, f.s1.Edge, f.s1.Epoch[:])
		}, 19, ledger.AuditWatermark},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newAuditFixture(t)
			tc.tamper(t, f)
			rep := MustAudit(t, f.led, ledger.AuditOptions{})
			if len(rep.Faults) != 1 {
				t.Fatalf("faults: %v; want one, in stream %s", rep.Faults, f.s1)
			}
			got := rep.Faults[0]
			if got.Stream != f.s1 || got.Seq != tc.seq || got.Kind != tc.kind {
				t.Fatalf("fault %q; want stream %s seq %d %q", got, f.s1, tc.seq, tc.kind)
			}
			t.Log(got)
		})
	}
}

// An audit that starts at a checkpoint (where the last one stopped, or
// before --since) trusts what is below it and checks what is above.
func TestAuditFrom(t *testing.T) {
	f := newAuditFixture(t)
	raw, h := f.forged(t, 3)
	f.exec(t, `UPDATE ledger SET raw = $3, hash = $4 WHERE edge = $1 AND epoch = $2 AND seq = 3`, f.s1.Edge, f.s1.Epoch[:], raw, h[:])

	rep := MustAudit(t, f.led, ledger.AuditOptions{From: map[protocol.Stream]uint64{f.s1: 10}})
	if !rep.OK() || rep.Streams[0].From != 10 || rep.Records != 10+7 {
		t.Fatalf("from seq 10: faults %v, streams %+v, %d records; want none, from 10, 17 records", rep.Faults, rep.Streams, rep.Records)
	}
	if rep := MustAudit(t, f.led, ledger.AuditOptions{Since: time.Now().Add(time.Hour)}); !rep.OK() || rep.Records != 0 {
		t.Fatalf("since the future: faults %v, %d records; want none, 0 records", rep.Faults, rep.Records)
	}
	if rep := MustAudit(t, f.led, ledger.AuditOptions{Since: time.Now().Add(-time.Hour)}); len(rep.Faults) != 1 || rep.Faults[0].Seq != 3 {
		t.Fatalf("since an hour ago: faults %v; want seq 3", rep.Faults)
	}

	f.exec(t, `DELETE FROM ledger WHERE edge = $1 AND epoch = $2 AND seq = 12`, f.s1.Edge, f.s1.Epoch[:])
	rep = MustAudit(t, f.led, ledger.AuditOptions{From: map[protocol.Stream]uint64{f.s1: 10}})
	if len(rep.Faults) != 1 || rep.Faults[0].Seq != 12 || rep.Faults[0].Kind != ledger.AuditMissing {
		t.Fatalf("from seq 10 with seq 12 deleted: faults %v", rep.Faults)
	}
}

// The incremental audit starts each stream where the last one stopped,
// records how far it verified, and keeps finding a fault on every run.
func TestAuditIncremental(t *testing.T) {
	ctx := context.Background()
	f := newAuditFixture(t)
	rep, err := f.led.AuditIncremental(ctx)
	if err != nil || !rep.OK() || rep.Records != 27 {
		t.Fatalf("first run: %v, faults %v, %d records; want none and 27", err, rep.Faults, rep.Records)
	}
	if n := count(t, f.conn, `SELECT count(*) FROM audit_checkpoints WHERE (edge, seq) IN (('shop-1', 20), ('shop-2', 7))`); n != 2 {
		t.Fatalf("audit_checkpoints: %d of the 2 rows at seq 20 and 7", n)
	}

	extend(t, f.c1, 5, time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), "")
	MustCommit(t, f.led, inputs(segment(f.c1, f.e1, 21, 25))...)
	rep, err = f.led.AuditIncremental(ctx)
	if err != nil || !rep.OK() || rep.Records != 5 {
		t.Fatalf("second run: %v, faults %v, %d records; want none and the 5 new", err, rep.Faults, rep.Records)
	}

	extend(t, f.c1, 5, time.Date(2026, 3, 3, 9, 0, 0, 0, time.UTC), "")
	MustCommit(t, f.led, inputs(segment(f.c1, f.e1, 26, 30))...)
	f.exec(t, `DELETE FROM ledger WHERE edge = $1 AND epoch = $2 AND seq = 28`, f.s1.Edge, f.s1.Epoch[:])
	a := &ledger.Auditor{Ledger: f.led}
	for run := 1; run <= 2; run++ {
		a.RunOnce(ctx, nil)
		if a.Faults() != 1 || a.LastSuccess().IsZero() {
			t.Fatalf("auditor run %d: %d faults, last success %v; want 1 and a time", run, a.Faults(), a.LastSuccess())
		}
	}
	if n := count(t, f.conn, `SELECT seq FROM audit_checkpoints WHERE edge = 'shop-1'`); n != 25 {
		t.Fatalf("shop-1 audited up to %d, want 25: a stream with a fault advances only to the last good checkpoint before it", n)
	}
}

// A stream longer than a cursor batch is read across batches: clean, then
// with a row gone in a later batch.
func TestAuditLongStream(t *testing.T) {
	f := newAuditFixture(t)
	extend(t, f.c1, 680, time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), "")
	var segs []*protocol.Segment
	for first := uint64(21); first <= 700; first += 40 {
		segs = append(segs, segment(f.c1, f.e1, first, first+39))
	}
	MustCommit(t, f.led, inputs(segs...)...)
	rep := MustAudit(t, f.led, ledger.AuditOptions{Edge: "shop-1"})
	if !rep.OK() || rep.Records != 700 || rep.Checkpoints != 4+17 {
		t.Fatalf("faults %v, %d records, %d checkpoints; want none, 700, 21", rep.Faults, rep.Records, rep.Checkpoints)
	}
	f.exec(t, `DELETE FROM ledger WHERE edge = $1 AND epoch = $2 AND seq = 613`, f.s1.Edge, f.s1.Epoch[:])
	rep = MustAudit(t, f.led, ledger.AuditOptions{Edge: "shop-1"})
	if len(rep.Faults) != 1 || rep.Faults[0].Seq != 613 || rep.Faults[0].Kind != ledger.AuditMissing {
		t.Fatalf("seq 613 deleted: faults %v", rep.Faults)
	}
}

// Checkpoints are checked against the keys valid when they were committed:
// those signed by a key that was rotated out and revoked later still
// verify, and so do those of the new key.
func TestAuditKeyRotation(t *testing.T) {
	ctx := context.Background()
	f := newAuditFixture(t)
	old := f.e1.Signer.KeyID()
	next := newTestEdge(t, "shop-1")
	if _, err := f.led.RotateKey(ctx, "shop-1", next.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	extend(t, f.c1, 5, time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), "")
	if o := MustCommit(t, f.led, inputs(segment(f.c1, next, 21, 25))...); o[0].Kind != ledger.KindCommitted {
		t.Fatalf("commit with the new key: %+v", o[0])
	}
	if err := f.led.RevokeKey(ctx, "shop-1", old); err != nil {
		t.Fatal(err)
	}
	if rep := MustAudit(t, f.led, ledger.AuditOptions{}); !rep.OK() || rep.Checkpoints != 5+3 {
		t.Fatalf("after rotation and revocation: faults %v, %d checkpoints; want none and 8", rep.Faults, rep.Checkpoints)
	}
}
