package uplink_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/edge/uplink/mqtt"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func key(name string) *protocol.Signer {
	s, err := protocol.NewSigner(protocoltest.Key(name))
	if err != nil {
		panic(err)
	}
	return s
}

// memSource is an in-memory outbox: records in groups, a checkpoint per group.
type memSource struct {
	mu      sync.Mutex
	chain   *protocoltest.Stream
	cps     map[uint64][]byte // checkpoint by the last seq of its group
	trimmed uint64
	changed chan struct{} // closed and replaced by add
}

func newMemSource(edge string, signer *protocol.Signer) *memSource {
	ep, _ := protocol.NewEpoch(nil)
	return &memSource{chain: &protocoltest.Stream{Stream: protocol.Stream{Edge: edge, Epoch: ep}, Signer: signer},
		cps: map[uint64][]byte{}}
}

func (m *memSource) add(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for range n {
		seq := m.chain.Last() + 1
		r := protocol.NewRecord(m.chain.Stream, "d1", protocol.Event{ID: fmt.Sprint("e", seq), Type: "door.opened", TS: time.UnixMilli(1)})
		r.EdgeTime = protocol.HLCTime(seq)
		m.chain.Add(r)
	}
	m.cps[m.chain.Last()] = m.chain.Checkpoint(m.chain.Last())
	if m.changed != nil {
		close(m.changed)
	}
	m.changed = make(chan struct{})
}

func (m *memSource) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.changed == nil {
		m.changed = make(chan struct{})
	}
	return m.changed
}

func (m *memSource) Stream() protocol.Stream { return m.chain.Stream }
func (m *memSource) LastSeq() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.chain.Last()
}
func (m *memSource) AckedSeq() uint64 { return m.Trimmed() }

func (m *memSource) Trimmed() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.trimmed
}

func (m *memSource) Segment(from uint64, maxBytes int) (*protocol.Segment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if from <= m.trimmed {
		return nil, fmt.Errorf("seq %d is trimmed", from)
	}
	last := m.chain.Last()
	if from > last {
		return nil, nil
	}
	s := &protocol.Segment{V: 1, Edge: m.chain.Stream.Edge, Epoch: m.chain.Stream.Epoch, First: from}
	size := protocol.SegmentOverhead
	for seq := from; seq <= last; seq++ {
		raw := m.chain.Raws[seq-1]
		size += len(raw)
		if size > maxBytes && s.Checkpoint != nil {
			break
		}
		s.Records = append(s.Records, raw)
		if cp, ok := m.cps[seq]; ok {
			s.Last, s.Checkpoint = seq, cp
		}
	}
	s.Records = s.Records[:s.Last-from+1]
	return s, nil
}

// Trim forgets records up to a receipt's hwm, after checking the receipt
// names a record it holds (or has trimmed already).
func (m *memSource) Trim(r protocol.Receipt) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.Stream() != m.chain.Stream {
		return errors.New("wrong stream")
	}
	if r.HWM > m.chain.Last() {
		return fmt.Errorf("no record %d", r.HWM)
	}
	if r.HWM > m.trimmed && m.chain.Links[r.HWM-1] != r.Head {
		return errors.New("head mismatch")
	}
	m.trimmed = max(m.trimmed, r.HWM)
	return nil
}

// fakeCloud answers hellos and segments on an embedded broker, signing real
// receipts: enough of the cloud to test the uplink alone.
type fakeCloud struct {
	t      *testing.T
	srv    *mochi.Server
	signer *protocol.Signer
	edgeKs protocol.Keys

	mu      sync.Mutex
	state   map[protocol.Stream]protocol.ChainState
	dropSeg func(s *protocol.Segment) bool // drop (do not commit, no reply)
	segs    int
}

func (c *fakeCloud) receipt(st protocol.ChainState) []byte {
	return c.signer.SignReceipt(protocol.Receipt{Edge: st.Stream.Edge, Epoch: st.Stream.Epoch, HWM: st.Seq, Head: st.Head, CommittedAt: time.Now().UnixMilli()})
}

func (c *fakeCloud) onHello(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
	h, err := protocol.DecodeHello(pk.Payload)
	if err != nil {
		c.t.Errorf("fake cloud: hello: %v", err)
		return
	}
	st := protocol.Stream{Edge: h.Edge, Epoch: h.Epoch}
	c.mu.Lock()
	cs, ok := c.state[st]
	if !ok {
		cs = protocol.ChainState{Stream: st}
	}
	c.mu.Unlock()
	topic, _ := protocol.EdgeTopic(h.Edge, protocol.KindReceipt)
	_ = c.srv.Publish(topic, c.receipt(cs), false, 1)
}

