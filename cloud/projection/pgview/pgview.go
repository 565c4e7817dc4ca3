// Package pgview keeps the read models of cloud/projection in Postgres
// (the tables of migration 0007): Projection is the ledger.Projection that
// folds every commit batch into them inside the commit transaction (or,
// driven by a Follower, behind the commits in transactions of its own),
// and Rebuild recomputes them from the ledger beside the live ones,
// compares, and swaps.
//
// Invariants:
//   - Every commit's Apply first locks its projection's checkpoint row
//     (projection_checkpoints), then reads the prior rows of the keys the
//     batch touches, folds the batch in memory (projection.Fold: one
//     upsert per key per batch) and writes the rows, the appended logs and
//     the checkpoint (last_pos, digest) in the same transaction. The
//     checkpoint lock serialises the projection step of concurrent
//     commits, so no update is lost and no two commits wait on each
//     other's key rows (docs/REPORTS.md has the measured cost).
//   - Every writer of a projection's tables (Apply, Rebuild's swap) locks
//     and updates its checkpoint row first, in the same transaction. So
//     the rows read after the lock need no lock of their own: under READ
//     COMMITTED each read's snapshot is taken after the lock was granted
//     and sees every earlier writer's commit; under REPEATABLE READ or
//     SERIALIZABLE the lock itself fails (could not serialize) when a
//     writer committed after the transaction's snapshot. Not locking them
//     saves the server a tuple lock (and its WAL record) per row read.
//   - A Projection keeps the rows its last Apply read and wrote (rowCache)
//     and folds on them instead of reading them again, only while the
//     checkpoint row it locks is the very version that Apply wrote (xmin,
//     last_pos and digest); any other writer, or a rollback, leaves another
//     version, and they are dropped.
//   - The rows are a function of the ledger: Rebuild folds the ledger in
//     pos order into shadow tables and must find them equal, row for row.
package pgview

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
)

// Name is the name of the projection (its checkpoint row, and what
// `cloud projections rebuild --name` takes). The read models share one
// fold, and a transaction counted in one is counted in all, so they are
// one projection with one version and one checkpoint.
const Name = "pos"

// maxRounds bounds the read-and-fold rounds of one Apply. Each round reads
// the rows the previous fold asked for and did not have; a fold asks for
// new keys only when a row it read names them (a void names its sale's
// lines, whose rows are read with the sale: see voidedLinesSQL), or when a
// store it fetched makes it ask for that store's rows, so one read round
// trip is what a batch normally needs and three the most.
const maxRounds = 16

// Projection folds commit batches into the projection tables.
type Projection struct {
	Dir *Directory
	// Observe, when not nil, is told how long each Apply took (the
	// section the checkpoint lock serialises), for a metric.
	Observe func(time.Duration)

	name   string // of its checkpoint row
	suffix string // of its tables: "" for the live ones

	rows rowCache // the rows as its last Apply left them

	batches, records, lastPos atomic.Int64
}

// Stats are what a Projection has done since it was made.
type Stats struct {
	Batches int64 // commit batches folded
	Records int64 // records folded
	LastPos int64 // the highest position folded
}

// Stats returns p's counters.
func (p *Projection) Stats() Stats {
	return Stats{Batches: p.batches.Load(), Records: p.records.Load(), LastPos: p.lastPos.Load()}
}

var _ ledger.Projection = (*Projection)(nil)

// New returns the live projection.
func New(dir *Directory) *Projection {
	if dir == nil {
		dir = NewDirectory()
	}
	return &Projection{Dir: dir, name: Name}
}

// Checkpoint is one projection's checkpoint row.
type Checkpoint struct {
	Name    string
	Version int
	LastPos int64
	Digest  Digest
}

