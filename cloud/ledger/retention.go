package ledger

import (
	"context"
	"fmt"
	"time"
)

// DropBefore drops the ledger's rows committed before the start of the
// UTC month of before, whole partitions (native) or chunks (TimescaleDB)
// at a time, and returns what it dropped. It is retention: deliberate, run
// by an operator (docs/OPERATIONS.md), never by the service.
//
// In the same transaction it first moves each stream's floor (streams.
// floor_seq) up to the highest seq it drops. Without that, an honest
// redelivery of records that are gone would be a fork: a duplicate that
// ends at a stored checkpoint is still compared with the checkpoint
// (checkpoints are kept), but one that ends between checkpoints has no
// row left to compare with. At or below the floor such a duplicate is
// taken as a duplicate: the records it would be compared with no longer
// exist, and the edge signed both.
//
// Dropping a native partition takes an exclusive lock on the ledger for
// the moment of the DROP: commits and reads wait for it, briefly. The
// DEFAULT partition is never dropped.
func DropBefore(ctx context.Context, db DB, before time.Time) ([]string, error) {
	cut := monthStart(before)
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("drop ledger before %s: %w", cut.Format("2006-01"), err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	mode, err := Partitioning(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("drop ledger before %s: %w", cut.Format("2006-01"), err)
	}
	// The floors first: this waits for the commits of those streams in
	// flight, and the commits after it wait for this transaction, so none
	// decides a duplicate against rows that are being dropped.
	if _, err := tx.Exec(ctx, `UPDATE streams s SET floor_seq = d.seq
		FROM (SELECT edge, epoch, max(seq) AS seq FROM ledger WHERE committed_at < $1 GROUP BY edge, epoch) d
		WHERE s.edge = d.edge AND s.epoch = d.epoch AND s.floor_seq < d.seq`, cut); err != nil {
		return nil, fmt.Errorf("drop ledger before %s: move the stream floors: %w", cut.Format("2006-01"), err)
	}
	var dropped []string
	switch mode {
	case PartitionNative:
		rows, err := tx.Query(ctx, `SELECT c.relname FROM pg_inherits i
			JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'ledger'::regclass AND c.relname ~ '^ledger_p[0-9]{6}$'
			ORDER BY c.relname`)
		if err != nil {
			return nil, fmt.Errorf("drop ledger before %s: list partitions: %w", cut.Format("2006-01"), err)
		}
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return nil, err
			}
			names = append(names, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("drop ledger before %s: list partitions: %w", cut.Format("2006-01"), err)
		}
		for _, n := range names {
			// ledger_pYYYYMM holds that month: drop it when it ends at or
			// before the cut.
			if n >= PartitionName(cut) {
				break
			}
			if _, err := tx.Exec(ctx, `DROP TABLE `+n); err != nil {
				return nil, fmt.Errorf("drop ledger before %s: drop %s: %w", cut.Format("2006-01"), n, err)
			}
			dropped = append(dropped, n)
		}
	case PartitionTimescaleDB:
		rows, err := tx.Query(ctx, `SELECT drop_chunks('ledger', older_than => $1::timestamptz)::text`, cut)
		if err != nil {
			return nil, fmt.Errorf("drop ledger before %s: drop chunks: %w", cut.Format("2006-01"), err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return nil, err
			}
			dropped = append(dropped, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("drop ledger before %s: drop chunks: %w", cut.Format("2006-01"), err)
		}
	default:
		return nil, fmt.Errorf("drop ledger before %s: unknown partitioning %q", cut.Format("2006-01"), mode)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("drop ledger before %s: %w", cut.Format("2006-01"), err)
	}
	return dropped, nil
}
