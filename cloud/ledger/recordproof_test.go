package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

func TestRecordProof(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	l := ledger.New(conn, ledger.Options{})
	e := MustAddEdge(t, l, "edge-rp")
	c := makeChain(t, protocol.Stream{Edge: "edge-rp", Epoch: newEpoch(t)}, 12, time.Now().Add(-time.Minute))
	MustCommit(t, l, inputs(cut(c, e, 5)...)...) // checkpoints at 5, 10, 12

	t.Run("the record, the chain to its checkpoint, the key", func(t *testing.T) {
		for _, tc := range []struct{ seq, cp uint64 }{{1, 5}, {5, 5}, {6, 10}, {12, 12}} {
			p, err := l.RecordProof(ctx, c.Stream, tc.seq)
			if err != nil {
				t.Fatal(err)
			}
			if p.Checkpoint.Seq != tc.cp || len(p.Chain) != int(tc.cp-tc.seq) || !bytes.Equal(p.Raw, c.Raws[tc.seq-1]) {
				t.Fatalf("seq %d: checkpoint %d, chain %d; want %d, %d", tc.seq, p.Checkpoint.Seq, len(p.Chain), tc.cp, tc.cp-tc.seq)
			}
			for i, raw := range p.Chain {
				if !bytes.Equal(raw, c.Raws[int(tc.seq)+i]) {
					t.Fatalf("seq %d: chain[%d] is not record %d", tc.seq, i, int(tc.seq)+i+1)
				}
			}
			if p.KID != e.Signer.KeyID() || !p.Key.Public.Equal(e.Signer.Public()) || p.Key.CreatedAt.IsZero() ||
				!p.KeyValidUntil.IsZero() || p.Pos < 1 || p.CommittedAt.After(p.Checkpoint.CommittedAt) {
				t.Fatalf("seq %d: %+v", tc.seq, p)
			}
		}
	})

	t.Run("a doubled row appears once", func(t *testing.T) {
		if _, err := conn.Exec(ctx, `INSERT INTO ledger SELECT * FROM ledger WHERE edge = $1 AND epoch = $2 AND seq = 8`,
			c.Stream.Edge, c.Stream.Epoch[:]); err != nil {
			t.Fatal(err)
		}
		p, err := l.RecordProof(ctx, c.Stream, 7)
		if err != nil || len(p.Chain) != 3 {
			t.Fatalf("chain of %d records (%v), want 3", len(p.Chain), err)
		}
	})

	t.Run("validity ends at the earlier of the key's and the edge's revocation", func(t *testing.T) {
		if err := l.RevokeKey(ctx, "edge-rp", e.Signer.KeyID()); err != nil {
			t.Fatal(err)
		}
		if err := l.RevokeEdge(ctx, "edge-rp"); err != nil {
			t.Fatal(err)
		}
		p, err := l.RecordProof(ctx, c.Stream, 3)
		if err != nil {
			t.Fatal(err)
		}
		if p.Key.RevokedAt.IsZero() || !p.KeyValidUntil.Equal(p.Key.RevokedAt) {
			t.Fatalf("key revoked %v, valid until %v", p.Key.RevokedAt, p.KeyValidUntil)
		}
		if _, err := conn.Exec(ctx, `UPDATE edges SET revoked_at = $1 WHERE id = 'edge-rp'`, p.Key.RevokedAt.Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		if p, err = l.RecordProof(ctx, c.Stream, 3); err != nil || !p.KeyValidUntil.Equal(p.Key.RevokedAt.Add(-time.Second)) {
			t.Fatalf("edge revoked first: valid until %v (%v)", p.KeyValidUntil, err)
		}
	})

	t.Run("not committed, and no checkpoint", func(t *testing.T) {
		if _, err := l.RecordProof(ctx, c.Stream, 13); !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("seq 13: %v, want ErrNotFound", err)
		}
		if _, err := conn.Exec(ctx, `DELETE FROM checkpoints WHERE edge = 'edge-rp' AND seq = 12`); err != nil {
			t.Fatal(err)
		}
		if _, err := l.RecordProof(ctx, c.Stream, 11); !errors.Is(err, ledger.ErrNoCheckpoint) {
			t.Errorf("seq 11 without its checkpoint: %v, want ErrNoCheckpoint", err)
		}
	})
}
