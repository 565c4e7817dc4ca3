package ledger

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ingest"
	"github.com/outpost-edge/outpost/protocol"
)

// The values of a commit are declared by ingest, the package that uses
// them (its Ledger interface, which *Ledger implements); these names keep
// the ledger's code and its callers reading as before.
type (
	Input   = ingest.Input
	Kind    = ingest.Kind
	Outcome = ingest.Outcome
)

// What Commit did with one input (ingest.Kind).
const (
	KindCommitted   = ingest.KindCommitted
	KindDuplicate   = ingest.KindDuplicate
	KindGap         = ingest.KindGap
	KindQuarantined = ingest.KindQuarantined
)

var _ ingest.Ledger = (*Ledger)(nil)

// Committed is one record as committed, given to projections.
type Committed struct {
	Stream      protocol.Stream
	Record      protocol.Record // decoded from Raw
	Raw         []byte          // the record's bytes as the edge signed them
	Hash        protocol.Hash   // its link hash
	CommittedAt time.Time
	Pos         int64 // global commit offset
}

// Projection keeps a read model in step with the ledger. Apply runs inside
// the commit transaction with the records it commits, in pos order; an
// error rolls the whole commit back (Commit then returns it, and nothing
// of the batch is committed).
type Projection interface {
	Apply(ctx context.Context, tx pgx.Tx, recs []Committed) error
}

// An OrderedProjection is a Projection whose rows depend on the order in
// which records are folded (which of two duplicates counts, a stock count
// against another till's sale, which Z came later), so that its rows equal
// a rebuild in pos order only if every commit applies it in the order of
// its positions. Commits of different edges run at once, and a commit that
// took lower positions can reach Apply after one that took higher ones; so
// for each OrderedProjection the commit takes a transaction advisory lock
// on OrderKey before it takes its positions, and holds it to its end.
// Commits that fold an ordered projection therefore run one at a time from
// their positions to their commit: the price of a projection that equals
// its rebuild (docs/REPORTS.md, "Commits and order").
type OrderedProjection interface {
	Projection
	OrderKey() string
}

// maxAttempts bounds how often a commit transaction that hit a deadlock or
// serialization failure is run again.
const maxAttempts = 3