func (c *fakeCloud) onSegment(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
	seg, err := protocol.DecodeSegment(pk.Payload)
	if err != nil {
		c.t.Errorf("fake cloud: segment: %v", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.segs++
	if c.dropSeg != nil && c.dropSeg(seg) {
		return
	}
	st := seg.Stream()
	cs, ok := c.state[st]
	if !ok {
		cs = protocol.ChainState{Stream: st}
	}
	topic, _ := protocol.EdgeTopic(st.Edge, protocol.KindReceipt)
	if seg.First > cs.Seq+1 {
		ref := protocol.RefOf(pk.Payload, seg)
		_ = c.srv.Publish(topic, c.signer.SignNack(protocol.Nack{Edge: st.Edge, Epoch: st.Epoch, HWM: cs.Seq, Head: cs.Head, Code: protocol.NackGap, Reason: "gap",
			At: time.Now().UnixMilli(), First: ref.First, Last: ref.Last, SegKID: ref.KID, SegHash: ref.Hash}), false, 1)
		return
	}
	if seg.Last > cs.Seq {
		cp, err := protocol.VerifyCheckpoint(seg.Checkpoint, c.edgeKs)
		if err != nil {
			c.t.Errorf("fake cloud: checkpoint: %v", err)
			return
		}
		skip := cs.Seq + 1 - seg.First
		want := protocol.ChainState{Stream: st, Seq: cp.Seq, Head: cp.Head}
		next, _, err := protocol.VerifyChain(cs, seg.Records[skip:], &want)
		if err != nil {
			c.t.Errorf("fake cloud: chain: %v", err)
			return
		}
		cs = next
		c.state[st] = cs
	}
	_ = c.srv.Publish(topic, c.receipt(cs), false, 1)
}

// sharedListener is one listening socket that the rig holds for its whole
// life and hands to each broker it starts in turn, so a broker restart
// never rebinds a just-closed port (which another process may have taken
// in between). Connections that arrive between two brokers wait for the
// next one.
type sharedListener struct {
	ln    net.Listener
	conns chan net.Conn
	stop  chan struct{}
}

func newSharedListener(t *testing.T) *sharedListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sharedListener{ln: ln, conns: make(chan net.Conn), stop: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case s.conns <- c:
			case <-s.stop:
				_ = c.Close()
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(s.stop)
		_ = ln.Close()
		<-done
	})
	return s
}

func (s *sharedListener) Addr() string { return s.ln.Addr().String() }

// next is the listener of one broker's life: closing it (as the broker's
// Close does) leaves the socket open for the next.
func (s *sharedListener) next() net.Listener {
	return &brokerListener{s: s, closed: make(chan struct{})}
}

type brokerListener struct {
	s      *sharedListener
	once   sync.Once
	closed chan struct{}
}

func (l *brokerListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.s.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-l.s.stop:
		return nil, net.ErrClosed
	}
}

func (l *brokerListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *brokerListener) Addr() net.Addr { return l.s.ln.Addr() }

func startBroker(t *testing.T, ln *sharedListener, cloud *fakeCloud) *mochi.Server {
	t.Helper()
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("tcp", ln.next())); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	cloud.srv = srv
	if err := srv.Subscribe(protocol.HelloFilterMQTT, 1, cloud.onHello); err != nil {
		t.Fatal(err)
	}
	if err := srv.Subscribe(protocol.SegmentFilterMQTT, 2, cloud.onSegment); err != nil {
		t.Fatal(err)
	}
	return srv
}

type rig struct {
	src    *memSource
	cloud  *fakeCloud
	up     *uplink.Uplink
	addr   string
	ln     *sharedListener // every broker of the rig listens on it
	broker *mochi.Server
	cancel context.CancelFunc
	done   chan struct{}
}

func newRig(t *testing.T, mod func(*uplink.Options), prefill ...int) *rig {
	t.Helper()
	return newRigDropping(t, nil, mod, prefill...)
}

