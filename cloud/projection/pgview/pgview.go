// Package pgview keeps the read models of cloud/projection in Postgres
// (the tables of migration 0007): Projection is the ledger.Projection that
// folds every commit batch into them inside the commit transaction, and
// Rebuild recomputes them from the ledger beside the live ones, compares,
// and swaps.
//
// Invariants:
//   - Every commit's Apply first locks its projection's checkpoint row
//     (projection_checkpoints), then reads the prior rows of the keys the
//     batch touches with SELECT ... FOR UPDATE, in key order, folds the
//     batch in memory (projection.Fold: one upsert per key per batch) and
//     writes the rows, the appended logs and the checkpoint (last_pos,
//     digest) in the same transaction. The checkpoint lock serialises the
//     projection step of concurrent commits, so no update is lost and no
//     two commits wait on each other's key rows (docs/REPORTS.md has the
//     measured cost).
//   - The rows are a function of the ledger: Rebuild folds the ledger in
//     pos order into shadow tables and must find them equal, row for row.
package pgview

import (
	"context"
	"errors"
	"fmt"

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
// lines), so two or three rounds are the most a batch needs.
const maxRounds = 16

// Projection folds commit batches into the projection tables.
type Projection struct {
	Dir *Directory

	name   string // of its checkpoint row
	suffix string // of its tables: "" for the live ones
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
	cp, err := lockCheckpoint(ctx, tx, p.name)
	if err != nil {
		return err
	}
	prs := make([]projection.Record, len(recs))
	for i, r := range recs {
		prs[i] = projection.Record{Pos: r.Pos, Record: r.Record}
		cp.Digest.Add(r.Pos, r.Hash)
		cp.LastPos = max(cp.LastPos, r.Pos)
	}
	d, err := p.fold(ctx, tx, prs)
	if err != nil {
		return err
	}
	b := &pgx.Batch{}
	if err := queueWrites(b, d, p.suffix, p.tenantOf); err != nil {
		return err
	}
	b.Queue(`UPDATE projection_checkpoints SET last_pos = $2, digest = $3, updated_at = now() WHERE name = $1`,
		p.name, cp.LastPos, cp.Digest[:])
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write projection %s: %w", p.name, err)
	}
	return nil
}

func (p *Projection) tenantOf(store string) string {
	p.Dir.mu.Lock()
	defer p.Dir.mu.Unlock()
	return p.Dir.stores[store].Tenant
}

// fold folds recs on the rows they touch, reading those rows (and the
// stores and edges the directory does not hold) round by round until the
// fold asks for nothing it does not have.
func (p *Projection) fold(ctx context.Context, tx pgx.Tx, recs []projection.Record) (*projection.Delta, error) {
	c := newCache()
	tried := map[string]bool{}
	for range maxRounds {
		dir := p.Dir.snapshot(tried)
		d := projection.Fold(c, dir, recs)
		if !dir.missing() && !c.missing() {
			return d, nil
		}
		if dir.missing() {
			// The stores first: the rows to read are keyed by tenant.
			clearMisses(c)
			if err := dir.fetch(ctx, tx); err != nil {
				return nil, fmt.Errorf("projection %s: %w", p.name, err)
			}
			continue
		}
		if err := c.fetch(ctx, tx, p.suffix, p.tenantOf); err != nil {
			return nil, fmt.Errorf("projection %s: %w", p.name, err)
		}
	}
	return nil, fmt.Errorf("projection %s: the fold still asked for rows it had not read after %d rounds", p.name, maxRounds)
}

func clearMisses(c *cache) {
	clear(c.sales.miss)
	clear(c.sku.miss)
	clear(c.hour.miss)
	clear(c.tenders.miss)
	clear(c.onHand.miss)
	clear(c.telemetry.miss)
	clear(c.tills.miss)
	clear(c.txns.miss)
}

// lockCheckpoint locks the checkpoint row of name, making it first when
// there is none (at the current Version, from nothing).
func lockCheckpoint(ctx context.Context, tx pgx.Tx, name string) (Checkpoint, error) {
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO projection_checkpoints (name, version, last_pos, digest) VALUES ($1, $2, 0, $3)
		ON CONFLICT DO NOTHING`, name, projection.Version, make([]byte, 32))
	b.Queue(`SELECT version, last_pos, digest FROM projection_checkpoints WHERE name = $1 FOR UPDATE`, name)
	br := tx.SendBatch(ctx, b)
	defer br.Close()
	cp := Checkpoint{Name: name}
	var dg []byte
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&cp.Version, &cp.LastPos, &dg)
	}
	if err != nil {
		return cp, fmt.Errorf("lock checkpoint of projection %s: %w", name, err)
	}
	copy(cp.Digest[:], dg)
	return cp, br.Close()
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
