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

// memTransport is an in-memory Transport with a scripted cloud behind it.
// It answers synchronously, from inside Hello and Publish, which is allowed:
// onReply does not block.
type memTransport struct {
	mu      sync.Mutex
	onReply func([]byte)
	lost    chan struct{}
	cloud   *memCloud
	pubs    []published
	hellos  int
}

type published struct {
	at          time.Time
	first, last uint64
	size        int // bytes of the segment as sent
}

var _ uplink.Transport = (*memTransport)(nil)

func (m *memTransport) Connect(_ context.Context, onReply func([]byte)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onReply, m.lost = onReply, make(chan struct{})
	return nil
}

func (m *memTransport) Hello(_ context.Context, b []byte) error {
	h, err := protocol.DecodeHello(b)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.hellos++
	reply := m.onReply
	m.mu.Unlock()
	for _, r := range m.cloud.hello(h) {
		reply(r)
	}
	return nil
}

func (m *memTransport) Publish(_ context.Context, b []byte, _ string) error {
	seg, err := protocol.DecodeSegment(b)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.pubs = append(m.pubs, published{at: time.Now(), first: seg.First, last: seg.Last, size: len(b)})
	reply := m.onReply
	m.mu.Unlock()
	for _, r := range m.cloud.segment(seg) {
		reply(r)
	}
	return nil
}

func (m *memTransport) Lost() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lost
}

func (m *memTransport) Close() error { return nil }

func (m *memTransport) published() []published {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]published(nil), m.pubs...)
}

// memCloud commits segments that continue its watermark and answers the
// others with gap nacks; refuse, when set, decides a segment's fate first.
type memCloud struct {
	mu     sync.Mutex
	signer *protocol.Signer
	stream protocol.Stream
	hwm    uint64
	head   protocol.Hash
	// refuse returns a nack code for seg, 0 to go on, or -1 to lose it
	// silently.
	refuse func(seg *protocol.Segment) int
}

func (c *memCloud) receipt() []byte {
	return c.signer.SignReceipt(protocol.Receipt{Edge: c.stream.Edge, Epoch: c.stream.Epoch, HWM: c.hwm, Head: c.head, CommittedAt: time.Now().UnixMilli()})
}

func (c *memCloud) nack(seg *protocol.Segment, code protocol.NackCode) []byte {
	return c.signer.SignNack(protocol.Nack{Edge: c.stream.Edge, Epoch: c.stream.Epoch, HWM: c.hwm, Head: c.head,
		Code: code, Reason: code.String(), At: time.Now().UnixMilli()})
}

func (c *memCloud) hello(protocol.Hello) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return [][]byte{c.receipt()}
}

func (c *memCloud) segment(seg *protocol.Segment) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refuse != nil {
		switch code := c.refuse(seg); {
		case code < 0:
			return nil
		case code > 0:
			return [][]byte{c.nack(seg, protocol.NackCode(code))}
		}
	}
	if seg.First > c.hwm+1 {
		return [][]byte{c.nack(seg, protocol.NackGap)}
	}
	if seg.Last > c.hwm {
		c.hwm, c.head = seg.Last, protocol.HashBytes(seg.Records[len(seg.Records)-1])
	}
	return [][]byte{c.receipt()}
}

type memRig struct {
	src   *memSource
	tr    *memTransport
	cloud *memCloud
	up    *uplink.Uplink
}

// startMem runs an uplink over a memTransport inside the current synctest
// bubble; it stops when the test's bubble ends.
func startMem(t *testing.T, refuse func(*protocol.Segment) int, mod func(*uplink.Options), groups ...int) *memRig {
	t.Helper()
	edgeKey, cloudKey := key("edge"), key("cloud")
	r := &memRig{src: newMemSource("e1", edgeKey)}
	for _, n := range groups {
		r.src.add(n)
	}
	r.cloud = &memCloud{signer: cloudKey, stream: r.src.Stream(), refuse: refuse}
	r.tr = &memTransport{cloud: r.cloud}
	o := uplink.Options{Transport: r.tr, Source: r.src, CloudKeys: protocol.NewKeyMap(cloudKey.Public()),
		Window: 4, MaxSegmentBytes: 600, Poll: 50 * time.Millisecond, BackoffBase: 500 * time.Millisecond, BackoffMax: 4 * time.Second,
		HelloTimeout: 2 * time.Second, AckTimeout: 30 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&o)
	}
	var err error
	r.up, err = uplink.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.up.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// settle lets virtual time run for d and waits until every goroutine of
