package protocol_test

import (
	"errors"
	"testing"

	"github.com/outpost-edge/outpost/protocol"
)

func verify(t *testing.T, raws [][]byte, head protocol.ChainState) error {
	t.Helper()
	_, _, err := protocol.VerifyChain(protocol.ChainState{Stream: testStream}, raws, &head)
	return err
}

func wantBreak(t *testing.T, err error, seq uint64, faults ...protocol.ChainFault) {
	t.Helper()
	var ce *protocol.ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("want a chain break at seq %d, got %v", seq, err)
	}
	if ce.Seq != seq {
		t.Fatalf("break reported at seq %d, want %d: %v", ce.Seq, seq, err)
	}
	for _, f := range faults {
		if ce.Fault == f {
			return
		}
	}
	t.Fatalf("fault %s, want one of %v: %v", ce.Fault, faults, err)
}

func clone(raws [][]byte) [][]byte {
	out := make([][]byte, len(raws))
	for i, r := range raws {
		out[i] = append([]byte(nil), r...)
	}
	return out
}

func TestChainIntact(t *testing.T) {
	raws, head := chain(t, testStream, 20)
	st, recs, err := protocol.VerifyChain(protocol.ChainState{Stream: testStream}, raws, &head)
	if err != nil {
		t.Fatal(err)
	}
	if st != head || len(recs) != 20 || recs[19].Seq != 20 {
		t.Fatalf("state %+v, %d records", st, len(recs))
	}
	// Continuing from the middle works too.
	mid := protocol.ChainState{Stream: testStream, Seq: 10, Head: protocol.HashBytes(raws[9])}
	if _, _, err := protocol.VerifyChain(mid, raws[10:], &head); err != nil {
		t.Fatal(err)
	}
}

// Every single changed byte in every record is detected at that record's seq.
func TestChainEveryFlippedByte(t *testing.T) {
	raws, head := chain(t, testStream, 12)
	for i := range raws {
		for j := range raws[i] {
			bad := clone(raws)
			bad[i][j] ^= 0x01
			err := verify(t, bad, head)
			if err == nil {
				t.Fatalf("flip of byte %d in seq %d went unnoticed", j, i+1)
			}
			var ce *protocol.ChainError
			if !errors.As(err, &ce) || ce.Seq != uint64(i+1) {
				t.Fatalf("flip of byte %d in seq %d reported as %v", j, i+1, err)
			}
		}
	}
}

func TestChainBreaks(t *testing.T) {
	raws, head := chain(t, testStream, 10)
	other := protocol.Stream{Edge: testStream.Edge, Epoch: protocol.Epoch{9}}
	otherRaws, _ := chain(t, other, 10)
	otherEdge := protocol.Stream{Edge: "edge-002", Epoch: testStream.Epoch}
	otherEdgeRaws, _ := chain(t, otherEdge, 10)

	t.Run("dropped record", func(t *testing.T) {
		for k := 0; k < 9; k++ {
			bad := append(clone(raws[:k]), clone(raws[k+1:])...)
			wantBreak(t, verify(t, bad, head), uint64(k+1), protocol.FaultGap)
		}
	})
	t.Run("dropped last record", func(t *testing.T) {
		wantBreak(t, verify(t, clone(raws[:9]), head), 10, protocol.FaultHead)
	})
	t.Run("reordered pair", func(t *testing.T) {
		for k := 0; k < 9; k++ {
			bad := clone(raws)
			bad[k], bad[k+1] = bad[k+1], bad[k]
			wantBreak(t, verify(t, bad, head), uint64(k+1), protocol.FaultGap)
		}
	})
	t.Run("spliced from another epoch", func(t *testing.T) {
		for k := 0; k < 10; k++ {
			bad := clone(raws)
			bad[k] = otherRaws[k]
			wantBreak(t, verify(t, bad, head), uint64(k+1), protocol.FaultStream)
		}
	})
	t.Run("spliced from another edge", func(t *testing.T) {
		bad := clone(raws)
		bad[4] = otherEdgeRaws[4]
		wantBreak(t, verify(t, bad, head), 5, protocol.FaultStream)
	})
	t.Run("wrong starting head", func(t *testing.T) {
		_, _, err := protocol.VerifyChain(protocol.ChainState{Stream: testStream, Seq: 3, Head: protocol.HashBytes(raws[1])}, raws[3:], &head)
		wantBreak(t, err, 4, protocol.FaultFork)
	})
	t.Run("checkpoint for another head", func(t *testing.T) {
		h := head
		h.Head[0] ^= 1
		wantBreak(t, verify(t, raws, h), 10, protocol.FaultAltered)
	})
}

// A tombstone keeps the chain verifiable in place of the shed record.
func TestChainTombstone(t *testing.T) {
	raws, head := chain(t, testStream, 9)
	// seq 3, 6 and 9 are telemetry; shed 3 and the last one, 9.
	for _, k := range []int{2, 8} {
		tomb, err := protocol.Tombstone(raws[k])
		if err != nil {
			t.Fatal(err)
		}
		if tomb.Body != nil || !tomb.IsTombstone() {
			t.Fatalf("tombstone keeps a body: %+v", tomb)
		}
		raws[k] = tomb.Encode()
	}
	if err := verify(t, raws, head); err != nil {
		t.Fatalf("chain with tombstones: %v", err)
	}
	// A tombstone that claims another hash is caught by its successor.
	bad := clone(raws)
	r, _ := protocol.DecodeRecord(bad[2])
	h := *r.Shed
	h[0] ^= 1
	r.Shed = &h
	bad[2] = r.Encode()
	wantBreak(t, verify(t, bad, head), 3, protocol.FaultAltered)
}
