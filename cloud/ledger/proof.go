package ledger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/protocol"
)

// StoredRecord is one ledger row as it is stored: the bytes the edge
// signed, where and when they were committed. Nothing is decoded or
// checked: a proof reader (an auditor, the simulator's verifier) checks
// the bytes against the checkpoints itself.
type StoredRecord struct {
	Seq         uint64
	Pos         int64
	CommittedAt time.Time
	Raw         []byte
}

// StoredCheckpoint is one stored checkpoint: the edge's COSE_Sign1 message
// over its stream's head at Seq, as it arrived with a committed segment.
type StoredCheckpoint struct {
	Seq         uint64
	CommittedAt time.Time
	Signature   []byte
}

// Proof is a range of one stream as stored, with the signatures that cover
// it: enough to check offline, with the edge's public keys, that every
// record is what the edge signed.
type Proof struct {
	Stream  protocol.Stream
	HWM     uint64 // the stream's watermark
	LastSeq uint64 // the highest seq of any stored row of the stream (0 when none)
	// Records are the rows with seq in [from, to], by seq then pos. They are
	// not deduplicated or gap-filled: a seq stored twice appears twice, a
	// missing one is missing.
	Records []StoredRecord
	// Checkpoints are those with seq in [from, to], by seq, then the first
	// one above to (when there is one): every record of the range is
	// covered by the first checkpoint at or after its seq.
	Checkpoints []StoredCheckpoint
}

// StreamProof returns records from..to (inclusive) of stream s and the
// checkpoints that cover them, read in one snapshot. It returns ErrNotFound
// when the cloud has never seen the stream.
func (l *Ledger) StreamProof(ctx context.Context, s protocol.Stream, from, to uint64) (Proof, error) {
	p := Proof{Stream: s}
	if from < 1 || to < from || to > math.MaxInt64 {
		return p, fmt.Errorf("stream proof %s: range %d..%d: want 1 <= from <= to <= %d", s, from, to, uint64(math.MaxInt64))
	}
	err := l.readSnapshot(ctx, func(tx pgx.Tx) error {
		var hwm, last int64
		err := tx.QueryRow(ctx, `SELECT hwm, (SELECT coalesce(max(seq), 0) FROM ledger WHERE edge = $1 AND epoch = $2)
			FROM streams WHERE edge = $1 AND epoch = $2`, s.Edge, s.Epoch[:]).Scan(&hwm, &last)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("stream %s: %w", s, ErrNotFound)
		}
		if err != nil {
			return err
		}
		p.HWM, p.LastSeq = uint64(hwm), uint64(last)

		rows, err := tx.Query(ctx, `SELECT seq, pos, committed_at, raw FROM ledger
			WHERE edge = $1 AND epoch = $2 AND seq BETWEEN $3 AND $4 ORDER BY seq, pos`,
			s.Edge, s.Epoch[:], int64(from), int64(to))
		if err != nil {
			return err
		}
		var r StoredRecord
		var seq int64
		if _, err := pgx.ForEachRow(rows, []any{&seq, &r.Pos, &r.CommittedAt, &r.Raw}, func() error {
			r.Seq = uint64(seq)
			p.Records = append(p.Records, StoredRecord{Seq: r.Seq, Pos: r.Pos, CommittedAt: r.CommittedAt, Raw: append([]byte(nil), r.Raw...)})
			return nil
		}); err != nil {
			return err
		}

		rows, err = tx.Query(ctx, `(SELECT seq, committed_at, signature FROM checkpoints
				WHERE edge = $1 AND epoch = $2 AND seq BETWEEN $3 AND $4)
			UNION ALL
			(SELECT seq, committed_at, signature FROM checkpoints
				WHERE edge = $1 AND epoch = $2 AND seq > $4 ORDER BY seq LIMIT 1)
			ORDER BY seq`, s.Edge, s.Epoch[:], int64(from), int64(to))
		if err != nil {
			return err
		}
		var c StoredCheckpoint
		_, err = pgx.ForEachRow(rows, []any{&seq, &c.CommittedAt, &c.Signature}, func() error {
			p.Checkpoints = append(p.Checkpoints, StoredCheckpoint{Seq: uint64(seq), CommittedAt: c.CommittedAt, Signature: append([]byte(nil), c.Signature...)})
			return nil
		})
		return err
	})
	if err != nil {
		return Proof{}, fmt.Errorf("stream proof %s %d..%d: %w", s, from, to, err)
	}
	return p, nil
}

// readSnapshot runs f in a read-only, repeatable-read transaction, so that
// its queries see one state of the database.
func (l *Ledger) readSnapshot(ctx context.Context, f func(pgx.Tx) error) error {
	tx, err := l.db.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`); err != nil {
		return err
	}
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
