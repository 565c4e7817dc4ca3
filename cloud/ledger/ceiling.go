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

// CeilingColumns are the ledger columns a plain COPY writes.
var CeilingColumns = []string{"edge", "epoch", "seq", "pos", "committed_at", "device", "event_id", "type",
	"class", "device_ts", "edge_time", "hlc", "shed", "hash", "raw"}

// CeilingRows returns the ledger rows of segs (in CeilingColumns) as a
// plain COPY would write them, committed at now, each with the position
// pos returns: distinct and increasing, as commits number theirs (equal
// values would make the pos indexes unfairly cheap, by B-tree
// deduplication).
func CeilingRows(segs []*protocol.Segment, pos func() int64, now time.Time) ([][]any, error) {
	var rows [][]any
	for _, seg := range segs {
		for _, raw := range seg.Records {
			r, err := protocol.DecodeRecord(raw)
			if err != nil {
				return nil, fmt.Errorf("ceiling rows of %s: %w", seg.Stream(), err)
			}
			h := r.LinkHash(raw)
			rows = append(rows, []any{seg.Edge, seg.Epoch[:], int64(r.Seq), pos(), now, r.Device, r.ID, r.Type,
				string(r.Class), time.UnixMilli(r.TS), r.EdgeTime.Time(), int64(r.EdgeTime), r.IsTombstone(), h[:], raw})
		}
	}
	return rows, nil
}

// PlainCopy writes rows into the ledger table with one COPY in one
// transaction, and commits.
func PlainCopy(ctx context.Context, conn *pgx.Conn, rows [][]any) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"ledger"}, CeilingColumns, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("plain COPY of %d rows: %w", len(rows), err)
	}
	return tx.Commit(ctx)
}
