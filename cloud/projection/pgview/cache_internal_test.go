package pgview

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
	pt "github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// batchesTx notes the number of statements of every batch sent through it.
type batchesTx struct {
	pgx.Tx
	mu    *sync.Mutex
	sizes *[]int
}

func (b batchesTx) SendBatch(ctx context.Context, batch *pgx.Batch) pgx.BatchResults {
	b.mu.Lock()
	*b.sizes = append(*b.sizes, batch.Len())
	b.mu.Unlock()
	return b.Tx.SendBatch(ctx, batch)
}

// batchesProjection is p, noting the batches of each Apply.
type batchesProjection struct {
	p     *Projection
	mu    sync.Mutex
	sizes []int
}

func (c *batchesProjection) Apply(ctx context.Context, tx pgx.Tx, recs []ledger.Committed) error {
	return c.p.Apply(ctx, batchesTx{Tx: tx, mu: &c.mu, sizes: &c.sizes}, recs)
}

func (c *batchesProjection) take() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sizes
	c.sizes = nil
	return s
}

// TestKeptRowsSaveReads: a commit whose keys the last commit touched (the
// same store, day, till, SKU and tender) reads only its new transaction
// from the database, with the checkpoint's lock: the day's rows are the
// ones the Projection kept. The rows still equal the fold.
func TestKeptRowsSaveReads(t *testing.T) {
	r := newRig(t)
	bp := &batchesProjection{p: r.p}
	r.l = ledger.New(r.pool, ledger.Options{Projections: []ledger.Projection{bp}})
	l := pt.New(t)
	r.commit(l.Add("e1", "a", pos.TypeSaleCompleted, pt.Txn(pt.Day, "A", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20))))
	first := bp.take()
	r.commit(l.Add("e1", "b", pos.TypeSaleCompleted, pt.Txn(pt.Day, "B", "USD", false, 0, "card", 0, pt.Line("apple", 2000, 250, 0, 40))))
	second := bp.take()
	if len(second) != 2 {
		t.Fatalf("batches of the second Apply: %v, want two (read, write)", second)
	}
	// The checkpoint's insert-if-missing and lock, and the transaction:
	// none of the sales, SKU, hour, tender, on-hand or till rows.
	if second[0] != 3 {
		t.Errorf("the second commit's read batch has %d statements, want 3 (checkpoint insert and lock, the transaction); the first had %d",
			second[0], first[0])
	}
	for _, d := range r.reference() {
		t.Errorf("live differs from the fold: %v", d)
	}
}