// the bubble is blocked again.
func settle(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// A nack saying the cloud does not know the edge's key holds the backlog
// for RefusedHold, and then the uplink asks again.
func TestSessionRefusalHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startMem(t, func(*protocol.Segment) int { return int(protocol.NackUnknown) }, nil, 10)
		settle(time.Second)
		if n := len(r.tr.published()); n != 1 {
			t.Fatalf("%d segments sent before the hold; want 1", n)
		}
		settle(uplink.RefusedHold - 2*time.Second)
		if n := len(r.tr.published()); n != 1 {
			t.Fatalf("%d segments sent during the hold; want still 1", n)
		}
		settle(2 * time.Second)
		p := r.tr.published()
		if len(p) != 2 {
			t.Fatalf("%d segments sent after the hold; want 2", len(p))
		}
		if gap := p[1].at.Sub(p[0].at); gap < uplink.RefusedHold {
			t.Fatalf("resent after %s; want at least %s", gap, uplink.RefusedHold)
		}
		if s := r.up.Stats(); s.Nacks != 2 || s.AckedHWM != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// Nacks that are not gaps back off exponentially from BackoffBase up to
// BackoffMax, and a receipt resets the backoff.
func TestSessionNackBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		refusing := true
		r := startMem(t, func(*protocol.Segment) int {
			mu.Lock()
			defer mu.Unlock()
			if refusing {
				return int(protocol.NackChain)
			}
			return 0
		}, nil, 10)
		settle(20 * time.Second)
		p := r.tr.published()
		want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}
		if len(p) < len(want)+1 {
			t.Fatalf("%d sends in 20s; want at least %d", len(p), len(want)+1)
		}
		const tick = 50 * time.Millisecond // the uplink's Poll in startMem
		for i, w := range want {
			if gap := p[i+1].at.Sub(p[i].at); gap < w || gap > w+tick {
				t.Errorf("send %d came %s after the one before; want %s (the backoff), within one poll", i+1, gap, w)
			}
		}
		mu.Lock()
		refusing = false
		mu.Unlock()
		settle(5 * time.Second)
		if got := r.src.Trimmed(); got != 10 {
			t.Fatalf("trimmed to %d once the cloud accepts; want 10", got)
		}
	})
}

// A lost segment is resent on the first gap nack; the nacks of the segments
// that were behind it (same hwm, within AckTimeout) cause no more rewinds.
// Lost again within that window, it is recovered by the ack timeout.
func TestSessionGapRewindWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		losses := 2
		r := startMem(t, func(seg *protocol.Segment) int {
			mu.Lock()
			defer mu.Unlock()
			if seg.First == 1 && losses > 0 {
				losses--
				return -1
			}
			return 0
		}, nil, 5, 5, 5, 5)
		settle(time.Second)
		// Sent 4, three gap nacks, one rewind; the resend lost seg 1 again,
		// whose three gap nacks fall in the window and are ignored.
		if p, s := r.tr.published(), r.up.Stats(); len(p) != 8 || s.Rewinds != 1 || s.Nacks != 6 {
			t.Fatalf("%d sends, %d rewinds, %d nacks; want 8, 1, 6", len(p), s.Rewinds, s.Nacks)
		}
		settle(25 * time.Second)
		if got := r.src.Trimmed(); got != 0 {
			t.Fatalf("trimmed to %d before the ack timeout", got)
		}
		settle(10 * time.Second)
		if got, s := r.src.Trimmed(), r.up.Stats(); got != 20 || s.Rewinds != 2 {
			t.Fatalf("trimmed %d with %d rewinds after the ack timeout; want 20 and 2", got, s.Rewinds)
		}
	})
}
