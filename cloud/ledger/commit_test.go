package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ingest"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/protocol"
)

func TestCommitInOrder(t *testing.T) {
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	l := ledger.New(conn, ledger.Options{})
	e := MustAddEdge(t, l, "edge-1")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 30, time.Now())
	segs := cut(c, e, 10)

	out := MustCommit(t, l, inputs(segs[0])...)
	if o := out[0]; o.Kind != ledger.KindCommitted || o.HWM != 10 || o.Head != c.Links[9] || o.Records != 10 || o.CommittedAt.IsZero() {
		t.Fatalf("first segment: %+v", o)
	}
	// Two segments of one stream in one batch, given out of order.
	out = MustCommit(t, l, inputs(segs[2], segs[1])...)
	if out[0].Kind != ledger.KindCommitted || out[0].HWM != 30 || out[1].Kind != ledger.KindCommitted || out[1].HWM != 20 {
		t.Fatalf("segments 3 and 2: %+v", out)
	}
	// All of it again, and an overlapping cut: duplicates, with the stored receipt.
	w, err := l.Receipt(context.Background(), c.Stream)
	if err != nil || w.HWM != 30 || w.Head != c.Links[29] {
		t.Fatalf("Receipt = %+v, %v", w, err)
	}
	out = MustCommit(t, l, inputs(segs[0], segment(c, e, 5, 25))...)
	for i, o := range out {
		if o.Kind != ledger.KindDuplicate || o.Watermark != w {
			t.Errorf("duplicate %d: %+v, want receipt %+v", i, o, w)
		}
	}
	// A segment that overlaps the watermark adds only what is new.
	extend(t, c, 10, time.Now(), "")
	out = MustCommit(t, l, inputs(segment(c, e, 21, 40))...)
	if o := out[0]; o.Kind != ledger.KindCommitted || o.Records != 10 || o.HWM != 40 {
		t.Fatalf("overlapping segment: %+v", o)
	}
	seqs, raws := storedRows(t, conn, c.Stream)
	checkLedger(t, c, seqs, raws)
	if st := l.Stats(); st.Records != 40 || st.Duplicates != 2 || st.Quarantined != 0 {
		t.Errorf("stats %+v", st)
	}
	if n := count(t, conn, `SELECT count(*) FROM checkpoints`); n != 4 {
		t.Errorf("%d checkpoints stored, want 4", n)
	}
}

// checkLedger checks that the stored rows are exactly c's records, in seq
// order (and so pos order follows seq order).
func checkLedger(t *testing.T, c *chain, seqs []uint64, raws [][]byte) {
	t.Helper()
	if len(seqs) != len(c.Raws) {
		t.Fatalf("stream %s: %d rows stored, want %d", c.Stream, len(seqs), len(c.Raws))
	}
	for i := range seqs {
		if seqs[i] != uint64(i+1) || !bytes.Equal(raws[i], c.Raws[i]) {
			t.Fatalf("stream %s: row %d in pos order is seq %d (bytes equal: %v), want seq %d",
				c.Stream, i, seqs[i], bytes.Equal(raws[i], c.Raws[i]), i+1)
		}
	}
}

