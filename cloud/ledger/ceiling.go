package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/protocol"
)

// The raw ceiling every commit figure is a ratio to (DESIGN.md, "Testing
// and measuring"): plain COPY of the same rows into the same ledger table,
// with no verification, no watermark, no projections and no lock. The
// ledger benchmark (bench_test.go) and `sim load` both measure it with
// this code, so that their ratios compare.

// CeilingBatch is the ledger rows of some segments as PlainCopy writes
// them.
type CeilingBatch struct{ recs []Committed }

// Len is how many rows the batch holds.
func (b CeilingBatch) Len() int { return len(b.recs) }

// CeilingRecords returns the ledger rows of segs for PlainCopy, committed
// at now, each with the position pos returns: distinct and increasing, as
// commits number theirs (equal values would make the pos indexes unfairly
// cheap, by B-tree deduplication).
func CeilingRecords(segs []*protocol.Segment, pos func() int64, now time.Time) (CeilingBatch, error) {
	var b CeilingBatch
	for _, seg := range segs {
		for _, raw := range seg.Records {
			r, err := protocol.DecodeRecord(raw)
			if err != nil {
				return b, fmt.Errorf("ceiling rows of %s: %w", seg.Stream(), err)
			}
			b.recs = append(b.recs, Committed{Stream: seg.Stream(), Record: r, Raw: raw, Hash: r.LinkHash(raw),
				CommittedAt: now, Pos: pos()})
		}
	}
	return b, nil
}

// PlainCopy writes the batch into the ledger table with one COPY in one
// transaction, and commits. It encodes the rows with the commit's own
// binary COPY writer (copyrows.go), so that the ceiling spends no more
// CPU on encoding than a commit does: with pgx's CopyFrom it spent about
// 0.35 ms more per 1,000 rows, and the commit's ratio read higher than the
// database side earns.
func PlainCopy(ctx context.Context, conn *pgx.Conn, b CeilingBatch) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if err := copyLedger(ctx, tx, b.recs); err != nil {
		return fmt.Errorf("plain COPY of %d rows: %w", len(b.recs), err)
	}
	return tx.Commit(ctx)
}
