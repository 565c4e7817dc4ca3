package uplink_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/protocol"
)

// divSource is a memSource that can leave its stream for a new one, as the
// outbox does when the cloud is past it (uplink.Diverger).
type divSource struct {
	mu     sync.Mutex
	cur    *memSource
	signer *protocol.Signer
	cloud  *memCloud
	left   []protocol.Receipt
}

func (d *divSource) src() *memSource {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur
}

func (d *divSource) Stream() protocol.Stream { return d.src().Stream() }
func (d *divSource) LastSeq() uint64         { return d.src().LastSeq() }
func (d *divSource) AckedSeq() uint64        { return d.src().AckedSeq() }
func (d *divSource) Segment(from uint64, maxBytes int) (*protocol.Segment, error) {
	return d.src().Segment(from, maxBytes)
}
func (d *divSource) Trim(r protocol.Receipt) error { return d.src().Trim(r) }
func (d *divSource) Changed() <-chan struct{}      { return d.src().Changed() }

func (d *divSource) Diverges(r protocol.Receipt) (bool, error) {
	return r.Stream() == d.Stream() && r.HWM > d.LastSeq(), nil
}

func (d *divSource) Diverged(r protocol.Receipt) error {
	next := newMemSource(d.Stream().Edge, d.signer)
	next.add(3)
	d.mu.Lock()
	d.cur, d.left = next, append(d.left, r)
	d.mu.Unlock()
	// The cloud has never seen the new stream.
	d.cloud.mu.Lock()
	d.cloud.stream, d.cloud.hwm, d.cloud.head = next.Stream(), 0, protocol.Hash{}
	d.cloud.mu.Unlock()
	return nil
}

// TestHelloFindsCloudPastStream: the cloud's signed receipt at hello is
// beyond the restored outbox's head. The uplink has the source leave the
// stream (once), says hello for the new one, and its records flow and are
// trimmed; Stats counts the new stream. (Before, the receipt was ignored as
// forged at every hello, and nothing was ever sent again.)
func TestHelloFindsCloudPastStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		edgeKey, cloudKey := key("edge"), key("cloud")
		old := newMemSource("e1", edgeKey)
		old.add(5)
		cloud := &memCloud{signer: cloudKey, stream: old.Stream(), hwm: 40}
		src := &divSource{cur: old, signer: edgeKey, cloud: cloud}
		up, err := uplink.New(uplink.Options{Transport: &memTransport{cloud: cloud}, Source: src,
			CloudKeys: protocol.NewKeyMap(cloudKey.Public()), HelloTimeout: 2 * time.Second,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); _ = up.Run(ctx) }()
		settle(time.Minute)
		cancel()
		<-done
		src.mu.Lock()
		left, cur := src.left, src.cur
		src.mu.Unlock()
		if len(left) != 1 || left[0].HWM != 40 || left[0].Stream() != old.Stream() {
			t.Fatalf("left the stream on %+v, want once, on the cloud's receipt at 40", left)
		}
		if cur.Stream() == old.Stream() || cur.Trimmed() != 3 {
			t.Fatalf("the new stream %s: trimmed %d of 3", cur.Stream(), cur.Trimmed())
		}
		if s := up.Stats(); s.NewStreams != 1 || s.ForgedReplies != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// TestCloudPastStreamFoundAfterStaleHelloReceipt: as
// TestHelloFindsCloudPastStream (an older outbox file restored; the cloud
// is at 40, the outbox's head at 10), but a stale receipt of the stream
// (at 3, below the outbox's watermark 5) reaches the edge before each
// hello's answer: another worker's, or one an attacker on the broker
// replays. The hello resumes on the stale one, so the cloud's real answer
// (40, beyond the head) arrives in the session; it must still make the
// source leave the stream. Before, the session counted it as forged, the
// cloud answered every segment with it, and the edge never left a stream
// it could never deliver.
func TestCloudPastStreamFoundAfterStaleHelloReceipt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		edgeKey, cloudKey := key("edge"), key("cloud")
		old := newMemSource("e1", edgeKey)
		old.add(5)
		old.add(5)
		if err := old.Trim(protocol.Receipt{Edge: "e1", Epoch: old.Stream().Epoch, HWM: 5, Head: old.chain.Links[4]}); err != nil {
			t.Fatal(err)
		}
		stale := cloudKey.SignReceipt(protocol.Receipt{Edge: "e1", Epoch: old.Stream().Epoch, HWM: 3, Head: old.chain.Links[2], CommittedAt: 1})
		cloud := &memCloud{signer: cloudKey, stream: old.Stream(), hwm: 40, beforeHello: [][]byte{stale}}
		src := &divSource{cur: old, signer: edgeKey, cloud: cloud}
		up, err := uplink.New(uplink.Options{Transport: &memTransport{cloud: cloud}, Source: src,
			CloudKeys: protocol.NewKeyMap(cloudKey.Public()), HelloTimeout: 2 * time.Second, AckTimeout: 30 * time.Second,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); _ = up.Run(ctx) }()
		settle(5 * time.Minute)
		cancel()
		<-done
		src.mu.Lock()
		left := src.left
		src.mu.Unlock()
		if len(left) != 1 || left[0].HWM != 40 || left[0].Stream() != old.Stream() {
			t.Fatalf("left the stream on %+v, want once, on the cloud's receipt at 40; stats %+v", left, up.Stats())
		}
	})
}
