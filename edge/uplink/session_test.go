package uplink_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
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
	hellos  []protocol.Hello
	replies [][]byte // every reply the cloud sent, in order
}

// firstNack returns the first nack the cloud sent, as signed bytes.
func (m *memTransport) firstNack(t *testing.T) []byte {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range m.replies {
		if r, err := protocol.VerifyReply(b, protocol.NewKeyMap(m.cloud.signer.Public())); err == nil && r.Nack != nil {
			return b
		}
	}
	t.Fatal("the cloud sent no nack")
	return nil
}

type published struct {
	at          time.Time
	first, last uint64
	size        int // bytes of the segment as sent
	msgID       string
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
	m.hellos = append(m.hellos, h)
	reply := m.onReply
	m.mu.Unlock()
	for _, r := range m.cloud.hello(h) {
		reply(r)
	}
	return nil
}

func (m *memTransport) Publish(_ context.Context, b []byte, msgID string) error {
	seg, err := protocol.DecodeSegment(b)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.pubs = append(m.pubs, published{at: time.Now(), first: seg.First, last: seg.Last, size: len(b), msgID: msgID})
	reply := m.onReply
	m.mu.Unlock()
	for _, r := range m.cloud.segment(b, seg) {
		m.mu.Lock()
		m.replies = append(m.replies, r)
		m.mu.Unlock()
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

// msgIDs are the message ids of every publish, in order.
func (m *memTransport) msgIDs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for _, p := range m.pubs {
		ids = append(ids, p.msgID)
	}
	return ids
}

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
	// beforeHello are replies that reach the edge before each hello's
	// answer (another worker's stale receipt, or a replay).
	beforeHello [][]byte
}

func (c *memCloud) receipt() []byte {
	return c.signer.SignReceipt(protocol.Receipt{Edge: c.stream.Edge, Epoch: c.stream.Epoch, HWM: c.hwm, Head: c.head, CommittedAt: time.Now().UnixMilli()})
}

// nack refuses the segment published as raw, bound to it as the real
// cloud binds its nacks.
func (c *memCloud) nack(raw []byte, seg *protocol.Segment, code protocol.NackCode) []byte {
	ref := protocol.RefOf(raw, seg)
	return c.signer.SignNack(protocol.Nack{Edge: c.stream.Edge, Epoch: c.stream.Epoch, HWM: c.hwm, Head: c.head,
		Code: code, Reason: code.String(), At: time.Now().UnixMilli(),
		First: ref.First, Last: ref.Last, SegKID: ref.KID, SegHash: ref.Hash})
}

func (c *memCloud) hello(protocol.Hello) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append(append([][]byte(nil), c.beforeHello...), c.receipt())
}

func (c *memCloud) segment(raw []byte, seg *protocol.Segment) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refuse != nil {
		switch code := c.refuse(seg); {
		case code < 0:
			return nil
		case code > 0:
			return [][]byte{c.nack(raw, seg, protocol.NackCode(code))}
		}
	}
	if seg.First > c.hwm+1 {
		return [][]byte{c.nack(raw, seg, protocol.NackGap)}
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
		Window: 4, MaxSegmentBytes: 600, BackoffBase: 500 * time.Millisecond, BackoffMax: 4 * time.Second,
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
		if gap := p[1].at.Sub(p[0].at); gap != uplink.RefusedHold {
			t.Fatalf("resent after %s; want %s", gap, uplink.RefusedHold)
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
		// In virtual time the hold ends on its own timer, exactly.
		for i, w := range want {
			if gap := p[i+1].at.Sub(p[i].at); gap != w {
				t.Errorf("send %d came %s after the one before; want %s (the backoff)", i+1, gap, w)
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
		// whose three gap nacks fall in the window and cause no rewind. (In
		// virtual time they carry the same at as the first three, so the
		// uplink counts them as replays: either way, nothing moves.)
		if p, s := r.tr.published(), r.up.Stats(); len(p) != 8 || s.Rewinds != 1 || s.Nacks+s.IgnoredNacks != 6 {
			t.Fatalf("%d sends, %d rewinds, %d+%d nacks; want 8, 1, 6", len(p), s.Rewinds, s.Nacks, s.IgnoredNacks)
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

// inject delivers msg as if it arrived on the edge's rcpt topic.
func (m *memTransport) inject(msg []byte) {
	m.mu.Lock()
	reply := m.onReply
	m.mu.Unlock()
	reply(msg)
}

// trimsWithin adds n records at each second for secs seconds and checks
// that each batch is trimmed within 100ms of virtual time: uploads never
// stall.
func trimsWithin(t *testing.T, r *memRig, secs int) {
	t.Helper()
	for i := 0; i < secs; i++ {
		settle(time.Second - 100*time.Millisecond)
		r.src.add(3)
		want := r.src.LastSeq()
		settle(100 * time.Millisecond)
		if got := r.src.Trimmed(); got != want {
			t.Fatalf("second %d: trimmed to %d, want %d: uploads stalled (stats %+v)", i+1, got, want, r.up.Stats())
		}
	}
}

// A real nack replayed every 0.5s (the attack kept an edge from uploading
// for 30s) is acted on once; its replays are counted and ignored.
func TestSessionReplayedNackIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The first send of segment 1-10 is refused (chain): that nack is
		// what the attacker records and replays.
		refused := false
		r := startMem(t, func(*protocol.Segment) int {
			if !refused {
				refused = true
				return int(protocol.NackChain)
			}
			return 0
		}, nil, 10)
		settle(time.Second)
		if got := r.src.Trimmed(); got != 10 {
			t.Fatalf("trimmed %d after the honest nack and resend; want 10", got)
		}
		nack := r.tr.firstNack(t)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tk := time.NewTicker(500 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
					r.tr.inject(nack)
				}
			}
		}()
		trimsWithin(t, r, 30)
		if s := r.up.Stats(); s.Nacks != 1 || s.IgnoredNacks < 55 {
			t.Fatalf("%d nacks acted on and %d ignored; want 1 and one per replay", s.Nacks, s.IgnoredNacks)
		}
	})
}