// Commit verifies a batch of segments and commits the valid, new ones in
// one transaction, and returns one Outcome per input, in input order.
//
// It is safe to call concurrently (with a pool as DB) and idempotent: the
// same segments may arrive any number of times, in any order, at any
// number of callers; each record is committed once, in seq order. When the
// error is not nil, nothing of the batch may be taken as committed (some
// of it may be); redelivering the whole batch is always safe. Quarantined
// inputs are recorded even when the commit itself fails.
func (l *Ledger) Commit(ctx context.Context, batch []Input) ([]Outcome, error) {
	out := make([]Outcome, len(batch))
	if len(batch) == 0 {
		return out, nil
	}
	var edges []string
	for _, in := range batch {
		if in.Segment != nil {
			edges = append(edges, in.Segment.Edge)
		}
	}
	keys, err := l.keys.get(ctx, l.db, edges)
	if err != nil {
		return nil, fmt.Errorf("commit: load keys: %w", err)
	}

	// The transaction starts while phase 1 runs (early).
	e := l.startEarly(ctx, batch, keys)
	defer e.release(ctx)

	// Phase 1, outside any transaction: signatures and chains.
	work := l.verifyAll(batch, keys, out)
	// A key id the cached keys do not know may be a key added since (by
	// rotation or enrollment, perhaps through another instance): read
	// those edges again and verify their inputs once more.
	var again []int
	var stale []string
	for i, o := range out {
		if o.Kind == KindQuarantined && o.Code == protocol.NackUnknown && keys[o.Stream.Edge] != nil {
			again = append(again, i)
			stale = append(stale, o.Stream.Edge)
		}
	}
	if len(again) > 0 {
		// Not inside the early transaction: with a pool this would hold
		// one connection while waiting for another (concurrent commits
		// could take them all), and on one connection the transaction has
		// it. The commit begins anew; a rotated key is rare.
		e.release(ctx)
		l.keys.forget(stale...)
		if keys, err = l.keys.get(ctx, l.db, edges); err != nil {
			return nil, fmt.Errorf("commit: load keys: %w", err)
		}
		for _, i := range again {
			out[i] = Outcome{}
			if v := verifyOne(i, &batch[i], keys, &out[i]); v != nil {
				work = append(work, v)
			}
		}
	}

	// Phase 2: one transaction for everything that verified.
	if len(work) > 0 {
		var res []Outcome
		var recs []Committed
		for attempt := 1; ; attempt++ {
			res, recs, err = l.commitTx(ctx, work, e.take())
			if err == nil || !retryable(err) || attempt == maxAttempts || ctx.Err() != nil {
				break
			}
			l.opts.Logger.Info("commit retried", "attempt", attempt, "err", err)
		}
		if err == nil {
			for i, v := range work {
				out[v.idx] = res[i]
			}
			l.stats.records.Add(uint64(len(recs)))
			if l.opts.Committed != nil && len(recs) > 0 {
				l.opts.Committed(recs[len(recs)-1].Pos)
			}
		} else if Permanent(err) {
			// The data, not the database: ingest isolates the input.
			err = fmt.Errorf("commit: %w", &ingest.RefusedError{Err: err})
		} else {
			err = fmt.Errorf("commit: %w", err)
		}
	}

	e.release(ctx) // before phase 3: with one connection, the early transaction holds it

	// Phase 3: quarantine rows, in their own transaction, whatever the
	// commit did.
	if qerr := l.writeQuarantine(ctx, batch, out); qerr != nil {
		err = errors.Join(err, fmt.Errorf("commit: quarantine: %w", qerr))
	}
	if err != nil {
		return out, err
	}
	for _, o := range out {
		switch o.Kind {
		case KindCommitted:
			l.stats.committed.Add(1)
		case KindDuplicate:
			l.stats.duplicates.Add(1)
		case KindGap:
			l.stats.gaps.Add(1)
		}
	}
	return out, nil
}

// streamState is a locked stream row and what the batch does to it.
type streamState struct {
	hwm, dbHWM uint64
	floor      uint64 // records at or below it may be gone (DropBefore)
	head       protocol.Hash
	lastCommit time.Time
	firstSeen  time.Time
	ended      bool
	isNew      bool // inserted by this transaction: a stream seen for the first time
	touched    bool // an input of the batch is for it
	signed     bool // an input of the batch is for it and signed by a key still active
	committed  bool // the batch adds records to it
	pending    []pendingRun
}

// pendingRun is a run of records the batch commits to a stream, for
// checking duplicates of them within the same batch.
type pendingRun struct {
	first uint64
	links []protocol.Hash
}

func (st *streamState) pendingLink(seq uint64) (protocol.Hash, bool) {
	for _, p := range st.pending {
		if seq >= p.first && seq < p.first+uint64(len(p.links)) {
			return p.links[seq-p.first], true
		}
	}
	return protocol.Hash{}, false
}

func compareStreams(a, b protocol.Stream) int {
	return cmp.Or(cmp.Compare(a.Edge, b.Edge), bytes.Compare(a.Epoch[:], b.Epoch[:]))
}

type edgeKID struct {
	edge string
	kid  protocol.KeyID
}

var ledgerColumns = []string{"edge", "epoch", "seq", "pos", "committed_at", "device", "event_id", "type",
	"class", "device_ts", "edge_time", "hlc", "shed", "hash", "raw"}

