package protocol_test

import (
	"bytes"
	"math"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/outpost-edge/outpost/protocol"
)

// The hand-written heads are what the deterministic encoder writes.
func TestCBORWritersMatchTheEncoder(t *testing.T) {
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []int64{0, 1, 23, 24, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64, -1, -24, -25, -256, -257, -65537, math.MinInt64} {
		want, _ := enc.Marshal(v)
		if got := protocol.AppendCBORInt(nil, v); !bytes.Equal(got, want) {
			t.Errorf("int %d: % x, want % x", v, got, want)
		}
	}
	for _, n := range []int{0, 5, 23, 24, 255, 256, 65535, 65536, 70000} {
		s := bytes.Repeat([]byte{'a'}, n)
		want, _ := enc.Marshal(s)
		got := protocol.AppendCBORBytes(nil, s)
		if !bytes.Equal(got, want) {
			t.Errorf("bytes of %d: head % x, want % x", n, got[:3], want[:3])
		}
		if c := protocol.SegmentRecordCost(n); c != len(want) {
			t.Errorf("SegmentRecordCost(%d) = %d, want %d", n, c, len(want))
		}
		wantT, _ := enc.Marshal(string(s))
		if got := protocol.AppendCBORText(nil, string(s)); !bytes.Equal(got, wantT) {
			t.Errorf("text of %d differs", n)
		}
	}
	if got := protocol.CBORHeadLen(protocol.MaxSegmentRecs); got != protocol.SegmentFixedCost-protocol.SegmentOverhead {
		t.Errorf("records array head %d bytes, SegmentFixedCost assumes %d", got, protocol.SegmentFixedCost-protocol.SegmentOverhead)
	}
}
