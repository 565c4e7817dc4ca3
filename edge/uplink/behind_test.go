package uplink_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/protocol"
)

// retainSource is a memSource that keeps acknowledged records (as the
// outbox does with --retain): its watermark moves on receipts, and nothing
// is ever deleted (uplink.Retainer: the first held seq is 1).
type retainSource struct {
	*memSource
	acked uint64
}

func (r *retainSource) AckedSeq() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acked
}

func (r *retainSource) FirstSeq() uint64 { return 1 }

func (r *retainSource) Trim(rc protocol.Receipt) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rc.Stream() != r.chain.Stream {
		return errors.New("wrong stream")
	}
	if rc.HWM > r.chain.Last() || rc.HWM == 0 || r.chain.Links[rc.HWM-1] != rc.Head {
		return errors.New("head mismatch")
	}
	if rc.HWM < r.acked {
		return errors.New("below the watermark") // as the outbox refuses
	}
	r.acked = rc.HWM
	return nil
}

// Diverges makes it an uplink.Diverger that never diverges: accept asks it
// about receipts below the watermark.
func (r *retainSource) Diverges(rc protocol.Receipt) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rc.HWM == 0 || rc.HWM > r.chain.Last() {
		return rc.HWM > r.chain.Last(), nil
	}
	return r.chain.Links[rc.HWM-1] != rc.Head, nil
}

func (r *retainSource) Diverged(protocol.Receipt) error { return errors.New("must not diverge") }

// restore puts the cloud back to an older watermark, as a database
// restored from a backup does, and ends the session (the cloud restarts).
func restore(tr *memTransport, cloud *memCloud, hwm uint64, link protocol.Hash) {
	cloud.mu.Lock()
	cloud.hwm, cloud.head = hwm, link
	cloud.mu.Unlock()
	tr.mu.Lock()
	close(tr.lost)
	tr.mu.Unlock()
}

// TestCloudBehindResendsRetained: the cloud is restored to seq 5 after it
// receipted 15. The hello's answer below the watermark used to be ignored
// until the hello timed out, at every reconnect, forever; now the session
// resumes, the gap nack for the next segment shows the cloud behind, and
// the uplink resends 6..15 from what the source retained, in the same
// stream, then the new records.
func TestCloudBehindResendsRetained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		edgeKey, cloudKey := key("edge"), key("cloud")
		src := &retainSource{memSource: newMemSource("e1", edgeKey)}
		for range 3 {
			src.add(5)
		}
		cloud := &memCloud{signer: cloudKey, stream: src.Stream()}
		tr := &memTransport{cloud: cloud}
		up, err := uplink.New(uplink.Options{Transport: tr, Source: src, CloudKeys: protocol.NewKeyMap(cloudKey.Public()),
			Window: 4, MaxSegmentBytes: 600, HelloTimeout: 2 * time.Second, AckTimeout: 30 * time.Second,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); _ = up.Run(ctx) }()
		defer func() { cancel(); <-done }()
		settle(time.Minute)
		if got := src.AckedSeq(); got != 15 {
			t.Fatalf("acked %d before the restore, want 15", got)
		}
		restore(tr, cloud, 5, src.chain.Links[4])
		src.add(5)
		settle(5 * time.Minute)
		cloud.mu.Lock()
		hwm := cloud.hwm
		cloud.mu.Unlock()
		s := up.Stats()
		if hwm != 20 || src.AckedSeq() != 20 {
			t.Fatalf("cloud at %d, source acked %d; want both at 20 (stats %+v)", hwm, src.AckedSeq(), s)
		}
		if s.CloudBehind == 0 || s.ForgedReplies != 0 || s.NewStreams != 0 {
			t.Fatalf("stats %+v: want cloud_behind counted, nothing forged, no new stream", s)
		}
	})
}

// TestCloudBehindPastRetentionLeavesStream: the cloud is restored to seq 2
// after it receipted 5, and the source kept nothing after receipts. Records
// 3..5 are gone from the edge too: the uplink has the source leave the
// stream (once, on the bound gap nack), and the new stream's records flow.
func TestCloudBehindPastRetentionLeavesStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		edgeKey, cloudKey := key("edge"), key("cloud")
		old := newMemSource("e1", edgeKey)
		old.add(5)
		cloud := &memCloud{signer: cloudKey, stream: old.Stream()}
		src := &divSource{cur: old, signer: edgeKey, cloud: cloud}
		tr := &memTransport{cloud: cloud}
		up, err := uplink.New(uplink.Options{Transport: tr, Source: src, CloudKeys: protocol.NewKeyMap(cloudKey.Public()),
			HelloTimeout: 2 * time.Second, AckTimeout: 30 * time.Second,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); _ = up.Run(ctx) }()
		defer func() { cancel(); <-done }()
		settle(time.Minute)
		if got := old.Trimmed(); got != 5 {
			t.Fatalf("trimmed %d before the restore, want 5", got)
		}
		restore(tr, cloud, 2, old.chain.Links[1])
		settle(time.Minute)
		if s := up.Stats(); s.NewStreams != 0 {
			t.Fatalf("left the stream with nothing to send (a hello's receipt below the watermark is not proof): %+v", s)
		}
		old.add(3)
		settle(5 * time.Minute)
		src.mu.Lock()
		left, cur := src.left, src.cur
		src.mu.Unlock()
		if len(left) != 1 || left[0].HWM != 2 || left[0].Stream() != old.Stream() {
			t.Fatalf("left the stream on %+v, want once, at the cloud's 2", left)
		}
		if cur.Stream() == old.Stream() || cur.Trimmed() != 3 {
			t.Fatalf("the new stream %s: trimmed %d of 3", cur.Stream(), cur.Trimmed())
		}
		if s := up.Stats(); s.NewStreams != 1 || s.CloudBehind != 1 || s.ForgedReplies != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// TestOvertakenGapNackIsNotCloudBehind: a gap nack is the cloud's