// Nacks about segments the edge did not send do nothing: a forged segment
// on the edge's topic (the cloud refuses it as signed by a key it does not
// know, which used to hold the backlog for RefusedHold), a nack about
// another stream's segment, and one naming the edge's own range but other
// bytes or another key.
func TestSessionForeignNacksIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startMem(t, nil, nil, 5)
		settle(time.Second)
		if got := r.src.Trimmed(); got != 5 {
			t.Fatalf("trimmed %d; want 5", got)
		}
		st := r.src.Stream()
		// An attacker's segment for the edge's stream and next range, signed
		// by a key the edge never had; the cloud nacks it to the edge's topic.
		forger := (&protocoltest.Stream{Stream: st, Signer: key("attacker")}).AddN(t, 8)
		fseg := forger.Segment(6, 8)
		fraw := protocoltest.Encode(t, fseg, false)
		cloud := r.cloud.signer
		bind := func(n protocol.Nack, ref protocol.SegmentRef) []byte {
			n.First, n.Last, n.SegKID, n.SegHash, n.At = ref.First, ref.Last, ref.KID, ref.Hash, time.Now().UnixMilli()
			return cloud.SignNack(n)
		}
		forged := protocol.RefOf(fraw, fseg)
		other := protocol.Stream{Edge: "e2", Epoch: protocol.Epoch{2}}
		nacks := [][]byte{
			bind(protocol.Nack{Edge: st.Edge, Epoch: st.Epoch, HWM: 5, Code: protocol.NackUnknown, Reason: "key unknown"}, forged),
			bind(protocol.Nack{Edge: other.Edge, Epoch: other.Epoch, Code: protocol.NackRevoked, Reason: "revoked"}, forged),
			bind(protocol.Nack{Edge: st.Edge, Epoch: st.Epoch, HWM: 5, Code: protocol.NackRevoked, Reason: "revoked"},
				protocol.SegmentRef{First: 6, Last: 8, KID: key("edge").KeyID(), Hash: protocol.Hash{1}}),
			bind(protocol.Nack{Edge: st.Edge, Epoch: st.Epoch, HWM: 5, Code: protocol.NackUnknown, Reason: "unknown"},
				protocol.SegmentRef{First: 1, Last: 5, KID: key("attacker").KeyID(), Hash: protocol.RefOf(nil, nil).Hash}),
		}
		for _, n := range nacks {
			r.tr.inject(n)
		}
		trimsWithin(t, r, 5)
		for range 3 { // and again, while segments are in flight
			r.src.add(3)
			for _, n := range nacks {
				r.tr.inject(n)
			}
		}
		trimsWithin(t, r, 2)
		if s := r.up.Stats(); s.Nacks != 0 || s.IgnoredNacks != 12 || s.WrongStream != 4 {
			t.Fatalf("%d nacks acted on, %d ignored, %d for another stream; want 0, 12, 4", s.Nacks, s.IgnoredNacks, s.WrongStream)
		}
	})
}

// The hello carries the edge's signed checkpoint of its head, from which
// alone the cloud records the edge's head (for lag); with everything
// acknowledged there is none to send.
func TestSessionHelloCarriesSignedHead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startMem(t, func(*protocol.Segment) int { return -1 }, nil, 4, 3) // the cloud is silent
		settle(time.Second)
		r.tr.mu.Lock()
		h := r.tr.hellos[0]
		r.tr.mu.Unlock()
		cp, err := protocol.VerifyCheckpoint(h.Checkpoint, protocol.NewKeyMap(key("edge").Public()))
		if err != nil || h.V != protocol.HelloVersion || h.Seq != 7 || cp.Seq != 7 || cp.Stream() != r.src.Stream() {
			t.Fatalf("hello %+v: checkpoint %+v, %v", h, cp, err)
		}
	})
}

// New records are sent at once, woken by the source's Changed channel: no
// polling, so in virtual time they go out at the very instant they commit.
func TestSessionWokenByChanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startMem(t, nil, nil)
		settle(time.Minute) // idle: nothing to send, nothing sent
		if n := len(r.tr.published()); n != 0 {
			t.Fatalf("%d sends with an empty outbox", n)
		}
		at := time.Now()
		r.src.add(3)
		synctest.Wait()
		p := r.tr.published()
		if len(p) != 1 || !p[0].at.Equal(at) || r.src.Trimmed() != 3 {
			t.Fatalf("sends %+v (records committed at %s), trimmed %d", p, at, r.src.Trimmed())
		}
	})
}

// Every hello carries the seq of the last command the edge accepted, read
// at the time of that hello (so the cloud sends only what is above it).
func TestSessionHelloCarriesCmd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var last atomic.Uint64
		last.Store(7)
		r := startMem(t, func(*protocol.Segment) int { return -1 }, func(o *uplink.Options) { o.Cmd = last.Load }, 2)
		settle(time.Second)
		last.Store(9)
		settle(time.Minute) // the ack timeout says hello again
		r.tr.mu.Lock()
		hs := append([]protocol.Hello(nil), r.tr.hellos...)
		r.tr.mu.Unlock()
		if len(hs) < 2 || hs[0].Cmd != 7 || hs[len(hs)-1].Cmd != 9 || hs[0].V != 3 {
			t.Fatalf("hellos %+v, want the first with cmd 7 and the last with cmd 9", hs)
		}
	})
}