// Apply implements ledger.Projection.
func (p *Projection) Apply(ctx context.Context, tx pgx.Tx, recs []ledger.Committed) error {
	if len(recs) == 0 {
		return nil
	}
	if p.Observe != nil {
		start := time.Now()
		defer func() { p.Observe(time.Since(start)) }()
	}
	prs := make([]projection.Record, len(recs))
	for i, r := range recs {
		prs[i] = projection.Record{Pos: r.Pos, Record: r.Record}
	}
	var f folded
	defer func() {
		// Held from the checkpoint lock on (rowCache's lock order); let
		// go when Apply returns or panics, so that a caller that recovers
		// does not leave every later Apply waiting.
		if f.held {
			p.rows.mu.Unlock()
		}
	}()
	err := p.fold(ctx, tx, prs, &f)
	if err != nil {
		return fmt.Errorf("projection %s: %w", p.name, err)
	}
	d, cp := f.d, f.cp
	for _, r := range recs {
		cp.Digest.Add(r.Pos, r.Hash)
		cp.LastPos = max(cp.LastPos, r.Pos)
	}
	b := &pgx.Batch{}
	if err := queueWrites(b, d, p.suffix, p.tenantOf); err != nil {
		return err
	}
	var xmin int64
	b.Queue(`UPDATE projection_checkpoints SET last_pos = $2, digest = $3, updated_at = now() WHERE name = $1
		RETURNING xmin::text::bigint`, p.name, cp.LastPos, cp.Digest[:]).QueryRow(func(row pgx.Row) error {
		return row.Scan(&xmin)
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write projection %s: %w", p.name, err)
	}
	// The rows as this transaction leaves them; if it does not commit,
	// the next Apply finds another checkpoint version and drops them.
	p.rows.keep(f.c, d, cp, xmin)
	// Counted once folded, though the commit may still fail: these are
	// what this process did, not what is committed.
	p.batches.Add(1)
	p.records.Add(int64(len(recs)))
	for {
		cur := p.lastPos.Load()
		if cp.LastPos <= cur || p.lastPos.CompareAndSwap(cur, cp.LastPos) {
			break
		}
	}
	return nil
}

func (p *Projection) tenantOf(store string) string {
	p.Dir.mu.Lock()
	defer p.Dir.mu.Unlock()
	return p.Dir.stores[store].Tenant
}

// folded is what fold fills: the delta, the checkpoint as locked, the
// rows read (for the rowCache), and whether it holds the rowCache's lock
// (which the caller then releases, also when fold panics).
type folded struct {
	d    *projection.Delta
	cp   Checkpoint
	c    *cache
	held bool
}

// fold locks the checkpoint and folds recs on the rows they touch. The
// first fold, on the rows the Projection kept from its last Apply
// (rowCache) and nothing else, runs before any I/O and learns which other
// rows the batch touches (taking them as absent); the round trip that
// locks the checkpoint reads them (and the stores and edges the directory
// does not hold), and says whether the kept rows are still the tables'
// (else they are dropped). When they are, no other Apply changed them
// meanwhile, and none of the rows read exists (new transactions, the
// usual case), the first fold is the answer; otherwise each later round
// folds again and reads what it asked for and did not have, until it
// asks for nothing new.
func (p *Projection) fold(ctx context.Context, tx pgx.Tx, recs []projection.Record, f *folded) error {
	c := newCache()
	c.noteVoids(recs)
	f.c = c
	tried := map[string]bool{}
	rc := &p.rows
	var gen uint64
	var dir *snapshot
	var d *projection.Delta
	func() {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.attach(c)
		gen = rc.gen
		dir = p.Dir.snapshot(tried)
		d = projection.Fold(c, dir, recs)
	}()
	// The fold took every key it asked for and did not hold as absent:
	// it stands if the reads find none of them, the directory lacked no
	// store or edge, and the kept rows are unchanged and still hold.
	first := !dir.missing()

	var xmin int64
	rd := &reads{}
	queueLock(rd, p.name, &f.cp, &xmin)
	// The fold asks for rows of known stores only, so the rows and the
	// missing stores and edges are read in the same round trip; a store
	// found now makes the next fold ask for its rows.
	if dir.missing() {
		dir.queueFetch(rd)
	}
	c.queueFetch(rd, p.suffix, p.tenantOf)
	if err := rd.run(ctx, tx); err != nil {
		return err
	}
	if c.found() > 0 {
		first = false
	}
	rc.mu.Lock()
	f.held = true
	if !rc.valid(f.cp, xmin) {
		first = false
	}
	rc.attach(c)
	if first && rc.gen == gen {
		f.d = d
		return nil
	}
	for range maxRounds {
		dir := p.Dir.snapshot(tried)
		d := projection.Fold(c, dir, recs)
		if !dir.missing() && !c.missing() {
			f.d = d
			return nil
		}
		rd := &reads{}
		if dir.missing() {
			dir.queueFetch(rd)
		}
		c.queueFetch(rd, p.suffix, p.tenantOf)
		if err := rd.run(ctx, tx); err != nil {
			return err
		}
	}
	return fmt.Errorf("the fold still asked for rows it had not read after %d rounds", maxRounds)
}

// queueLock queues the lock of the checkpoint row of name into cp, and
// its xmin (the transaction that last wrote it) into xmin, making the row
// first when there is none (at the current Version, from nothing).
func queueLock(rd *reads, name string, cp *Checkpoint, xmin *int64) {
	rd.b.Queue(`INSERT INTO projection_checkpoints (name, version, last_pos, digest) VALUES ($1, $2, 0, $3)
		ON CONFLICT DO NOTHING`, name, projection.Version, make([]byte, 32))
	rd.fn = append(rd.fn, func(br pgx.BatchResults) error {
		_, err := br.Exec()
		return err
	})
	rd.query(`SELECT version, last_pos, digest, xmin::text::bigint FROM projection_checkpoints WHERE name = $1 FOR UPDATE`, []any{name},
		func(rows pgx.Rows) error {
			var dg []byte
			*cp = Checkpoint{Name: name}
			_, err := pgx.CollectExactlyOneRow(rows, func(r pgx.CollectableRow) (struct{}, error) {
				return struct{}{}, r.Scan(&cp.Version, &cp.LastPos, &dg, xmin)
			})
			if err != nil {
				return fmt.Errorf("lock checkpoint of projection %s: %w", name, err)
			}
			copy(cp.Digest[:], dg)
			return nil
		})
}

// lockCheckpoint locks the checkpoint row of name (see queueLock).
func lockCheckpoint(ctx context.Context, tx pgx.Tx, name string) (Checkpoint, error) {
	var cp Checkpoint
	var xmin int64
	rd := &reads{}
	queueLock(rd, name, &cp, &xmin)
	return cp, rd.run(ctx, tx)
}

// ReadCheckpoint returns the checkpoint row of name, and false when there
// is none.
func ReadCheckpoint(ctx context.Context, q ledger.Querier, name string) (Checkpoint, bool, error) {
	rows, err := q.Query(ctx, `SELECT version, last_pos, digest FROM projection_checkpoints WHERE name = $1`, name)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read checkpoint of projection %s: %w", name, err)
	}
	cp := Checkpoint{Name: name}
	var dg []byte
	_, err = pgx.CollectExactlyOneRow(rows, func(r pgx.CollectableRow) (struct{}, error) {
		return struct{}{}, r.Scan(&cp.Version, &cp.LastPos, &dg)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, fmt.Errorf("read checkpoint of projection %s: %w", name, err)
	}
	copy(cp.Digest[:], dg)
	return cp, true, nil
}
