package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// gate is a projection that holds the commit transactions of one edge open
// (after their COPY, before COMMIT) until released: a commit that is slow
// to finish, made on purpose.
type gate struct {
	edge    string
	entered chan struct{} // one send per held commit
	release chan struct{} // closed to let them finish
}

func newGate(edge string) *gate {
	return &gate{edge: edge, entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (g *gate) Apply(ctx context.Context, _ pgx.Tx, recs []ledger.Committed) error {
	if recs[0].Stream.Edge != g.edge {
		return nil
	}
	g.entered <- struct{}{}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A commit that takes its positions first and commits last: another
// edge's commit, with larger positions, commits meanwhile (no global lock),
// and the tailing readers (Tail, Events) show neither until the slow one
// has committed; then both, in pos order. Without the horizon a reader
// would move its cursor past the slow commit's positions and never see
// them.
func TestHorizonHoldsBackLaterPositions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url := MustMigratedDB(t)
	g := newGate("edge-slow")
	slowL := ledger.New(MustConn(t, url), ledger.Options{Projections: []ledger.Projection{g}})
	fastL := MustLedger(t, url, ledger.Options{})
	reader := MustLedger(t, url, ledger.Options{})
	slowE := MustAddEdge(t, fastL, "edge-slow")
	fastE := MustAddEdge(t, fastL, "edge-fast")
	slowC := makeChain(t, protocol.Stream{Edge: slowE.ID, Epoch: newEpoch(t)}, 20, time.Now())
	fastC := makeChain(t, protocol.Stream{Edge: fastE.ID, Epoch: newEpoch(t)}, 20, time.Now())

	slowDone := make(chan error, 1)
	go func() {
		_, err := slowL.Commit(ctx, inputs(segment(slowC, slowE, 1, 10)))
		slowDone <- err
	}()
	select {
	case <-g.entered:
	case err := <-slowDone:
		t.Fatalf("the slow commit ended before the gate: %v", err)
	case <-ctx.Done():
		t.Fatal("the slow commit never reached its projection")
	}

	// The other edge commits while the slow one is open: with one global
	// commit lock this would wait for it (and the test would time out).
	out := MustCommit(t, fastL, inputs(segment(fastC, fastE, 1, 10))...)
	if out[0].Kind != ledger.KindCommitted {
		t.Fatalf("fast commit: %+v", out[0])
	}
	conn := MustConn(t, url)
	if n := count(t, conn, `SELECT count(*) FROM ledger WHERE edge = 'edge-fast'`); n != 10 {
		t.Fatalf("%d rows of the fast commit visible, want 10", n)
	}
	var fastMin int64
	if err := conn.QueryRow(ctx, `SELECT min(pos) FROM ledger`).Scan(&fastMin); err != nil {
		t.Fatal(err)
	}
	if fastMin <= 10 {
		t.Fatalf("the fast commit's first pos is %d: it should come after the slow commit's 10", fastMin)
	}

	// Committed, visible, and yet not tailed: it is above the horizon.
	recs, err := reader.Tail(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 0 {
		t.Fatalf("Tail returned %d records (first pos %d) while an older commit is in flight, want none",
			len(recs), recs[0].Pos)
	}
	if last, err := ledger.LastPos(ctx, conn); err != nil || last != 0 {
		t.Fatalf("LastPos = %d, %v while an older commit is in flight, want 0", last, err)
	}
	page, err := reader.Events(ctx, ledger.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 0 || page.Next != 0 {
		t.Fatalf("Events returned %d events, next %d, while an older commit is in flight", len(page.Events), page.Next)
	}

	close(g.release)
	if err := <-slowDone; err != nil {
		t.Fatalf("slow commit: %v", err)
	}
	// Both are in: the tail shows them (at once here; poll all the same,
	// since a write transaction of another test on a shared server would
	// hold the horizon for a moment).
	poll.For(t, time.Minute, func() error {
		if recs, err = reader.Tail(ctx, 0, 100); err != nil || len(recs) != 20 {
			return fmt.Errorf("Tail returned %d records (%v), want 20", len(recs), err)
		}
		return nil
	})
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s/%d", r.Stream.Edge, r.Record.Seq))
	}
	var want []string
	for _, e := range []string{"edge-slow", "edge-fast"} {
		for seq := 1; seq <= 10; seq++ {
			want = append(want, fmt.Sprintf("%s/%d", e, seq))
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Tail after both committed:\n got %v\nwant %v", got, want)
	}
	if last, err := ledger.LastPos(ctx, conn); err != nil || last != recs[len(recs)-1].Pos {
		t.Fatalf("LastPos = %d, %v after both committed, want %d", last, err, recs[len(recs)-1].Pos)
	}
	page, err = reader.Events(ctx, ledger.Filter{Limit: 15})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 15 || page.Events[0].Pos != recs[0].Pos || page.Next != recs[14].Pos {
		t.Fatalf("Events page: %d events, next %d; want 15 from pos %d to %d", len(page.Events), page.Next,
			recs[0].Pos, recs[14].Pos)
	}
}

// Commits of one edge still run one at a time: a second commit of the
// edge waits for the first (on the edge's lock), and its records come
// after the first's in seq and in pos.
func TestCommitsOfOneEdgeSerialise(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url := MustMigratedDB(t)
	g := newGate("edge-one")
	first := ledger.New(MustConn(t, url), ledger.Options{Projections: []ledger.Projection{g}})
	second := MustLedger(t, url, ledger.Options{})
	e := MustAddEdge(t, second, "edge-one")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 20, time.Now())

	done1 := make(chan error, 1)
	go func() {
		_, err := first.Commit(ctx, inputs(segment(c, e, 1, 10)))
		done1 <- err
	}()
	<-g.entered
	done2 := make(chan []ledger.Outcome, 1)
	go func() {
		out, err := second.Commit(ctx, inputs(segment(c, e, 11, 20)))
		if err != nil {
			t.Errorf("second commit: %v", err)
		}
		done2 <- out
	}()
	conn := MustConn(t, url)
	// The second waits for an advisory lock (the edge's), held by the first.
	poll.For(t, time.Minute, func() error {
		n := count(t, conn, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
		if n != 1 {
			return fmt.Errorf("%d advisory locks waited for, want 1", n)
		}
		return nil
	})
	close(g.release)
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	out := <-done2
	if len(out) != 1 || out[0].Kind != ledger.KindCommitted || out[0].HWM != 20 {
		t.Fatalf("second commit: %+v", out)
	}
	seqs, raws := storedRows(t, conn, c.Stream)
	checkLedger(t, c, seqs, raws)
}

// Many committers on many streams, some edges shared between them (so
// their commits meet on the edge lock, and redeliveries are duplicates), a
// reader tailing the whole time: the reader sees every record exactly
// once, each stream in seq order, all in increasing pos, and what it saw
// is the ledger's final pos order. No timing is asserted: the committers
// simply run as fast as they can while the reader reads.
func TestTailWhileCommitting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	url := MustMigratedDB(t)
	admin := MustLedger(t, url, ledger.Options{})
	const (
		edges      = 8
		perEdge    = 2   // streams per edge
		records    = 120 // per stream
		committers = 4
	)
	var chains []*chain
	var work [committers][]*protocol.Segment
	for i := range edges {
		e := MustAddEdge(t, admin, fmt.Sprintf("edge-%02d", i))
		for range perEdge {
			c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, records, time.Now())
			chains = append(chains, c)
			// Each edge's segments go to two committers: its own and, cut
			// differently, the next one's (which makes duplicates).
			w := i % committers
			work[w] = append(work[w], cut(c, e, 10)...)
			work[(w+1)%committers] = append(work[(w+1)%committers], cut(c, e, 15)...)
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, committers+1)
	for w := range committers {
		l := MustLedger(t, url, ledger.Options{})
		queue := work[w]
		rng := rand.New(rand.NewPCG(uint64(w), 7))
		wg.Go(func() {
			for len(queue) > 0 {
				// Take a few segments, mostly from the front, so streams
				// advance, with some out of order.
				n := min(len(queue), 1+rng.IntN(5))
				batch := slices.Clone(queue[:n])
				queue = queue[n:]
				rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
				out, err := l.Commit(ctx, inputs(batch...))
				if err != nil {
					errs <- err
					return
				}
				for i, o := range out {
					switch o.Kind {
					case ledger.KindGap:
						queue = append(queue, batch[i])
					case ledger.KindQuarantined:
						errs <- errors.New("quarantined: " + o.Reason)
						return
					}
				}
			}
		})
	}
	committing := make(chan struct{})
	go func() { wg.Wait(); close(committing) }()

	reader := MustLedger(t, url, ledger.Options{})
	type key struct {
		s   protocol.Stream
		seq uint64
	}
	seen := map[key]int64{} // -> pos
	next := map[protocol.Stream]uint64{}
	var order []int64
	var after int64
	reads := 0
	for last := false; ; {
		select {
		case <-committing:
			last = true
		default:
		}
		recs, err := reader.Tail(ctx, after, 1+reads%37) // page sizes vary
		reads++
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Pos <= after {
				t.Fatalf("pos %d after cursor %d: not increasing", r.Pos, after)
			}
			after = r.Pos
			k := key{r.Stream, r.Record.Seq}
			if p, dup := seen[k]; dup {
				t.Fatalf("stream %s seq %d seen twice, at pos %d and %d", r.Stream, r.Record.Seq, p, r.Pos)
			}
			seen[k] = r.Pos
			if want := next[r.Stream] + 1; r.Record.Seq != want {
				t.Fatalf("stream %s: seq %d tailed after seq %d", r.Stream, r.Record.Seq, want-1)
			}
			next[r.Stream] = r.Record.Seq
			order = append(order, r.Pos)
		}
		// Done when the committers are and every record is tailed. A
		// record skipped would never be tailed: the test would time out
		// here, saying how many it saw.
		if last && len(seen) == edges*perEdge*records {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("tailed %d records of %d before the deadline", len(seen), edges*perEdge*records)
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if want := edges * perEdge * records; len(seen) != want {
		t.Fatalf("tailed %d records, want %d", len(seen), want)
	}
	// What the reader saw is the ledger's pos order, all of it.
	rows, err := admin.DB().Query(ctx, `SELECT pos FROM ledger ORDER BY pos`)
	if err != nil {
		t.Fatal(err)
	}
	final, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, final) {
		t.Fatalf("the tail's order differs from the ledger's pos order (%d vs %d rows)", len(order), len(final))
	}
	conn := MustConn(t, url)
	for _, c := range chains {
		seqs, raws := storedRows(t, conn, c.Stream)
		checkLedger(t, c, seqs, raws)
	}
	t.Logf("%d records tailed in %d reads", len(order), reads)
}

// A duplicate that ends between stored checkpoints is checked against the
// ledger row (at the commit time of the checkpoint after it); one that
// differs there is a fork.
func TestDuplicateCheckBetweenCheckpoints(t *testing.T) {
	url := MustMigratedDB(t)
	l := MustLedger(t, url, ledger.Options{})
	e := MustAddEdge(t, l, "edge-d")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 30, time.Now())
	for _, seg := range cut(c, e, 10) {
		MustCommit(t, l, inputs(seg)...)
	}
	out := MustCommit(t, l, inputs(segment(c, e, 3, 15), segment(c, e, 1, 10))...)
	for i, o := range out {
		if o.Kind != ledger.KindDuplicate {
			t.Errorf("duplicate %d: %+v", i, o)
		}
	}
	fork := &chain{Stream: c.Stream}
	extend(t, fork, 30, time.Now(), "fork")
	for _, seg := range []*protocol.Segment{segment(fork, e, 3, 15), segment(fork, e, 1, 20)} {
		out = MustCommit(t, l, inputs(seg)...)
		if o := out[0]; o.Kind != ledger.KindQuarantined || o.Code != protocol.NackChain {
			t.Errorf("fork %d-%d: %+v", seg.First, seg.Last, o)
		}
	}
}

// ledger_take_positions refuses a transaction that already has an xid (its
// positions would not follow its xid), and releases its session lock when
// it fails: another session can take the lock at once.
func TestTakePositionsGuards(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	conn, other := MustConn(t, url), MustConn(t, url)
	const lockCommit = 0x6f7574706f737403 // ledger.lockCommit, as migration 0009 spells it

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, `SELECT ledger_take_positions(1)`)
	if err == nil || !strings.Contains(err.Error(), "must be the first write of its transaction") {
		t.Errorf("after a write: %v, want a refusal", err)
	}
	_ = tx.Rollback(ctx)

	// A failure inside the locked part (the range overflows bigint).
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, `SELECT ledger_take_positions(9223372036854775807)`)
	if err == nil {
		t.Fatal("a range past the end of bigint was taken")
	}
	var got bool
	if err := other.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, int64(lockCommit)).Scan(&got); err != nil || !got {
		t.Fatalf("another session cannot take the position lock after the failure (%v, %v): it leaked", got, err)
	}
	if _, err := other.Exec(ctx, `SELECT pg_advisory_unlock($1)`, int64(lockCommit)); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback(ctx)

	// And in order: positions and xids rise together.
	var x1, x2 string
	var p1, p2 int64
	for _, d := range []struct {
		x *string
		p *int64
	}{{&x1, &p1}, {&x2, &p2}} {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(ctx, `SELECT xid::text, first_pos FROM ledger_take_positions(5)`).Scan(d.x, d.p); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var ordered bool
	if err := conn.QueryRow(ctx, `SELECT $1::xid8 < $2::xid8`, x1, x2).Scan(&ordered); err != nil || !ordered || p2 < p1+5 {
		t.Errorf("xids %s, %s with positions %d, %d: want both rising, the second range after the first", x1, x2, p1, p2)
	}
}