// The same segments, cut two ways, delivered three times in shuffled
// order to three concurrent committers: each record lands exactly once,
// in order.
func TestCommitConcurrentRedelivery(t *testing.T) {
	url := MustMigratedDB(t)
	admin := MustLedger(t, url, ledger.Options{})
	var chains []*chain
	var all []*protocol.Segment
	for _, id := range []string{"edge-a", "edge-b"} {
		e := MustAddEdge(t, admin, id)
		for range 2 {
			c := makeChain(t, protocol.Stream{Edge: id, Epoch: newEpoch(t)}, 120, time.Now())
			chains = append(chains, c)
			all = append(all, cut(c, e, 10)...)
			all = append(all, cut(c, e, 7)...) // overlaps the cut by 10
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for w := range 3 {
		l := MustLedger(t, url, ledger.Options{})
		queue := slices.Clone(all)
		rng := rand.New(rand.NewPCG(uint64(w), 42))
		rng.Shuffle(len(queue), func(i, j int) { queue[i], queue[j] = queue[j], queue[i] })
		wg.Go(func() {
			for len(queue) > 0 {
				n := min(len(queue), 1+rng.IntN(6))
				batch := queue[:n]
				queue = queue[n:]
				out, err := l.Commit(ctx, inputs(batch...))
				if err != nil {
					errs <- err
					return
				}
				for i, o := range out {
					switch o.Kind {
					case ledger.KindGap: // an earlier segment is not in yet: try again later
						queue = append(queue, batch[i])
					case ledger.KindQuarantined:
						errs <- errors.New("quarantined: " + o.Reason)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	conn := MustConn(t, url)
	for _, c := range chains {
		seqs, raws := storedRows(t, conn, c.Stream)
		checkLedger(t, c, seqs, raws)
		w, err := admin.Receipt(ctx, c.Stream)
		if err != nil || w.HWM != 120 || w.Head != c.Links[119] {
			t.Errorf("stream %s: receipt %+v, %v", c.Stream, w, err)
		}
	}
	if n := count(t, conn, `SELECT count(*) FROM quarantine`); n != 0 {
		t.Errorf("%d quarantine rows", n)
	}
	// pos is commit order, across streams too: no two rows share one.
	if n := count(t, conn, `SELECT count(DISTINCT pos) FROM ledger`); n != 4*120 {
		t.Errorf("%d distinct pos values, want %d", n, 4*120)
	}
}

func TestCommitRefusesForgeries(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	l := ledger.New(conn, ledger.Options{})
	other := MustAddEdge(t, l, "other")

	type setup struct {
		e *testEdge
		c *chain
	}
	newStream := func(t *testing.T, id string) setup {
		e := MustAddEdge(t, l, id)
		return setup{e, makeChain(t, protocol.Stream{Edge: id, Epoch: newEpoch(t)}, 20, time.Now())}
	}
	cases := []struct {
		name  string
		input func(t *testing.T, s setup) ledger.Input
		code  protocol.NackCode
	}{
		{"flipped byte in a record", func(t *testing.T, s setup) ledger.Input {
			seg := segment(s.c, s.e, 1, 10)
			r := bytes.Clone(seg.Records[4])
			r[len(r)-2] ^= 0x01
			seg.Records[4] = r
			return inputs(seg)[0]
		}, protocol.NackChain},
		{"checkpoint signed by another edge's key", func(t *testing.T, s setup) ledger.Input {
			return inputs(segment(s.c, other, 1, 10))[0]
		}, protocol.NackUnknown},
		{"valid segment on another edge's topic", func(t *testing.T, s setup) ledger.Input {
			return ledger.Input{TopicEdge: other.ID, Segment: segment(s.c, s.e, 1, 10)}
		}, protocol.NackSignature},
		{"revoked key", func(t *testing.T, s setup) ledger.Input {
			newKey := newTestEdge(t, s.e.ID)
			if _, err := l.RotateKey(ctx, s.e.ID, newKey.Signer.Public()); err != nil {
				t.Fatal(err)
			}
			if err := l.RevokeKey(ctx, s.e.ID, s.e.Signer.KeyID()); err != nil {
				t.Fatal(err)
			}
			return inputs(segment(s.c, s.e, 1, 10))[0]
		}, protocol.NackRevoked},
		{"revoked edge", func(t *testing.T, s setup) ledger.Input {
			if err := l.RevokeEdge(ctx, s.e.ID); err != nil {
				t.Fatal(err)
			}
			return inputs(segment(s.c, s.e, 1, 10))[0]
		}, protocol.NackRevoked},
		{"unregistered edge", func(t *testing.T, s setup) ledger.Input {
			stranger := newTestEdge(t, "stranger")
			c := makeChain(t, protocol.Stream{Edge: stranger.ID, Epoch: newEpoch(t)}, 3, time.Now())
			return inputs(segment(c, stranger, 1, 3))[0]
		}, protocol.NackUnknown},
		{"checkpoint for another seq", func(t *testing.T, s setup) ledger.Input {
			seg := segment(s.c, s.e, 1, 10)
			seg.Checkpoint = segment(s.c, s.e, 1, 9).Checkpoint
			return inputs(seg)[0]
		}, protocol.NackChain},
		{"records' seqs do not match first..last", func(t *testing.T, s setup) ledger.Input {
			seg := segment(s.c, s.e, 2, 10)
			seg.First, seg.Last = 1, 9
			return inputs(seg)[0]
		}, protocol.NackChain},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(t, "edge-"+string(rune('a'+i)))
			in := tc.input(t, s)
			before := count(t, conn, `SELECT count(*) FROM quarantine`)
			out := MustCommit(t, l, in)
			o := out[0]
			if o.Kind != ledger.KindQuarantined || o.Code != tc.code || o.QuarantineID == 0 {
				t.Fatalf("outcome %+v, want quarantined with code %v", o, tc.code)
			}
			if n := count(t, conn, `SELECT count(*) FROM ledger`); n != 0 {
				t.Fatalf("%d rows committed", n)
			}
			if n := count(t, conn, `SELECT count(*) FROM quarantine`); n != before+1 {
				t.Fatalf("quarantine rows %d, want %d", n, before+1)
			}
			q, err := l.Quarantine(ctx, o.QuarantineID-1, 1)
			if err != nil || len(q) != 1 || q[0].Code != tc.code.String() || q[0].Edge != in.TopicEdge || len(q[0].Payload) == 0 {
				t.Fatalf("quarantine entry %+v, %v", q, err)
			}
		})
	}
	if st := l.Stats(); st.Quarantined != uint64(len(cases)) || st.Committed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestCommitGapAndRecovery(t *testing.T) {
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	l := ledger.New(conn, ledger.Options{})
	e := MustAddEdge(t, l, "edge-g")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 30, time.Now())
	segs := cut(c, e, 10)

	// A gap is a nack with the watermark, not a quarantine.
	out := MustCommit(t, l, inputs(segs[1])...)
	if o := out[0]; o.Kind != ledger.KindGap || o.Code != protocol.NackGap || o.HWM != 0 || o.QuarantineID != 0 {
		t.Fatalf("gap: %+v", o)
	}

	// A forged segment next to valid ones: the valid ones commit, the
	// forged one is quarantined, and the stream goes on when the real
	// records arrive.
	forged := segment(c, e, 11, 20)
	forged.Records[3] = bytes.Clone(forged.Records[3])
	forged.Records[3][len(forged.Records[3])-2] ^= 0x40
	out = MustCommit(t, l, inputs(segs[0], forged, segs[2])...)
	if out[0].Kind != ledger.KindCommitted || out[1].Kind != ledger.KindQuarantined || out[2].Kind != ledger.KindGap {
		t.Fatalf("mixed batch: %+v", out)
	}
	if out[2].HWM != 10 {
		t.Errorf("gap after the quarantined segment: hwm %d, want 10", out[2].HWM)
	}
	out = MustCommit(t, l, inputs(segs[2], segs[1])...)
	if out[0].Kind != ledger.KindCommitted || out[1].Kind != ledger.KindCommitted {
		t.Fatalf("recovery: %+v", out)
	}

	// A fork: records the edge signed that differ from what is committed,
	// as a duplicate and as a continuation.
	fork := &chain{Stream: c.Stream}
	extend(t, fork, 40, time.Now(), "fork")
	for _, seg := range []*protocol.Segment{segment(fork, e, 1, 10), segment(fork, e, 25, 30), segment(fork, e, 31, 40)} {
		out = MustCommit(t, l, inputs(seg)...)
		if o := out[0]; o.Kind != ledger.KindQuarantined || o.Code != protocol.NackChain {
			t.Errorf("fork %d-%d: %+v", seg.First, seg.Last, o)
		}
	}
	seqs, raws := storedRows(t, conn, c.Stream)
	checkLedger(t, c, seqs, raws)
}

func TestNewEpoch(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	l := MustLedger(t, url, ledger.Options{})
	e := MustAddEdge(t, l, "edge-w")
	old := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 35, time.Now())
	MustCommit(t, l, inputs(segment(old, e, 1, 10), segment(old, e, 11, 20), segment(old, e, 21, 30))...)
	if _, err := l.NoteHello(ctx, protocol.Hello{V: 2, Edge: e.ID, Epoch: old.Stream.Epoch, Seq: 35, Checkpoint: old.SignedBy(e.Signer).Checkpoint(35)}); err != nil {
		t.Fatal(err)
	}

	// The disk is wiped: a new epoch starts at seq 1.
	cur := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 10, time.Now())
	out := MustCommit(t, l, inputs(segment(cur, e, 1, 10))...)
	if out[0].Kind != ledger.KindCommitted {
		t.Fatalf("new epoch: %+v", out[0])
	}
	ss, err := l.Streams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byEpoch := map[protocol.Epoch]ledger.StreamInfo{}
	for _, s := range ss {
		byEpoch[s.Stream.Epoch] = s
	}
	o, n := byEpoch[old.Stream.Epoch], byEpoch[cur.Stream.Epoch]
	if o.EndedAt.IsZero() || o.EndedAtSeq != 30 || o.NextEpoch == nil || *o.NextEpoch != cur.Stream.Epoch {
		t.Errorf("old epoch: %+v", o)
	}
	if o.Lag != 5 || o.EdgeSeq != 35 {
		t.Errorf("old epoch: lag %d (edge seq %d), want 5 records never uploaded", o.Lag, o.EdgeSeq)
	}
	if !n.EndedAt.IsZero() || n.PrevEpoch == nil || *n.PrevEpoch != old.Stream.Epoch || n.HWM != 10 {
		t.Errorf("new epoch: %+v", n)
	}
}

// recordingProjection counts what it is given, writing through the commit
// transaction, and fails when told to.
type recordingProjection struct {
	mu   sync.Mutex
	fail error
	seen int
}

func (p *recordingProjection) Apply(ctx context.Context, tx pgx.Tx, recs []ledger.Committed) error {
	for i, r := range recs {
		if i > 0 && r.Pos <= recs[i-1].Pos {
			return errors.New("records not in pos order")
		}
		if r.CommittedAt.IsZero() || r.Record.Seq == 0 || len(r.Raw) == 0 || r.Hash != r.Record.LinkHash(r.Raw) {
			return errors.New("incomplete record")
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO proj (n) VALUES ($1)`, len(recs)); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen += len(recs)
	return p.fail
}

func TestProjectionRunsInTheCommit(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	if _, err := conn.Exec(ctx, `CREATE TABLE proj (n int)`); err != nil {
		t.Fatal(err)
	}
	p := &recordingProjection{fail: errors.New("projection says no")}
	l := ledger.New(MustConn(t, url), ledger.Options{Projections: []ledger.Projection{p}})
	e := MustAddEdge(t, l, "edge-j")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 20, time.Now())
	forged := segment(c, other(t, l), 11, 20)

	// A failing projection rolls the whole commit back; the forged input
	// of the same batch is quarantined all the same.
	out, err := l.Commit(ctx, []ledger.Input{inputs(segment(c, e, 1, 10))[0], {TopicEdge: e.ID, Segment: forged}})
	if err == nil || !errors.Is(err, p.fail) {
		t.Fatalf("commit with a failing projection: %v", err)
	}
	if out[1].Kind != ledger.KindQuarantined || out[1].QuarantineID == 0 {
		t.Errorf("forged input: %+v", out[1])
	}
	if n := count(t, conn, `SELECT count(*) FROM ledger`) + count(t, conn, `SELECT count(*) FROM proj`); n != 0 {
		t.Fatalf("rolled-back commit left %d rows", n)
	}
	if w, _ := l.Receipt(ctx, c.Stream); w.HWM != 0 {
		t.Fatalf("rolled-back commit moved hwm to %d", w.HWM)
	}
	if n := count(t, conn, `SELECT count(*) FROM quarantine`); n != 1 {
		t.Fatalf("%d quarantine rows, want 1", n)
	}

	p.fail = nil
	MustCommit(t, l, inputs(cut(c, e, 10)...)...)
	if n := count(t, conn, `SELECT coalesce(sum(n), 0) FROM proj`); n != 20 {
		t.Errorf("projection wrote %d, want 20", n)
	}
}

func other(t *testing.T, l *ledger.Ledger) *testEdge { return MustAddEdge(t, l, "edge-other") }

// One instance caches keys; another rotates and revokes them. The cache
// neither refuses the new key nor lets the revoked one through.
func TestKeyCacheAcrossInstances(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	a := MustLedger(t, url, ledger.Options{})
	b := MustLedger(t, url, ledger.Options{})
	e := MustAddEdge(t, b, "edge-k")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 30, time.Now())
	if out := MustCommit(t, a, inputs(segment(c, e, 1, 10))...); out[0].Kind != ledger.KindCommitted {
		t.Fatalf("first segment: %+v", out[0])
	}

	next := newTestEdge(t, e.ID)
	if _, err := b.RotateKey(ctx, e.ID, next.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	if out := MustCommit(t, a, inputs(segment(c, next, 11, 20))...); out[0].Kind != ledger.KindCommitted {
		t.Fatalf("segment signed by the key another instance added: %+v", out[0])
	}

	if err := b.RevokeKey(ctx, e.ID, e.Signer.KeyID()); err != nil {
		t.Fatal(err)
	}
	out := MustCommit(t, a, inputs(segment(c, e, 21, 30))...)
	if o := out[0]; o.Kind != ledger.KindQuarantined || o.Code != protocol.NackRevoked || o.HWM != 20 {
		t.Fatalf("segment signed by a key another instance revoked: %+v", o)
	}
	if out := MustCommit(t, a, inputs(segment(c, next, 21, 30))...); out[0].Kind != ledger.KindCommitted {
		t.Fatalf("the same records signed by the new key: %+v", out[0])
	}
}

// projectionFunc is a Projection from a function.
type projectionFunc func(ctx context.Context, tx pgx.Tx, recs []ledger.Committed) error

func (f projectionFunc) Apply(ctx context.Context, tx pgx.Tx, recs []ledger.Committed) error {
	return f(ctx, tx, recs)
}

// A commit the database refuses for its data (SQLSTATE class 22 or 23)
// says so as an ingest.RefusedError, so ingest isolates the input instead
// of retrying the batch forever; any other failure does not.
func TestCommitRefusedIsMarked(t *testing.T) {
	url := MustMigratedDB(t)
	admin := MustLedger(t, url, ledger.Options{})
	e := MustAddEdge(t, admin, "edge-r")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 5, time.Now())
	for name, tc := range map[string]struct {
		apply   projectionFunc
		refused bool
	}{
		"data exception": {func(ctx context.Context, tx pgx.Tx, _ []ledger.Committed) error {
			_, err := tx.Exec(ctx, `SELECT 'not a number'::int`) // 22P02
			return err
		}, true},
		"not the data": {func(context.Context, pgx.Tx, []ledger.Committed) error {
			return errors.New("the read model's store is down")
		}, false},
	} {
		t.Run(name, func(t *testing.T) {
			l := MustLedger(t, url, ledger.Options{Projections: []ledger.Projection{tc.apply}})
			_, err := l.Commit(context.Background(), inputs(segment(c, e, 1, 5)))
			var re *ingest.RefusedError
			if err == nil || errors.As(err, &re) != tc.refused || ledger.Permanent(err) != tc.refused {
				t.Fatalf("Commit: %v; refused %v, want %v", err, errors.As(err, &re), tc.refused)
			}
		})
	}
}

// TestCommitWritesEveryColumn: the ledger row of every committed record,
// column by column, is what CeilingRows (the plain COPY's rows, built
// straight from the decoded record and encoded by pgx) gives for it, but
// for pos and committed_at, which are the commit's (copyrows.go writes the
// binary COPY itself). Ledger and telemetry records and a tombstone, whose
// hash is the shed record's and whose shed is true.
func TestCommitWritesEveryColumn(t *testing.T) {
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	l := ledger.New(conn, ledger.Options{})
	e := MustAddEdge(t, l, "edge-1")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 1199, time.Now())
	body, err := protocol.NewBody(map[string]any{"c": 21})
	if err != nil {
		t.Fatal(err)
	}
	r := protocol.NewRecord(c.Stream, "dev-9", protocol.Event{ID: "ev-10", Type: "telemetry.temperature",
		TS: time.UnixMilli(1_800_000_000_123), Body: body})
	r.Seq, r.Prev, r.EdgeTime = c.Last()+1, c.Head().Head, protocol.HLCFromTime(time.Now())+7
	tomb, err := protocol.Tombstone(r.Encode())
	if err != nil {
		t.Fatal(err)
	}
	c.Add(tomb)
	segs := cut(c, e, 300) // a COPY of more than one 64 KiB chunk
	MustCommit(t, l, inputs(segs...)...)

	want, err := ledger.CeilingRows(segs, func() int64 { return 0 }, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(context.Background(), `SELECT `+strings.Join(ledger.CeilingColumns, ", ")+`
		FROM ledger WHERE edge = $1 AND epoch = $2 ORDER BY pos`, c.Stream.Edge, c.Stream.Epoch[:])
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows stored, want %d", len(got), len(want))
	}
	var lastPos int64
	for i := range want {
		for j, col := range ledger.CeilingColumns {
			g, w := got[i][j], want[i][j]
			switch col {
			case "pos":
				if p := g.(int64); p <= lastPos {
					t.Errorf("row %d: pos %d after %d", i, p, lastPos)
				}
				lastPos = g.(int64)
				continue
			case "committed_at":
				continue
			}
			if gt, ok := g.(time.Time); ok {
				if !gt.Equal(w.(time.Time)) {
					t.Errorf("row %d %s: %v, want %v", i, col, gt, w)
				}
				continue
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("row %d %s: %#v, want %#v", i, col, g, w)
			}
		}
	}
	if got[len(got)-1][12] != true {
		t.Errorf("the tombstone's shed is %v", got[len(got)-1][12])
	}
}

// TestForgeryBesideACommit: a batch whose one segment fails verification
// and whose other commits. The commit locks the edges and takes positions
// for both while it verifies them (startEarly); the forged stream gets no
// streams row, and its genuine records commit afterwards from seq 1.
func TestForgeryBesideACommit(t *testing.T) {
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	l := ledger.New(conn, ledger.Options{})
	good, victim := MustAddEdge(t, l, "good"), MustAddEdge(t, l, "victim")
	gc := makeChain(t, protocol.Stream{Edge: good.ID, Epoch: newEpoch(t)}, 10, time.Now())
	vc := makeChain(t, protocol.Stream{Edge: victim.ID, Epoch: newEpoch(t)}, 10, time.Now())
	forged := segment(vc, victim, 1, 10)
	r := bytes.Clone(forged.Records[3])
	r[len(r)-2] ^= 0x01
	forged.Records[3] = r

	out := MustCommit(t, l, inputs(forged, segment(gc, good, 1, 10))...)
	if out[0].Kind != ledger.KindQuarantined || out[1].Kind != ledger.KindCommitted || out[1].HWM != 10 {
		t.Fatalf("outcomes %+v", out)
	}
	if n := count(t, conn, `SELECT count(*) FROM streams WHERE edge = $1`, victim.ID); n != 0 {
		t.Fatalf("%d streams rows for the forged segment's edge", n)
	}
	out = MustCommit(t, l, inputs(segment(vc, victim, 1, 10))...)
	if out[0].Kind != ledger.KindCommitted || out[0].HWM != 10 {
		t.Fatalf("the genuine segment: %+v", out[0])
	}
	for _, c := range []*chain{gc, vc} {
		seqs, raws := storedRows(t, conn, c.Stream)
		checkLedger(t, c, seqs, raws)
	}
	if n := count(t, conn, `SELECT count(*) FROM quarantine`); n != 1 {
		t.Errorf("%d quarantine rows, want 1", n)
	}
}

// TestKeyRotationOnAPoolOfOne: a commit that reads the keys again (a key
// id its cache does not know) does so after giving back its early
// transaction. Inside it, on a pool whose connections are all held by
// commits (here: one), the read waited for a connection that only its own
// commit could give back, until the context ended.
func TestKeyRotationOnAPoolOfOne(t *testing.T) {
	url := MustMigratedDB(t)
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	a := ledger.New(ledgertest.Pool(t, url+sep+"pool_max_conns=1"), ledger.Options{})
	b := MustLedger(t, url, ledger.Options{})
	e := MustAddEdge(t, b, "edge-k")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 20, time.Now())
	if out := MustCommit(t, a, inputs(segment(c, e, 1, 10))...); out[0].Kind != ledger.KindCommitted {
		t.Fatalf("first segment: %+v", out[0])
	}
	next := newTestEdge(t, e.ID)
	if _, err := b.RotateKey(context.Background(), e.ID, next.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := a.Commit(ctx, inputs(segment(c, next, 11, 20)))
	if err != nil || out[0].Kind != ledger.KindCommitted {
		t.Fatalf("segment signed by the rotated key: %+v, %v", out, err)
	}
}