// TestRolledBackApplyIsNotKept: the rows an Apply leaves in memory are
// dropped when its transaction does not commit (the next Apply finds the
// checkpoint row another version), so a commit that rolled back after its
// projection step counts nowhere.
func TestRolledBackApplyIsNotKept(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	l := pt.New(t)
	sale := func(txn string) pos.Transaction {
		return pt.Txn(pt.Day, txn, "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20))
	}
	r.commit(l.Add("e1", "a", pos.TypeSaleCompleted, sale("A")))
	body, err := protocol.NewBody(sale("GHOST"))
	if err != nil {
		t.Fatal(err)
	}
	ghost := ledger.Committed{Pos: 2, Hash: protocol.Hash{2}, Record: protocol.Record{V: protocol.RecordVersion, Edge: "e1", Seq: 2,
		ID: "ghost", Type: pos.TypeSaleCompleted, EdgeTime: l.Recs[0].EdgeTime, Body: []byte(body)}}
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.p.Apply(ctx, tx, []ledger.Committed{ghost}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	r.commit(l.Add("e1", "b", pos.TypeSaleCompleted, sale("B")))
	for _, d := range r.reference() {
		t.Errorf("live differs from the fold: %v", d)
	}
	if n := r.count(`SELECT transactions FROM sales_summary WHERE store = 's1'`); n != 2 {
		t.Errorf("%d transactions, want 2 (A and B; not the rolled-back one)", n)
	}
}

// TestKeptRowsOfAnotherWriter: two Projections (two replicas) commit in
// turn into one database; each finds, at its checkpoint lock, that the
// other wrote last, and reads the rows again rather than fold on the ones
// it kept.
func TestKeptRowsOfAnotherWriter(t *testing.T) {
	r := newRig(t)
	a := r.l
	b := ledger.New(r.pool, ledger.Options{Projections: []ledger.Projection{New(nil)}})
	recs := pt.Random(t, 4, 300).Recs
	for i := 0; i < len(recs); i += 10 {
		r.l = []*ledger.Ledger{a, b}[(i/10)%2]
		r.commit(recs[i:min(i+10, len(recs))]...)
	}
	for _, d := range r.reference() {
		t.Errorf("live differs from the fold: %v", d)
	}
}

// TestKeptRowsNeedTheirOwnVersion: the rows kept hold only while the
// checkpoint row is the very version the last Apply wrote, not one with
// the same position and digest. Here an Apply rolls back, and another
// writer (a replica's Projection) then folds a different record under the
// same position and hash (no ledger makes that; a writer that broke the
// rules could): the kept rows must not be used.
func TestKeptRowsNeedTheirOwnVersion(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	l := pt.New(t)
	r.commit(l.Add("e1", "a", pos.TypeSaleCompleted, pt.Txn(pt.Day, "A", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20))))
	at := func(p int64, txn string, qty int64) ledger.Committed {
		body, err := protocol.NewBody(pt.Txn(pt.Day, txn, "USD", false, 0, "card", 0, pt.Line("apple", qty, 250, 0, 20)))
		if err != nil {
			t.Fatal(err)
		}
		return ledger.Committed{Pos: p, Hash: protocol.Hash{byte(p)}, Record: protocol.Record{V: protocol.RecordVersion, Edge: "e1",
			Seq: uint64(p), ID: txn, Type: pos.TypeSaleCompleted, EdgeTime: l.Recs[0].EdgeTime, Body: []byte(body)}}
	}
	apply := func(p *Projection, c ledger.Committed, commit bool) {
		tx, err := r.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if err := p.Apply(ctx, tx, []ledger.Committed{c}); err != nil {
			t.Fatal(err)
		}
		if commit {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(r.p, at(2, "G", 5000), false)
	apply(New(nil), at(2, "B", 2000), true)
	apply(r.p, at(3, "C", 3000), true)
	if n := r.count(`SELECT items FROM sales_summary WHERE store = 's1'`); n != 1000+2000+3000 {
		t.Errorf("%d items, want %d (A, B and C; not the rolled-back G)", n, 1000+2000+3000)
	}
}

// TestKeptRowsOverflow: when the kept rows pass maxCached they are
// dropped and the Projection reads again the rows it needs, which then
// exist: a fold made before those reads (on none of them) must not stand.
func TestKeptRowsOverflow(t *testing.T) {
	defer func(n int) { maxCached = n }(maxCached)
	maxCached = 8
	r := newRig(t)
	r.commitSplit(5, pt.Random(t, 5, 300).Recs)
	for _, d := range r.reference() {
		t.Errorf("live differs from the fold: %v", d)
	}
}

// failOnce is a projection applied after the pgview one in the commit
// transaction: armed, its next Apply fails with a serialization failure,
// which ledger.Commit answers by running the whole commit transaction
// again.
type failOnce struct {
	armed atomic.Bool
	calls atomic.Int32
}

func (f *failOnce) Apply(context.Context, pgx.Tx, []ledger.Committed) error {
	f.calls.Add(1)
	if f.armed.CompareAndSwap(true, false) {
		return &pgconn.PgError{Code: "40001", Message: "injected serialization failure"}
	}
	return nil
}

// TestCommitRetryDropsKeptRows: a commit transaction whose first attempt
// fails after the projection's Apply returned (a later projection step, or
// COMMIT itself, fails with a serialization failure) is run again by
// ledger.Commit in a new transaction. The rows the failed attempt kept
// (its sale counted) must not be folded on by the retry: the retry counts
// the sale once, and the rows equal the fold.
func TestCommitRetryDropsKeptRows(t *testing.T) {
	sale := func(txn string) pos.Transaction {
		return pt.Txn(pt.Day, txn, "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20))
	}
	t.Run("later projection", func(t *testing.T) {
		r := newRig(t)
		fo := &failOnce{}
		r.l = ledger.New(r.pool, ledger.Options{Projections: []ledger.Projection{r.p, fo}})
		l := pt.New(t)
		r.commit(l.Add("e1", "a", pos.TypeSaleCompleted, sale("A")))
		fo.armed.Store(true)
		r.commit(l.Add("e1", "b", pos.TypeSaleCompleted, sale("B")))
		if n := fo.calls.Load(); n != 3 {
			t.Fatalf("the later projection ran %d times, want 3 (the first commit, the failed attempt, the retry)", n)
		}
		checkTwoSales(t, r)
	})
	t.Run("commit", func(t *testing.T) {
		r := newRig(t)
		l := pt.New(t)
		r.commit(l.Add("e1", "a", pos.TypeSaleCompleted, sale("A")))
		// The checkpoint row's update fails the first COMMIT after this
		// (a deferred trigger, run at COMMIT; the sequence, which no
		// rollback undoes, lets it fail once).
		r.exec(`CREATE SEQUENCE fail_commit`)
		r.exec(`CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				IF nextval('fail_commit') = 1 THEN
					RAISE EXCEPTION 'injected serialization failure at commit' USING ERRCODE = 'serialization_failure';
				END IF;
				RETURN NULL;
			END $$`)
		r.exec(`CREATE CONSTRAINT TRIGGER fail_commit AFTER UPDATE ON projection_checkpoints
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit()`)
		r.commit(l.Add("e1", "b", pos.TypeSaleCompleted, sale("B")))
		if n := r.count(`SELECT last_value FROM fail_commit`); n != 2 {
			t.Fatalf("the checkpoint's update reached COMMIT %d times, want 2 (the failed attempt, the retry)", n)
		}
		checkTwoSales(t, r)
	})
}

func checkTwoSales(t *testing.T, r *rig) {
	t.Helper()
	for _, d := range r.reference() {
		t.Errorf("live differs from the fold: %v", d)
	}
	if n := r.count(`SELECT transactions FROM sales_summary WHERE store = 's1'`); n != 2 {
		t.Errorf("%d transactions, want 2 (A, and B once)", n)
	}
	if n := r.count(`SELECT count(*) FROM anomalies`); n != 0 {
		t.Errorf("%d anomalies, want none (B is no duplicate of itself)", n)
	}
}

// cancelAtWrite is p, cancelling the commit's context when its Apply
// sends its writes: the Apply fails after its fold, before it keeps
// anything.
type cancelAtWrite struct {
	p      *Projection
	cancel atomic.Pointer[context.CancelFunc]
}

type cancelTx struct {
	pgx.Tx
	cancel context.CancelFunc
}

func (c cancelTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if q := b.QueuedQueries; len(q) > 0 && strings.HasPrefix(q[len(q)-1].SQL, "UPDATE projection_checkpoints") {
		c.cancel()
	}
	return c.Tx.SendBatch(ctx, b)
}

func (c *cancelAtWrite) Apply(ctx context.Context, tx pgx.Tx, recs []ledger.Committed) error {
	if f := c.cancel.Swap(nil); f != nil {
		tx = cancelTx{Tx: tx, cancel: *f}
	}
	return c.p.Apply(ctx, tx, recs)
}

// TestCancelledApplyKeepsTheRowsBefore: a commit whose context ends while
// its Apply writes fails and commits nothing; the rows kept from the
// commit before still hold (the checkpoint is the version that commit
// wrote) and are the ones the redelivered batch folds on.
func TestCancelledApplyKeepsTheRowsBefore(t *testing.T) {
	r := newRig(t)
	cw := &cancelAtWrite{p: r.p}
	r.l = ledger.New(r.pool, ledger.Options{Projections: []ledger.Projection{cw}})
	l := pt.New(t)
	sale := func(txn string) pos.Transaction {
		return pt.Txn(pt.Day, txn, "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20))
	}
	r.commit(l.Add("e1", "a", pos.TypeSaleCompleted, sale("A")))
	in := r.inputs(l.Add("e1", "b", pos.TypeSaleCompleted, sale("B")))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cw.cancel.Store(&cancel)
	if err := r.commitInputs(ctx, in); err == nil {
		t.Fatal("the commit whose context ended during its Apply succeeded")
	}
	if n := r.count(`SELECT transactions FROM sales_summary WHERE store = 's1'`); n != 1 {
		t.Fatalf("%d transactions after the failed commit, want 1", n)
	}
	bp := &batchesProjection{p: r.p}
	r.l = ledger.New(r.pool, ledger.Options{Projections: []ledger.Projection{bp}})
	if err := r.commitInputs(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if b := bp.take(); len(b) != 2 || b[0] != 3 {
		t.Errorf("batches of the redelivered commit: %v, want [3 n] (the kept rows held: the lock and the transaction read)", b)
	}
	checkTwoSales(t, r)
}

// panicTx panics at its nth SendBatch.
type panicTx struct {
	pgx.Tx
	n *int
}

func (p panicTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if *p.n--; *p.n == 0 {
		panic("injected panic")
	}
	return p.Tx.SendBatch(ctx, b)
}

// TestPanicInApplyReleasesKeptRows: an Apply that panics (here in the
// fold before the lock, then in a read round after it) must not leave the
// kept rows' mutex held, or every later Apply of the process would wait
// on it for ever; a caller that recovers (an HTTP server does) goes on
// committing.
func TestPanicInApplyReleasesKeptRows(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	l := pt.New(t)
	rec := l.Add("e1", "a", pos.TypeSaleCompleted, pt.Txn(pt.Day, "A", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20)))
	c := ledger.Committed{Pos: rec.Pos, Hash: protocol.Hash{1}, Record: rec.Record}
	apply := func(tx pgx.Tx) (recovered any) {
		defer func() { recovered = recover() }()
		_ = r.p.Apply(ctx, tx, []ledger.Committed{c})
		return nil
	}
	for _, step := range []struct {
		name string
		at   func(pgx.Tx) pgx.Tx
	}{
		// A Projection without a Directory panics in its first fold.
		{"first fold", func(tx pgx.Tx) pgx.Tx { r.p.Dir = nil; return tx }},
		// The store fetched in the first round trip makes the fold read
		// its rows in a second, which panics.
		{"second read", func(tx pgx.Tx) pgx.Tx { n := 2; return panicTx{Tx: tx, n: &n} }},
	} {
		r.p.Dir = NewDirectory()
		tx, err := r.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if apply(step.at(tx)) == nil {
			t.Errorf("%s: no panic", step.name)
		}
		tx.Rollback(ctx)
		if !r.p.rows.mu.TryLock() {
			t.Fatalf("%s: the kept rows' mutex is still held after the Apply panicked", step.name)
		}
		r.p.rows.mu.Unlock()
	}
	r.p.Dir = NewDirectory()
	r.commit(l.Add("e1", "b", pos.TypeSaleCompleted, pt.Txn(pt.Day, "B", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20))))
	if n := r.count(`SELECT transactions FROM sales_summary WHERE store = 's1'`); n != 1 {
		t.Errorf("%d transactions, want 1 (B; A's Applies panicked and rolled back)", n)
	}
}

// BenchmarkKeptRowsMemory reports what the kept rows cost in memory: the
// heap a rowCache holds per transaction row (the many: two lines each,
// its strings allocated apart, as the fold's decoded bodies give them),
// and per till day row (two tenders in its ledger and its Z, a reason),
// at maxCached rows. Run with -benchtime 1x.
func BenchmarkKeptRowsMemory(b *testing.B) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	s := func(v string) string { return strings.Clone(v) }
	for range b.N {
		for _, kind := range []string{"txn", "till"} {
			rc := &rowCache{}
			before := heap()
			n := 0
			for n < maxCached {
				d := &projection.Delta{Tables: projection.Tables{Txns: map[projection.TxnKey]projection.Txn{},
					Tills: map[pos.TillKey]projection.Till{}}}
				for range 1000 {
					n++
					switch kind {
					case "txn":
						d.Txns[projection.TxnKey{Store: s("s1"), Terminal: s("T1"), BusinessDay: s(pt.Day), Txn: fmt.Sprintf("T%07d", n)}] =
							projection.Txn{Pos: int64(n), ID: fmt.Sprintf("01JD%022d", n), Type: s(pos.TypeSaleCompleted), Currency: s("USD"),
								Tax: 20, Net: 250, Lines: []projection.TxnLine{{SKU: s("sku-00042"), Qty: 1000, Gross: 250}, {SKU: s("sku-00043"), Qty: 2000, Gross: 200}}}
					case "till":
						tenders := func() []pos.TenderTally {
							return []pos.TenderTally{{Type: s("card"), Count: 10, Amount: 2500}, {Type: s("cash"), Count: 5, Amount: 1200}}
						}
						k := pos.TillKey{Store: s("s1"), Terminal: fmt.Sprintf("T%07d", n), BusinessDay: s(pt.Day), Currency: s("USD")}
						z := pos.TillClosed{Store: k.Store, Terminal: k.Terminal, BusinessDay: k.BusinessDay, Currency: k.Currency, Tenders: tenders()}
						d.Tills[k] = projection.Till{Ledger: z, Z: &pos.TillClosed{Store: k.Store, Terminal: k.Terminal, BusinessDay: k.BusinessDay,
							Currency: k.Currency, Tenders: tenders()}, ZPos: int64(n), ZID: fmt.Sprintf("01JD%022d", n), ZCount: 1,
							Status: projection.StatusMismatch, Reason: []string{fmt.Sprintf("cash: the Z says %d, the ledger holds %d", n, n+1)}}
					}
				}
				rc.keep(newCache(), d, Checkpoint{}, 1)
			}
			after := heap()
			b.ReportMetric(float64(after-before)/float64(rc.n), "B/"+kind)
			runtime.KeepAlive(rc)
		}
	}
}

// beforeLockTx runs fn once, before it sends its first batch (the one
// that locks the checkpoint): between the fold an Apply makes on the kept
// rows and its lock.
type beforeLockTx struct {
	pgx.Tx
	fn *func()
}

func (b beforeLockTx) SendBatch(ctx context.Context, batch *pgx.Batch) pgx.BatchResults {
	if f := *b.fn; f != nil {
		*b.fn = nil
		f()
	}
	return b.Tx.SendBatch(ctx, batch)
}

// TestKeptRowsChangedBeforeTheLock: an Apply folds on the kept rows, and
// before it locks the checkpoint another Apply of the same Projection (a
// commit of another goroutine, or the follower) locks, writes, keeps its
// rows and commits. The first then finds the checkpoint the version the
// kept rows name, and its reads find nothing (a new transaction), but its
// fold was made on the rows as they were before the other Apply: it must
// fold again, or the other's sale is lost from the day's rows.
func TestKeptRowsChangedBeforeTheLock(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	l := pt.New(t)
	sale := func(txn string) pos.Transaction {
		return pt.Txn(pt.Day, txn, "USD", false, 0, "card", 0, pt.Line("apple", 1000, 250, 0, 20))
	}
	r.commit(l.Add("e1", "a", pos.TypeSaleCompleted, sale("A")))
	committed := func(rec projection.Record) ledger.Committed {
		return ledger.Committed{Pos: rec.Pos, Hash: protocol.Hash{byte(rec.Pos)}, Record: rec.Record}
	}
	b := committed(l.Add("e1", "b", pos.TypeSaleCompleted, sale("B")))
	c := committed(l.Add("e1", "c", pos.TypeSaleCompleted, sale("C")))
	other := func() {
		if err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error { return r.p.Apply(ctx, tx, []ledger.Committed{c}) }); err != nil {
			t.Error(err)
		}
	}
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		return r.p.Apply(ctx, beforeLockTx{Tx: tx, fn: &other}, []ledger.Committed{b})
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := r.count(`SELECT transactions FROM sales_summary WHERE store = 's1'`); n != 3 {
		t.Errorf("%d transactions, want 3 (A, B and C)", n)
	}
	if n := r.count(`SELECT on_hand FROM inventory_on_hand WHERE store = 's1' AND sku = 'apple'`); n != -3000 {
		t.Errorf("on hand %d, want -3000", n)
	}
}

// TestKeptRowsUnderFailuresAndReplicas mixes what invalidates the kept
// rows: random batches of the random ledger, committed mostly by one
// process and sometimes by a replica, a third of them with a first
// attempt that fails after the projection's Apply (and is run again by
// ledger.Commit), with a bound on the kept rows low enough to be passed
// often. The rows must equal the fold of the whole ledger.
func TestKeptRowsUnderFailuresAndReplicas(t *testing.T) {
	defer func(n int) { maxCached = n }(maxCached)
	maxCached = 60
	r := newRig(t)
	fo := &failOnce{}
	a := ledger.New(r.pool, ledger.Options{Projections: []ledger.Projection{r.p, fo}})
	b := ledger.New(r.pool, ledger.Options{Projections: []ledger.Projection{New(nil), fo}})
	rng := rand.New(rand.NewPCG(3, 9))
	recs := pt.Random(t, 11, 600).Recs
	for len(recs) > 0 {
		n := min(len(recs), 1+rng.IntN(20))
		r.l = a
		if rng.IntN(5) == 0 {
			r.l = b
		}
		fo.armed.Store(rng.IntN(3) == 0)
		r.commit(recs[:n]...)
		recs = recs[n:]
	}
	for _, d := range r.reference() {
		t.Errorf("live differs from the fold: %v", d)
	}
}