// newRigDropping is newRig with a fake cloud that silently loses the
// segments drop says to, from the first segment on.
func newRigDropping(t *testing.T, drop func(*protocol.Segment) bool, mod func(*uplink.Options), prefill ...int) *rig {
	t.Helper()
	edgeKey, cloudKey := key("edge"), key("cloud")
	r := &rig{src: newMemSource("e1", edgeKey), ln: newSharedListener(t)}
	r.addr = r.ln.Addr()
	for _, n := range prefill {
		r.src.add(n)
	}
	r.cloud = &fakeCloud{t: t, signer: cloudKey, edgeKs: protocol.NewKeyMap(edgeKey.Public()), state: map[protocol.Stream]protocol.ChainState{}, dropSeg: drop}
	r.broker = startBroker(t, r.ln, r.cloud)
	tr, err := mqtt.New(mqtt.Options{Broker: "tcp://" + r.addr, Edge: "e1", Signer: edgeKey, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	o := uplink.Options{Transport: tr, Source: r.src, CloudKeys: protocol.NewKeyMap(cloudKey.Public()),
		Window: 4, MaxSegmentBytes: 4 << 10, BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		HelloTimeout: 2 * time.Second, AckTimeout: time.Second}
	if mod != nil {
		mod(&o)
	}
	r.up, err = uplink.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() { defer close(r.done); _ = r.up.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
		_ = r.cloud.srv.Close()
	})
	return r
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	poll.Until(t, timeout, what, cond)
}

func TestDeliversAndTrimsOnReceipt(t *testing.T) {
	r := newRig(t, nil)
	for i := 0; i < 50; i++ {
		r.src.add(7)
	}
	waitFor(t, "trim to 350", 10*time.Second, func() bool { return r.src.Trimmed() == 350 })
	st := r.up.Stats()
	if st.AckedHWM != 350 || st.ForgedReplies != 0 || st.SegmentsSent == 0 {
		t.Fatalf("stats %+v", st)
	}
	// More records later are sent too.
	r.src.add(3)
	waitFor(t, "trim to 353", 10*time.Second, func() bool { return r.src.Trimmed() == 353 })
}

func TestForgedReplayedAndWrongStreamReceiptsTrimNothing(t *testing.T) {
	r := newRig(t, nil)
	r.cloud.mu.Lock()
	r.cloud.dropSeg = func(*protocol.Segment) bool { return true } // the cloud is silent
	r.cloud.mu.Unlock()
	r.src.add(10)
	waitFor(t, "a segment sent", 5*time.Second, func() bool { return r.up.Stats().SegmentsSent > 0 })
	topic, _ := protocol.EdgeTopic("e1", protocol.KindReceipt)
	st := r.src.Stream()
	forger := key("not the cloud")
	_ = r.broker.Publish(topic, forger.SignReceipt(protocol.Receipt{Edge: "e1", Epoch: st.Epoch, HWM: 10, Head: r.src.chain.Head().Head}), false, 1)
	other := protocol.Epoch{9}
	_ = r.broker.Publish(topic, r.cloud.signer.SignReceipt(protocol.Receipt{Edge: "e1", Epoch: other, HWM: 10}), false, 1)
	_ = r.broker.Publish(topic, r.cloud.signer.SignReceipt(protocol.Receipt{Edge: "e1", Epoch: st.Epoch, HWM: 5, Head: protocol.Hash{1}}), false, 1)
	_ = r.broker.Publish(topic, []byte("garbage"), false, 1)
	waitFor(t, "replies counted", 5*time.Second, func() bool {
		s := r.up.Stats()
		return s.ForgedReplies >= 3 && s.WrongStream >= 1
	})
	if got := r.src.Trimmed(); got != 0 {
		t.Fatalf("trimmed to %d on forged receipts", got)
	}
	// A genuine receipt then trims, and an older one replayed is ignored.
	r.cloud.mu.Lock()
	r.cloud.dropSeg = nil
	r.cloud.mu.Unlock()
	waitFor(t, "trim to 10 after the ack timeout resend", 10*time.Second, func() bool { return r.src.Trimmed() == 10 })
	r.src.add(5)
	waitFor(t, "trim to 15", 10*time.Second, func() bool { return r.src.Trimmed() == 15 })
	r.cloud.mu.Lock()
	old := r.cloud.receipt(protocol.ChainState{Stream: st, Seq: 10, Head: r.cloud.state[st].Head})
	r.cloud.mu.Unlock()
	_ = r.broker.Publish(topic, old, false, 1)
	waitFor(t, "replay counted", 5*time.Second, func() bool { return r.up.Stats().ReplayedReplies >= 1 })
	if got := r.src.Trimmed(); got != 15 {
		t.Fatalf("trimmed %d", got)
	}
}

// A lost segment is resent on the first gap nack, not after the ack
// timeout, and the nacks of the segments behind it cause no more rewinds.
func TestGapNackResends(t *testing.T) {
	var once sync.Once
	ten := make([]int, 20)
	for i := range ten {
		ten[i] = 10
	}
	dropFirst := func(s *protocol.Segment) bool { // lose the first segment once
		dropped := false
		if s.First == 1 {
			once.Do(func() { dropped = true })
		}
		return dropped
	}
	r := newRigDropping(t, dropFirst, func(o *uplink.Options) { o.AckTimeout = time.Minute }, ten...)
	waitFor(t, "trim to 200", 15*time.Second, func() bool { return r.src.Trimmed() == 200 })
	if s := r.up.Stats(); s.Nacks < 2 || s.Rewinds != 1 {
		t.Fatalf("%d nacks and %d rewinds; want several nacks and one rewind", s.Nacks, s.Rewinds)
	}
}

func TestBrokerRestart(t *testing.T) {
	r := newRig(t, nil)
	r.src.add(20)
	waitFor(t, "trim to 20", 10*time.Second, func() bool { return r.src.Trimmed() == 20 })
	_ = r.broker.Close()
	waitFor(t, "disconnect noticed", 10*time.Second, func() bool { return !r.up.Stats().Connected })
	r.src.add(30) // the shop keeps selling
	r.broker = startBroker(t, r.ln, r.cloud)
	waitFor(t, "trim to 50 after the restart", 15*time.Second, func() bool { return r.src.Trimmed() == 50 })
	if s := r.up.Stats(); s.Sessions < 2 {
		t.Fatalf("sessions %d", s.Sessions)
	}
}

// TestRateCap is in ratecap_test.go: it measures the cap in virtual time.
