package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/protocol"
)

// Querier is what ReadCommitted needs: a pool, a connection or a
// transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// ReadCommitted returns the committed records with after < pos <= through,
// in pos order, at most limit of them (limit <= 0: no limit), as Commit
// gave them to the projections. Projection rebuilds read the ledger
// through it.
//
// Callers that page through a ledger still being written must bound
// through by a position below which every record is known to be visible
// (a projection's checkpoint read under its lock is one): a record whose
// commit is still in flight is not returned, and a reader that moved past
// it would never see it.
func ReadCommitted(ctx context.Context, q Querier, after, through int64, limit int) ([]Committed, error) {
	sql := `SELECT edge, epoch, pos, committed_at, hash, raw FROM ledger WHERE pos > $1 AND pos <= $2 ORDER BY pos`
	args := []any{after, through}
	if limit > 0 {
		sql += ` LIMIT $3`
		args = append(args, limit)
	}
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read ledger after pos %d: %w", after, err)
	}
	var out []Committed
	var edge string
	var epoch, hash, raw []byte
	var pos int64
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&edge, &epoch, &pos, &at, &hash, &raw}, func() error {
		r, err := protocol.DecodeRecord(raw)
		if err != nil {
			return fmt.Errorf("record at pos %d: %w", pos, err)
		}
		c := Committed{Stream: streamOf(edge, epoch), Record: r, Raw: raw, CommittedAt: at, Pos: pos}
		if len(hash) != len(c.Hash) {
			return fmt.Errorf("record at pos %d: link hash is %d bytes, not %d", pos, len(hash), len(c.Hash))
		}
		copy(c.Hash[:], hash)
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read ledger after pos %d: %w", after, err)
	}
	return out, nil
}

// LastPos returns the highest committed position below the horizon
// (BelowHorizon; 0 for an empty ledger): every record at or below it is
// committed and visible, none still in flight, so ReadCommitted with it as
// through misses nothing. (The highest visible position would not do:
// commits of different edges run at once, and one with lower positions may
// still be in flight.)
func LastPos(ctx context.Context, q Querier) (int64, error) {
	rows, err := q.Query(ctx, `SELECT coalesce(max(pos), 0) FROM ledger WHERE `+BelowHorizon)
	if err != nil {
		return 0, fmt.Errorf("last ledger position: %w", err)
	}
	p, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, fmt.Errorf("last ledger position: %w", err)
	}
	return p, nil
}