// watermark when it judged the segment, and a receipt from another worker
// can overtake it on the way back (the broker, or an attacker on it,
// delivers replies in any order). Here segment 1..5 is delayed past the
// cloud's gap wait, so 6..10 is nacked at hwm 0; then 1..5 commits, its
// receipt (5) arrives first and the outbox trims to it, and then the nack,
// bound and signed and fresh, arrives. The cloud is not behind: it
// receipted 5 after it judged 6..10. The uplink must resend 6..10, not
// leave the stream as if the cloud had lost 1..5 (before, it started a new
// epoch, re-entered what it held, and reported 1..5 lost).
func TestOvertakenGapNackIsNotCloudBehind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		edgeKey, cloudKey := key("edge"), key("cloud")
		old := newMemSource("e1", edgeKey)
		old.add(5)
		old.add(5)
		lost := map[uint64]bool{}
		cloud := &memCloud{signer: cloudKey, stream: old.Stream(), refuse: func(seg *protocol.Segment) int {
			if !lost[seg.First] { // the first of each is delayed, never answered
				lost[seg.First] = true
				return -1
			}
			return 0
		}}
		src := &divSource{cur: old, signer: edgeKey, cloud: cloud}
		tr := &memTransport{cloud: cloud}
		up, err := uplink.New(uplink.Options{Transport: tr, Source: src, CloudKeys: protocol.NewKeyMap(cloudKey.Public()),
			Window: 4, MaxSegmentBytes: 600, HelloTimeout: 2 * time.Second, AckTimeout: 30 * time.Second,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); _ = up.Run(ctx) }()
		defer func() { cancel(); <-done }()
		settle(time.Second)
		if p := tr.published(); len(p) != 2 || p[0].first != 1 || p[1].first != 6 {
			t.Fatalf("published %+v, want 1..5 and 6..10", p)
		}
		// The nack the cloud made for 6..10 while it was at 0, bound to
		// the segment as the uplink sent it.
		seg, err := old.Segment(6, 600)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := protocol.EncodeSegment(seg, false)
		if err != nil {
			t.Fatal(err)
		}
		cloud.mu.Lock()
		nack := cloud.nack(raw, seg, protocol.NackGap)
		cloud.hwm, cloud.head = 5, old.chain.Links[4] // then 1..5 commits
		receipt := cloud.receipt()
		cloud.mu.Unlock()
		tr.mu.Lock()
		reply := tr.onReply
		tr.mu.Unlock()
		reply(receipt)
		settle(time.Millisecond)
		if got := old.Trimmed(); got != 5 {
			t.Fatalf("trimmed %d after the receipt, want 5", got)
		}
		reply(nack)
		settle(time.Minute)
		src.mu.Lock()
		left := src.left
		src.mu.Unlock()
		if len(left) != 0 {
			t.Fatalf("left the stream on the overtaken nack (%+v): the cloud was never behind; stats %+v", left, up.Stats())
		}
		if got := old.Trimmed(); got != 10 {
			t.Fatalf("trimmed %d, want 10 (6..10 resent); stats %+v", got, up.Stats())
		}
		if s := up.Stats(); s.CloudBehind != 0 || s.NewStreams != 0 {
			t.Fatalf("stats %+v: want no cloud_behind, no new stream", s)
		}
	})
}

// TestCloudBehindWithinSession: the cloud's database is restored while the
// edge's broker session stays up (the broker is not the database). A
// segment published after the receipt that moved the watermark to 5, and
// nacked at 2, does show the cloud behind: the uplink leaves the stream,
// as the overtaken-nack rule (TestOvertakenGapNackIsNotCloudBehind) must
// not prevent.
func TestCloudBehindWithinSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		edgeKey, cloudKey := key("edge"), key("cloud")
		old := newMemSource("e1", edgeKey)
		old.add(5)
		cloud := &memCloud{signer: cloudKey, stream: old.Stream()}
		src := &divSource{cur: old, signer: edgeKey, cloud: cloud}
		tr := &memTransport{cloud: cloud}
		up, err := uplink.New(uplink.Options{Transport: tr, Source: src, CloudKeys: protocol.NewKeyMap(cloudKey.Public()),
			HelloTimeout: 2 * time.Second, AckTimeout: 30 * time.Second,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); _ = up.Run(ctx) }()
		defer func() { cancel(); <-done }()
		settle(time.Minute)
		if got := old.Trimmed(); got != 5 {
			t.Fatalf("trimmed %d, want 5", got)
		}
		cloud.mu.Lock()
		cloud.hwm, cloud.head = 2, old.chain.Links[1] // restored; the session stays
		cloud.mu.Unlock()
		old.add(3)
		settle(5 * time.Minute)
		src.mu.Lock()
		left := src.left
		src.mu.Unlock()
		if len(left) != 1 || left[0].HWM != 2 {
			t.Fatalf("left the stream on %+v, want once, at the cloud's 2; stats %+v", left, up.Stats())
		}
		if s := up.Stats(); s.Sessions != 2 || s.CloudBehind != 1 || s.NewStreams != 1 {
			t.Fatalf("stats %+v: want one session per stream, cloud_behind and new_streams 1", s)
		}
	})
}
