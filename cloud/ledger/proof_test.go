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

func TestStreamProof(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	l := ledger.New(conn, ledger.Options{})
	e := MustAddEdge(t, l, "edge-p")
	c := makeChain(t, protocol.Stream{Edge: "edge-p", Epoch: newEpoch(t)}, 25, time.Now().Add(-time.Minute))
	MustCommit(t, l, inputs(cut(c, e, 10)...)...)
	keys := protocol.NewKeyMap(e.Signer.Public())

	seqsOf := func(p ledger.Proof) (rs, cs []uint64) {
		for _, r := range p.Records {
			rs = append(rs, r.Seq)
		}
		for _, c := range p.Checkpoints {
			cs = append(cs, c.Seq)
		}
		return rs, cs
	}

	t.Run("whole stream verifies offline", func(t *testing.T) {
		p, err := l.StreamProof(ctx, c.Stream, 1, 25)
		if err != nil {
			t.Fatal(err)
		}
		if p.HWM != 25 || p.LastSeq != 25 || len(p.Records) != 25 {
			t.Fatalf("hwm %d, last %d, %d records; want 25, 25, 25", p.HWM, p.LastSeq, len(p.Records))
		}
		if _, cs := seqsOf(p); !equalSeqs(cs, 10, 20, 25) {
			t.Fatalf("checkpoints at %v, want [10 20 25]", cs)
		}
		st := protocol.ChainState{Stream: c.Stream}
		for _, cp := range p.Checkpoints {
			ck, err := protocol.VerifyCheckpoint(cp.Signature, keys)
			if err != nil {
				t.Fatalf("checkpoint %d: %v", cp.Seq, err)
			}
			var raws [][]byte
			for _, r := range p.Records[st.Seq:ck.Seq] {
				raws = append(raws, r.Raw)
			}
			if st, _, err = protocol.VerifyChain(st, raws, &protocol.ChainState{Stream: ck.Stream(), Seq: ck.Seq, Head: ck.Head}); err != nil {
				t.Fatal(err)
			}
		}
		for i, r := range p.Records {
			if !bytes.Equal(r.Raw, c.Raws[i]) || r.Pos == 0 || r.CommittedAt.IsZero() {
				t.Fatalf("record %d: pos %d, committed %v, bytes equal %v", r.Seq, r.Pos, r.CommittedAt, bytes.Equal(r.Raw, c.Raws[i]))
			}
		}
	})

	t.Run("a range comes with the checkpoint that covers it", func(t *testing.T) {
		for _, tc := range []struct {
			from, to uint64
			recs     []uint64
			cps      []uint64
		}{
			{1, 7, []uint64{1, 2, 3, 4, 5, 6, 7}, []uint64{10}},
			{11, 15, []uint64{11, 12, 13, 14, 15}, []uint64{20}},
			{9, 12, []uint64{9, 10, 11, 12}, []uint64{10, 20}},
			{24, 40, []uint64{24, 25}, []uint64{25}},
			{26, 30, nil, nil},
		} {
			p, err := l.StreamProof(ctx, c.Stream, tc.from, tc.to)
			if err != nil {
				t.Fatal(err)
			}
			rs, cs := seqsOf(p)
			if !equalSeqs(rs, tc.recs...) || !equalSeqs(cs, tc.cps...) {
				t.Errorf("%d..%d: records %v checkpoints %v; want %v and %v", tc.from, tc.to, rs, cs, tc.recs, tc.cps)
			}
		}
	})

	t.Run("rows are shown as stored, doubles included", func(t *testing.T) {
		if _, err := conn.Exec(ctx, `INSERT INTO ledger SELECT * FROM ledger WHERE edge = $1 AND epoch = $2 AND seq = 3`,
			c.Stream.Edge, c.Stream.Epoch[:]); err != nil {
			t.Fatal(err)
		}
		p, err := l.StreamProof(ctx, c.Stream, 1, 5)
		if err != nil {
			t.Fatal(err)
		}
		if rs, _ := seqsOf(p); !equalSeqs(rs, 1, 2, 3, 3, 4, 5) {
			t.Errorf("records %v, want the doubled 3 twice", rs)
		}
	})

	t.Run("unknown stream", func(t *testing.T) {
		_, err := l.StreamProof(ctx, protocol.Stream{Edge: "edge-p", Epoch: newEpoch(t)}, 1, 10)
		if !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("err %v, want ErrNotFound", err)
		}
		if _, err := l.StreamProof(ctx, c.Stream, 5, 4); err == nil {
			t.Error("an empty range was not refused")
		}
	})
}

func equalSeqs(got []uint64, want ...uint64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
