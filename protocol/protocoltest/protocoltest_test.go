package protocoltest_test

import (
	"testing"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// The segments a Stream makes verify as the cloud verifies them: the
// checkpoint against the edge's key, the chain from the previous segment's
// head.
func TestSegmentsVerify(t *testing.T) {
	s := protocoltest.NewStream(t, "shop-1", protocoltest.Signer(t, "edge"))
	s.AddN(t, 12)
	keys := protocol.NewKeyMap(s.Signer.Public())
	from := protocol.ChainState{Stream: s.Stream}
	segs := s.Segments(5)
	if len(segs) != 3 || segs[2].First != 11 || segs[2].Last != 12 {
		t.Fatalf("cut into %d segments, the last %d..%d", len(segs), segs[len(segs)-1].First, segs[len(segs)-1].Last)
	}
	for _, seg := range segs {
		got, err := protocol.DecodeSegment(protocoltest.Encode(t, seg, true))
		if err != nil {
			t.Fatal(err)
		}
		cp, err := protocol.VerifyCheckpoint(got.Checkpoint, keys)
		if err != nil {
			t.Fatal(err)
		}
		want := protocol.ChainState{Stream: cp.Stream(), Seq: cp.Seq, Head: cp.Head}
		if from, _, err = protocol.VerifyChain(from, got.Records, &want); err != nil {
			t.Fatalf("segment %d..%d: %v", seg.First, seg.Last, err)
		}
	}
	if from != s.Head() {
		t.Fatalf("chain ends at %+v, stream head %+v", from, s.Head())
	}
}

// A test that tampers with a segment's records does not change the stream.
func TestSegmentRecordsAreACopy(t *testing.T) {
	s := protocoltest.NewStream(t, "shop-1", protocoltest.NewSigner(t))
	s.AddN(t, 2)
	seg := s.Segment(1, 2)
	seg.Records[0] = []byte("tampered")
	if string(s.Raws[0]) == "tampered" {
		t.Fatal("Segment shares the stream's records slice")
	}
}
