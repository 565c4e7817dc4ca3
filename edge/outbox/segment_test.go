package outbox_test

import (
	"errors"
	"testing"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
)

func TestSegments(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     func(*outbox.Options)
		calls    []int // entries per call (one commit each)
		maxBytes int
		// over: segments may exceed maxBytes (a run is larger than it).
		over bool
	}{
		{name: "all in one", calls: []int{3, 4, 5}, maxBytes: 0},
		{name: "cap across commits", calls: []int{3, 3, 3, 3, 3, 3, 3, 3, 3, 3}, maxBytes: 3000},
		{name: "cap smaller than one commit", calls: []int{50, 2}, maxBytes: 2000, over: true},
		{name: "cap of one byte", calls: []int{1, 1, 1, 1}, maxBytes: 1, over: true},
		{name: "commit cut into runs", calls: []int{1000, 300},
			opts: func(o *outbox.Options) { o.SegmentBytes = 1 }, maxBytes: 64 << 10},
		{name: "default runs", calls: []int{1000, 1000, 1000, 700}, maxBytes: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mods []func(*outbox.Options)
			if tc.opts != nil {
				mods = append(mods, tc.opts)
			}
			b := MustOpen(t, mods...)
			ends := map[uint64]bool{}
			for _, n := range tc.calls {
				res := b.MustAppendN(t, "dev-1", "sale.completed", n)
				ends[res[n-1].Seq] = true
			}
			recs, segs := walk(t, b, tc.maxBytes)
			if uint64(len(recs)) != b.State().Head {
				t.Fatalf("%d records in segments, head %d", len(recs), b.State().Head)
			}
			limit := tc.maxBytes
			if limit <= 0 {
				limit = protocol.MaxSegmentBytes
			}
			for _, s := range segs {
				enc, err := protocol.EncodeSegment(s, false)
				if err != nil {
					t.Fatal(err)
				}
				if len(enc) > limit && !tc.over {
					t.Fatalf("segment %d-%d is %d bytes, cap %d", s.First, s.Last, len(enc), limit)
				}
				if tc.opts == nil && !ends[s.Last] {
					t.Fatalf("segment %d-%d does not end on a commit", s.First, s.Last)
				}
			}
			t.Logf("%d records in %d segments", len(recs), len(segs))
		})
	}
}

func TestSegmentBounds(t *testing.T) {
	b := MustOpen(t)
	b.MustAppendN(t, "dev-1", "sale.completed", 5)
	b.MustAppendN(t, "dev-1", "sale.completed", 5)
	if seg, err := b.Segment(11, 0); seg != nil || err != nil {
		t.Fatalf("from past the head: %v %v", seg, err)
	}
	seg, err := b.Segment(0, 0) // 0 is the start
	if err != nil || seg.First != 1 || seg.Last != 10 {
		t.Fatalf("from 0: %+v %v", seg, err)
	}
	seg, err = b.Segment(3, 0) // a start inside a run
	if err != nil || seg.First != 3 || seg.Last != 10 {
		t.Fatalf("from 3: %+v %v", seg, err)
	}
	if err := b.Trim(b.Receipt(t, 5)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Segment(5, 0); !errors.Is(err, outbox.ErrTrimmed) {
		t.Fatalf("from a trimmed seq: %v", err)
	}
	if seg, err := b.Segment(6, 0); err != nil || seg.First != 6 || seg.Last != 10 {
		t.Fatalf("from hwm+1: %+v %v", seg, err)
	}
}
