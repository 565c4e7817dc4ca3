package ledger

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/protocol"
)

// RecordProof is what the ledger holds about one committed record for a
// proof file (protocol/proof): the record as stored, the records after it
// up to the first checkpoint at or after it, that checkpoint, and the
// registration of the key that signed it.
type RecordProof struct {
	Stream      protocol.Stream
	Seq         uint64
	Pos         int64
	CommittedAt time.Time
	Raw         []byte
	// Chain is records Seq+1 .. Checkpoint.Seq, as stored: the first row of
	// each seq by pos (a seq stored twice, which only a damaged ledger has,
	// is shown once; the proof's chain check then finds the damage).
	Chain      [][]byte
	Checkpoint StoredCheckpoint
	KID        protocol.KeyID // the key id the checkpoint row names
	Key        Key            // that key, as registered
	// KeyValidUntil is when the key stopped being valid: its own or its
	// edge's revocation, whichever came first; zero while neither is.
	KeyValidUntil time.Time
}

// ErrNoCheckpoint is returned by RecordProof for a record that no stored
// checkpoint covers. Every committed segment ends on a checkpoint that the
// commit stores, so this means the checkpoints table was altered.
var ErrNoCheckpoint = errors.New("no stored checkpoint covers the record")

// RecordProof reads, in one snapshot, what a proof of record seq of stream s
// needs. It returns ErrNotFound when no such record is committed.
func (l *Ledger) RecordProof(ctx context.Context, s protocol.Stream, seq uint64) (RecordProof, error) {
	p := RecordProof{Stream: s, Seq: seq}
	if seq < 1 || seq > math.MaxInt64 {
		return p, fmt.Errorf("record proof %s: seq %d: want 1 to %d", s, seq, int64(math.MaxInt64))
	}
	err := l.readSnapshot(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT pos, committed_at, raw FROM ledger
			WHERE edge = $1 AND epoch = $2 AND seq = $3 ORDER BY pos LIMIT 1`,
			s.Edge, s.Epoch[:], int64(seq)).Scan(&p.Pos, &p.CommittedAt, &p.Raw)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("record %d of stream %s: %w", seq, s, ErrNotFound)
		}
		if err != nil {
			return err
		}

		var cpSeq int64
		var kid string
		err = tx.QueryRow(ctx, `SELECT seq, committed_at, kid, signature FROM checkpoints
			WHERE edge = $1 AND epoch = $2 AND seq >= $3 ORDER BY seq LIMIT 1`,
			s.Edge, s.Epoch[:], int64(seq)).Scan(&cpSeq, &p.Checkpoint.CommittedAt, &kid, &p.Checkpoint.Signature)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("record %d of stream %s: %w", seq, s, ErrNoCheckpoint)
		}
		if err != nil {
			return err
		}
		p.Checkpoint.Seq, p.KID = uint64(cpSeq), protocol.KeyID(kid)

		rows, err := tx.Query(ctx, `SELECT DISTINCT ON (seq) raw FROM ledger
			WHERE edge = $1 AND epoch = $2 AND seq > $3 AND seq <= $4 ORDER BY seq, pos`,
			s.Edge, s.Epoch[:], int64(seq), cpSeq)
		if err != nil {
			return err
		}
		var raw []byte
		p.Chain = [][]byte{}
		if _, err := pgx.ForEachRow(rows, []any{&raw}, func() error {
			p.Chain = append(p.Chain, append([]byte(nil), raw...))
			return nil
		}); err != nil {
			return err
		}

		var pub []byte
		var keyRevoked, edgeRevoked *time.Time
		err = tx.QueryRow(ctx, `SELECT k.pubkey, k.status, k.created_at, k.revoked_at, e.revoked_at
			FROM edge_keys k JOIN edges e ON e.id = k.edge WHERE k.kid = $1 AND k.edge = $2`,
			kid, s.Edge).Scan(&pub, &p.Key.Status, &p.Key.CreatedAt, &keyRevoked, &edgeRevoked)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("key %s of the checkpoint at seq %d is not registered to edge %s: %w", kid, cpSeq, s.Edge, ErrUnknownKey)
		}
		if err != nil {
			return err
		}
		p.Key.KID, p.Key.Public, p.Key.RevokedAt = protocol.KeyID(kid), ed25519.PublicKey(pub), deref(keyRevoked)
		p.KeyValidUntil = p.Key.RevokedAt
		if e := deref(edgeRevoked); !e.IsZero() && (p.KeyValidUntil.IsZero() || e.Before(p.KeyValidUntil)) {
			p.KeyValidUntil = e
		}
		return nil
	})
	if err != nil {
		return RecordProof{}, fmt.Errorf("record proof %s seq %d: %w", s, seq, err)
	}
	return p, nil
}
