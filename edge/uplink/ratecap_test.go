package uplink_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/protocol"
)

// memTransport is a cloud in memory: it answers a hello with the receipt
// of what it holds and each segment with a receipt for its last record, at
// once and from the caller's goroutine. It trusts what it is sent; the
// uplink's own checks are tested against the fake cloud on a broker.
type memTransport struct {
	signer *protocol.Signer

	mu      sync.Mutex
	onReply func([]byte)
	lost    chan struct{}
	state   protocol.ChainState
	bytes   int // segment bytes published

	want    uint64 // close reached once a segment ends at want
	reached chan struct{}
}

func (m *memTransport) Connect(_ context.Context, onReply func([]byte)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onReply, m.lost = onReply, make(chan struct{})
	return nil
}

func (m *memTransport) reply() {
	st := m.state
	m.onReply(m.signer.SignReceipt(protocol.Receipt{Edge: st.Stream.Edge, Epoch: st.Stream.Epoch, HWM: st.Seq, Head: st.Head, CommittedAt: time.Now().UnixMilli()}))
}

func (m *memTransport) Hello(_ context.Context, b []byte) error {
	h, err := protocol.DecodeHello(b)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state.Stream.Edge == "" {
		m.state.Stream = protocol.Stream{Edge: h.Edge, Epoch: h.Epoch}
	}
	m.reply()
	return nil
}

func (m *memTransport) Publish(_ context.Context, b []byte, _ string) error {
	seg, err := protocol.DecodeSegment(b)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bytes += len(b)
	if seg.Last > m.state.Seq {
		m.state.Seq, m.state.Head = seg.Last, protocol.HashBytes(seg.Records[len(seg.Records)-1])
		if m.state.Seq == m.want {
			close(m.reached)
		}
	}
	m.reply()
	return nil
}

func (m *memTransport) Lost() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lost
}

func (m *memTransport) Close() error { return nil }

func (m *memTransport) published() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes
}

// TestRateCap measures the cap: in virtual time (testing/synctest), the
// bytes sent beyond the limiter's burst (one largest segment) take at
// least bytes/RateBytes, and not much longer. Without the limiter the
// whole backlog goes out at virtual time zero, so the first check fails.
func TestRateCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rateBytes = 256 << 10
		edgeKey, cloudKey := key("edge-rate"), key("cloud-rate")
		src := newMemSource("edge-rate", edgeKey)
		for range 40 {
			src.add(1000) // 40 segments of about 90 KiB: 3.5 MiB, over three times the burst
		}
		tr := &memTransport{signer: cloudKey, want: src.LastSeq(), reached: make(chan struct{})}
		up, err := uplink.New(uplink.Options{
			Transport: tr, Source: src, CloudKeys: protocol.NewKeyMap(cloudKey.Public()),
			Window: 4, MaxSegmentBytes: protocol.MaxSegmentBytes, RateBytes: rateBytes,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- up.Run(ctx) }()
		<-tr.reached // the last segment went out
		elapsed := time.Since(start)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		sent := tr.published()
		if sent < 3*protocol.MaxSegmentBytes {
			t.Fatalf("sent %d bytes; the test needs well over the burst of %d", sent, protocol.MaxSegmentBytes)
		}
		least := time.Duration(float64(sent-protocol.MaxSegmentBytes) / rateBytes * float64(time.Second))
		if elapsed < least {
			t.Fatalf("%d bytes went out in %v of virtual time: %.0f bytes/s, over the cap of %d (at least %v expected)",
				sent, elapsed, float64(sent)/elapsed.Seconds(), rateBytes, least)
		}
		if most := time.Duration(float64(sent)/rateBytes*float64(time.Second)) + 2*time.Second; elapsed > most {
			t.Fatalf("%d bytes took %v of virtual time, want at most %v: the cap slows the uplink more than it says", sent, elapsed, most)
		}
		t.Logf("%d bytes in %v of virtual time: %.0f bytes/s for a cap of %d", sent, elapsed, float64(sent)/elapsed.Seconds(), rateBytes)
	})
}