// commitTx runs the commit transaction for the verified inputs. It returns
// their outcomes (parallel to work, which it sorts) and the records it
// committed. It changes nothing outside the transaction, so it can simply
// be run again after a deadlock.
//
// The steps, each a method of txn: lock the streams (and take the commit
// position), decide each input against its stream, check duplicates against
// the stored records, COPY the new records, advance the watermarks and end
// the old epochs (one round trip), apply the projections, commit. When e
// is not nil, the transaction was begun, and the edges locked and the
// positions taken, while the batch was verified (startEarly).
func (l *Ledger) commitTx(ctx context.Context, work []*verified, e *early) ([]Outcome, []Committed, error) {
	t := &txn{l: l, work: work}
	t.plan()
	var tx pgx.Tx
	if e != nil {
		if e.tx != nil {
			defer e.tx.Rollback(context.WithoutCancel(ctx))
		}
		if e.err != nil {
			return nil, nil, e.err
		}
		if !e.covers(t) {
			// Not reached: what verifies is among what the batch claims.
			// Were it not, its edges would go unlocked; begin anew.
			e.tx.Rollback(context.WithoutCancel(ctx))
			return l.commitTx(ctx, work, nil)
		}
		tx = e.tx
		t.nextPos, t.committedAt, t.mark, t.positioned = e.nextPos, e.committedAt, e.mark, true
	} else {
		var err error
		if tx, err = l.db.Begin(ctx); err != nil {
			return nil, nil, err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
	}
	t.firstPos = t.nextPos
	t.tx = tx
	if err := t.lockStreams(ctx); err != nil {
		return nil, nil, err
	}
	if err := t.decide(); err != nil {
		return nil, nil, err
	}
	if err := t.checkDuplicates(ctx); err != nil {
		return nil, nil, err
	}
	if err := t.copyRecords(ctx); err != nil {
		return nil, nil, err
	}
	b := &pgx.Batch{}
	t.advance(b)
	t.endOldEpochs(b)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, nil, fmt.Errorf("update streams: %w", err)
	}
	if len(t.recs) > 0 {
		for _, p := range l.opts.Projections {
			if err := p.Apply(ctx, tx, t.recs); err != nil {
				return nil, nil, fmt.Errorf("projection %T: %w", p, err)
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, nil, err
	}
	t.fillWatermarks()
	return t.res, t.recs, nil
}

// txn is one run of the commit transaction: what the batch needs locked,
// the locked state, and the outcomes as they are decided.
type txn struct {
	l    *Ledger
	tx   pgx.Tx
	work []*verified // sorted by stream, then seq

	// From plan: what to lock.
	sEdges  []string // the batch's streams, in lock order
	sEpochs [][]byte
	edges   []string // the batch's edges, in order
	kids    []string // the key ids that signed, sorted, unique
	maxNew  int      // records that could be new: the positions to take

	// From lockStreams.
	states      map[protocol.Stream]*streamState
	byEdge      []protocol.Stream // every locked stream, in lock order
	active      map[edgeKID]bool  // the signing keys still active
	committedAt time.Time
	firstPos    int64 // the first position taken
	nextPos     int64 // the next position to give a record
	mark        bool  // this commit writes the minute's ledger_marks row
	positioned  bool  // steps 1 and 2 of lockStreams are done (startEarly)

	// From decide and checkDuplicates.
	res      []Outcome
	starts   []int // index of the first new record, for KindCommitted
	dbChecks []dupCheck
	total    int // records to commit

	recs []Committed // from copyRecords
}

// dupCheck is a duplicate input whose last record must be compared with
// the stored one.
type dupCheck struct {
	i    int
	seq  uint64
	want protocol.Hash
}

// plan sorts the work and lists the streams, edges and keys to lock.
func (t *txn) plan() {
	// Same stream together, in seq order: segment k+1 of a stream can only
	// follow k when k is applied first.
	slices.SortStableFunc(t.work, func(a, b *verified) int {
		return cmp.Or(compareStreams(a.stream, b.stream), cmp.Compare(a.seg.First, b.seg.First),
			cmp.Compare(a.seg.Last, b.seg.Last))
	})
	for i, v := range t.work {
		t.maxNew += len(v.recs)
		if i == 0 || v.stream != t.work[i-1].stream {
			t.sEdges = append(t.sEdges, v.stream.Edge)
			t.sEpochs = append(t.sEpochs, v.stream.Epoch[:])
		}
		if len(t.edges) == 0 || t.edges[len(t.edges)-1] != v.stream.Edge {
			t.edges = append(t.edges, v.stream.Edge)
		}
		t.kids = append(t.kids, string(v.cp.KID))
	}
	slices.Sort(t.kids)
	t.kids = slices.Compact(t.kids)
}

// lockStreams is the one round trip before the COPY:
//  1. Lock the batch's edges (a transaction advisory lock per edge, in
//     key order): commits of one edge run one at a time, commits of
//     different edges at once. The lock is what keeps each stream's
//     records in seq order and pos order alike; it assigns no xid.
//  2. Take the transaction's xid, its range of positions (as many as
//     there are records; duplicates leave gaps in pos, which is fine) and
//     its commit time, all at once (ledger_take_positions, the first
//     write of the transaction): a larger xid has larger positions, which
//     is what makes the tailing readers' horizon exact (BelowHorizon).
//  3. Insert the streams not seen before (in lock order).
//  4. Lock every stream row of the batch's edges, in (edge, epoch) order:
//     no other commit waits here (they wait at 1), only a hello's update.
//  5. Take a share lock on the edges and keys that signed, re-reading
//     their status: a revocation that committed after phase 1 read the
//     keys is seen here, and one that starts now waits for this commit.
//
// Steps 1 and 2 depend on nothing that verification decides, so Commit
// normally sends them with the BEGIN while it verifies the batch
// (startEarly), and only 3 to 5 are left for this round trip.
func (t *txn) lockStreams(ctx context.Context) error {
	b := &pgx.Batch{}
	if !t.positioned {
		queueLocksAndPositions(b, t.edges, t.l.orderKeys, t.maxNew)
	}
	b.Queue(`INSERT INTO streams (edge, epoch)
		SELECT * FROM unnest($1::text[], $2::bytea[])
		ON CONFLICT DO NOTHING RETURNING edge, epoch`, t.sEdges, t.sEpochs)
	b.Queue(`SELECT edge, epoch, hwm, head, last_commit, first_seen, ended_at IS NOT NULL, floor_seq
		FROM streams WHERE edge = ANY($1) ORDER BY edge, epoch FOR UPDATE`, t.edges)
	b.Queue(`SELECT k.edge, k.kid FROM edge_keys k JOIN edges e ON e.id = k.edge
		WHERE k.edge = ANY($1) AND k.kid = ANY($2) AND k.status = 'active' AND e.status = 'active'
		FOR SHARE OF k, e`, t.edges, t.kids)
	br := t.tx.SendBatch(ctx, b)
	if !t.positioned {
		var err error
		if t.nextPos, t.committedAt, t.mark, err = readLocksAndPositions(br); err != nil {
			br.Close()
			return err
		}
		t.firstPos = t.nextPos
	}
	fresh := map[protocol.Stream]bool{}
	rows, _ := br.Query()
	var edge string
	var epoch []byte
	_, err := pgx.ForEachRow(rows, []any{&edge, &epoch}, func() error {
		fresh[streamOf(edge, epoch)] = true
		return nil
	})
	if err != nil {
		br.Close()
		return fmt.Errorf("insert streams: %w", err)
	}
	t.states = map[protocol.Stream]*streamState{}
	var hwm int64
	var head []byte
	var lastCommit *time.Time
	var firstSeen time.Time
	var ended bool
	var floor int64
	rows, _ = br.Query()
	_, err = pgx.ForEachRow(rows, []any{&edge, &epoch, &hwm, &head, &lastCommit, &firstSeen, &ended, &floor}, func() error {
		s := streamOf(edge, epoch)
		st := &streamState{hwm: uint64(hwm), dbHWM: uint64(hwm), floor: uint64(floor), lastCommit: deref(lastCommit),
			firstSeen: firstSeen, ended: ended, isNew: fresh[s]}
		copy(st.head[:], head)
		t.states[s] = st
		t.byEdge = append(t.byEdge, s)
		return nil
	})
	if err != nil {
		br.Close()
		return fmt.Errorf("lock streams: %w", err)
	}
	t.active = map[edgeKID]bool{}
	var kid string
	rows, _ = br.Query()
	_, err = pgx.ForEachRow(rows, []any{&edge, &kid}, func() error {
		t.active[edgeKID{edge, protocol.KeyID(kid)}] = true
		return nil
	})
	if err != nil {
		br.Close()
		return fmt.Errorf("recheck keys: %w", err)
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("lock streams: %w", err)
	}
	return nil
}

// queueLocksAndPositions queues steps 1 and 2 of lockStreams: the edge
// locks, the ordered projections' locks, and n positions.
func queueLocksAndPositions(b *pgx.Batch, edges, orderKeys []string, n int) {
	b.Queue(`SELECT count(pg_advisory_xact_lock($2, k))
		FROM (SELECT DISTINCT hashtext(e) AS k FROM unnest($1::text[]) AS e ORDER BY 1) AS s`, edges, lockEdgeClass)
	b.Queue(`SELECT count(pg_advisory_xact_lock($2, k))
		FROM (SELECT DISTINCT hashtext(o) AS k FROM unnest($1::text[]) AS o ORDER BY 1) AS s`, orderKeys, lockProjectionClass)
	b.Queue(`SELECT first_pos, committed_at, mark FROM ledger_take_positions($1)`, max(n, 1))
}

// readLocksAndPositions reads the results of queueLocksAndPositions.
func readLocksAndPositions(br pgx.BatchResults) (firstPos int64, committedAt time.Time, mark bool, err error) {
	if _, err := br.Exec(); err != nil {
		return 0, time.Time{}, false, fmt.Errorf("lock edges: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		return 0, time.Time{}, false, fmt.Errorf("lock ordered projections: %w", err)
	}
	if err := br.QueryRow().Scan(&firstPos, &committedAt, &mark); err != nil {
		return 0, time.Time{}, false, fmt.Errorf("take commit positions: %w", err)
	}
	return firstPos, committedAt, mark, nil
}

// early is the start of a commit transaction, run while the batch is
// verified, so that the commit does not wait for it afterwards: the BEGIN
// and lockStreams' steps 1 and 2 (one round trip each), for every edge
// and record the batch claims (the registered edges whose segments came
// on their own topic; verification may refuse some of them). An edge locked
// for a segment that then fails verification is only locked until this
// commit ends, and positions taken for records that are not committed are
// gaps, as a duplicate's are; neither changes what is committed. The xid
// is taken a little earlier than otherwise, so the tailing readers'
// horizon (BelowHorizon) waits that much longer for this commit.
//
// The goroutine that runs it is the commit's: every path of Commit waits
// for it (take, or release when nothing is left to commit).
type early struct {
	edges       []string // locked, sorted
	n           int      // positions taken
	done        chan struct{}
	tx          pgx.Tx // nil when Begin failed
	err         error
	nextPos     int64
	committedAt time.Time
	mark        bool
	taken       bool
}

// startEarly starts the early transaction for batch, or returns nil when
// the batch claims nothing that could commit. It must be called after
// the keys are read: on a Ledger with a single connection, the
// connection is the early transaction's from here on.
func (l *Ledger) startEarly(ctx context.Context, batch []Input, keys map[string]*Keys) *early {
	var edges []string
	n := 0
	for _, in := range batch {
		if s := in.Segment; s != nil && s.Edge == in.TopicEdge && keys[s.Edge] != nil {
			edges = append(edges, s.Edge)
			n += len(s.Records)
		}
	}
	if n == 0 {
		return nil
	}
	slices.Sort(edges)
	edges = slices.Compact(edges)
	e := &early{edges: edges, n: n, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		tx, err := l.db.Begin(ctx)
		if err != nil {
			e.err = err
			return
		}
		e.tx = tx
		b := &pgx.Batch{}
		queueLocksAndPositions(b, edges, l.orderKeys, n)
		br := tx.SendBatch(ctx, b)
		e.nextPos, e.committedAt, e.mark, e.err = readLocksAndPositions(br)
		if cerr := br.Close(); e.err == nil && cerr != nil {
			e.err = fmt.Errorf("lock edges: %w", cerr)
		}
	}()
	return e
}

// covers reports whether e locked every edge of t and took positions for
// all its records.
func (e *early) covers(t *txn) bool {
	for _, edge := range t.edges {
		if _, ok := slices.BinarySearch(e.edges, edge); !ok {
			return false
		}
	}
	return t.maxNew <= e.n
}

// wait waits for the early start to be done (a nil e is).
func (e *early) wait() {
	if e != nil {
		<-e.done
	}
}

// take hands the early transaction to the first commit attempt, once, and
// nil to every other: they begin their own.
func (e *early) take() *early {
	if e == nil || e.taken {
		return nil
	}
	e.wait()
	e.taken = true
	return e
}

// release rolls the early transaction back if no commit attempt took it.
func (e *early) release(ctx context.Context) {
	if e == nil || e.taken {
		return
	}
	e.wait()
	e.taken = true
	if e.tx != nil {
		e.tx.Rollback(context.WithoutCancel(ctx))
	}
}

// decide decides each input against its stream, in seq order: revoked,
// duplicate (to be checked), gap, fork, or committed. A commit moves the
// stream's hwm and head in t.states for the inputs that follow.
func (t *txn) decide() error {
	t.res = make([]Outcome, len(t.work))
	t.starts = make([]int, len(t.work))
	for i, v := range t.work {
		st := t.states[v.stream]
		if st == nil {
			return fmt.Errorf("stream %s: row missing after insert", v.stream)
		}
		st.touched = true
		first, last := v.seg.First, v.seg.Last
		n := len(v.recs)
		if !t.active[edgeKID{v.stream.Edge, v.cp.KID}] {
			t.l.keys.forget(v.stream.Edge)
			t.res[i] = quarantined(v.stream, protocol.NackRevoked,
				fmt.Sprintf("key %s of edge %s was revoked", v.cp.KID, v.stream.Edge))
			continue
		}
		st.signed = true
		switch {
		case last <= st.hwm:
			t.res[i] = Outcome{Kind: KindDuplicate}
			want := v.links[n-1]
			switch {
			case last == st.hwm:
				if want != st.head {
					t.res[i] = forked(v.stream, last)
				}
			case last > st.dbHWM:
				if h, _ := st.pendingLink(last); h != want {
					t.res[i] = forked(v.stream, last)
				}
			default:
				t.dbChecks = append(t.dbChecks, dupCheck{i, last, want})
			}
		case first > st.hwm+1:
			t.res[i] = Outcome{Kind: KindGap, Code: protocol.NackGap,
				Reason: fmt.Sprintf("segment starts at seq %d; committed up to %d", first, st.hwm)}
		default:
			k := int(st.hwm + 1 - first)
			if v.recs[k].Prev != st.head {
				t.res[i] = quarantined(v.stream, protocol.NackChain,
					fmt.Sprintf("seq %d does not continue the committed head %s at seq %d (fork)",
						st.hwm+1, st.head, st.hwm))
				break
			}
			st.pending = append(st.pending, pendingRun{first: st.hwm + 1, links: v.links[k:]})
			st.hwm, st.head, st.committed = last, v.links[n-1], true
			t.starts[i] = k
			t.total += n - k
			t.res[i] = Outcome{Kind: KindCommitted, Records: n - k,
				Watermark: Watermark{Stream: v.stream, HWM: last, Head: v.links[n-1]}}
		}
	}
	return nil
}

// dupCheckQuery returns, for each (i, edge, epoch, seq), the stored link
// hash of that record, or NULL when there is none. A resent segment ends
// where its first delivery did, at a stored checkpoint, whose head is the
// link hash of that record: the ledger is not read at all. Otherwise the
// record is looked up in the ledger at the commit time of the first
// checkpoint at or after its seq (the commit that stored the record also
// stored that checkpoint, at the same time), which leaves one partition
// (chunk) to look in.
const dupCheckQuery = `SELECT q.i, coalesce(c.head, l.hash)
	FROM unnest($1::int[], $2::text[], $3::bytea[], $4::bigint[]) AS q(i, edge, epoch, seq)
	LEFT JOIN checkpoints c ON c.edge = q.edge AND c.epoch = q.epoch AND c.seq = q.seq
	LEFT JOIN LATERAL (SELECT hash FROM ledger l
		WHERE c.head IS NULL AND l.edge = q.edge AND l.epoch = q.epoch AND l.seq = q.seq
		AND l.committed_at = (SELECT c2.committed_at FROM checkpoints c2
			WHERE c2.edge = q.edge AND c2.epoch = q.epoch AND c2.seq >= q.seq ORDER BY c2.seq LIMIT 1)
		LIMIT 1) l ON true`

// checkDuplicates compares duplicates of records committed before with the
// stored records: the edge signed both, so a difference is a fork.
func (t *txn) checkDuplicates(ctx context.Context) error {
	if len(t.dbChecks) == 0 {
		return nil
	}
	var is []int32
	var es []string
	var eps [][]byte
	var seqs []int64
	for _, c := range t.dbChecks {
		v := t.work[c.i]
		is = append(is, int32(c.i))
		es = append(es, v.stream.Edge)
		eps = append(eps, v.stream.Epoch[:])
		seqs = append(seqs, int64(c.seq))
	}
	rows, _ := t.tx.Query(ctx, dupCheckQuery, is, es, eps, seqs)
	stored := map[int]protocol.Hash{}
	var i int32
	var h []byte
	if _, err := pgx.ForEachRow(rows, []any{&i, &h}, func() error {
		var hh protocol.Hash
		if len(h) == len(hh) {
			copy(hh[:], h)
			stored[int(i)] = hh
		}
		return nil
	}); err != nil {
		return fmt.Errorf("check duplicates: %w", err)
	}
	for _, c := range t.dbChecks {
		h, ok := stored[c.i]
		switch {
		case !ok && c.seq <= t.states[t.work[c.i].stream].floor:
			// Dropped by retention: nothing to compare with. A duplicate
			// (the edge signed both); see DropBefore.
		case !ok || h != c.want:
			t.res[c.i] = forked(t.work[c.i].stream, c.seq)
		}
	}
	return nil
}

// copyRecords gives the new records their positions and commit time and
// COPYs them into the ledger.
func (t *txn) copyRecords(ctx context.Context) error {
	if t.total == 0 {
		return nil
	}
	t.recs = make([]Committed, 0, t.total)
	for i, v := range t.work {
		if t.res[i].Kind != KindCommitted {
			continue
		}
		t.res[i].CommittedAt = t.committedAt
		for j := t.starts[i]; j < len(v.recs); j++ {
			pos := t.nextPos
			t.nextPos++
			t.recs = append(t.recs, Committed{Stream: v.stream, Record: v.recs[j], Raw: v.seg.Records[j],
				Hash: v.links[j], CommittedAt: t.committedAt, Pos: pos})
		}
	}
	if err := copyLedger(ctx, t.tx, t.recs); err != nil {
		return fmt.Errorf("copy records: %w", err)
	}
	return nil
}

// advance queues, for the round trip after the COPY, the checkpoints of
// the committed inputs and the new watermarks of every touched stream.
func (t *txn) advance(b *pgx.Batch) {
	if t.total > 0 {
		var ce []string
		var cep, ch, csig [][]byte
		var cs []int64
		var ck []string
		for i, v := range t.work {
			if t.res[i].Kind == KindCommitted {
				ce = append(ce, v.stream.Edge)
				cep = append(cep, v.stream.Epoch[:])
				cs = append(cs, int64(v.cp.Seq))
				ch = append(ch, v.cp.Head[:])
				ck = append(ck, string(v.cp.KID))
				csig = append(csig, v.seg.Checkpoint)
			}
		}
		b.Queue(`INSERT INTO checkpoints (edge, epoch, seq, head, kid, signature, committed_at)
			SELECT t.*, $7::timestamptz FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::bytea[], $5::text[], $6::bytea[]) AS t
			ON CONFLICT DO NOTHING`, ce, cep, cs, ch, ck, csig, t.committedAt)
	}
	if t.mark {
		b.Queue(`INSERT INTO ledger_marks (pos, committed_at) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
			t.firstPos, t.committedAt)
	}
	var ue []string
	var uep, uh [][]byte
	var uhwm []int64
	var uc []bool
	for _, s := range t.byEdge {
		if st := t.states[s]; st.touched {
			ue = append(ue, s.Edge)
			uep = append(uep, s.Epoch[:])
			uhwm = append(uhwm, int64(st.hwm))
			uh = append(uh, bytes.Clone(st.head[:]))
			uc = append(uc, st.committed)
		}
	}
	var at *time.Time
	if t.total > 0 {
		at = &t.committedAt
	}
	b.Queue(`UPDATE streams s SET hwm = t.hwm, head = t.head,
			last_commit = CASE WHEN t.committed THEN $6::timestamptz ELSE s.last_commit END,
			last_seen = coalesce($6::timestamptz, now())
		FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::bytea[], $5::bool[]) AS t(edge, epoch, hwm, head, committed)
		WHERE s.edge = t.edge AND s.epoch = t.epoch`, ue, uep, uhwm, uh, uc, at)
}

// endOldEpochs queues the end of the old epochs: a stream seen for the
// first time is a new epoch of its edge, so the edge's open epochs end
// where their watermark stands, linked both ways. Only on the word of a
// key that is still active.
func (t *txn) endOldEpochs(b *pgx.Batch) {
	for _, s := range t.byEdge {
		st := t.states[s]
		if !st.isNew || !st.signed {
			continue
		}
		var prev *protocol.Stream
		var olds [][]byte
		for _, o := range t.byEdge {
			if so := t.states[o]; o.Edge == s.Edge && !so.isNew && !so.ended {
				olds = append(olds, o.Epoch[:])
				if prev == nil || so.firstSeen.After(t.states[*prev].firstSeen) {
					prev = &o
				}
			}
		}
		if prev == nil {
			continue
		}
		b.Queue(`UPDATE streams SET ended_at = now(), ended_at_seq = hwm, next_epoch = $2
			WHERE edge = $1 AND epoch = ANY($3)`, s.Edge, s.Epoch[:], olds)
		b.Queue(`UPDATE streams SET prev_epoch = $3 WHERE edge = $1 AND epoch = $2`,
			s.Edge, s.Epoch[:], prev.Epoch[:])
		t.l.opts.Logger.Info("new epoch", "edge", s.Edge, "epoch", s.Epoch.String(),
			"prev_epoch", prev.Epoch.String(), "prev_hwm", t.states[*prev].dbHWM)
	}
}

// fillWatermarks gives the outcomes that are not commits the stream's
// state as the committed transaction left it.
func (t *txn) fillWatermarks() {
	for i, v := range t.work {
		if t.res[i].Kind == KindCommitted {
			continue
		}
		st := t.states[v.stream]
		t.res[i].Watermark = Watermark{Stream: v.stream, HWM: st.hwm, Head: st.head, CommittedAt: st.lastCommit}
		if st.committed {
			t.res[i].CommittedAt = t.committedAt
		}
	}
}

func forked(s protocol.Stream, seq uint64) Outcome {
	return quarantined(s, protocol.NackChain,
		fmt.Sprintf("seq %d differs from the committed record (fork)", seq))
}

func streamOf(edge string, epoch []byte) protocol.Stream {
	s := protocol.Stream{Edge: edge}
	copy(s.Epoch[:], epoch)
	return s
}
