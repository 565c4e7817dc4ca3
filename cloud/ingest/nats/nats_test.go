package nats_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	brokernats "github.com/outpost-edge/outpost/cloud/broker/nats"
	"github.com/outpost-edge/outpost/cloud/ingest"
	ingestnats "github.com/outpost-edge/outpost/cloud/ingest/nats"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// quiet drops logs; the tests say what failed.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fleet is the edges the test server knows, by id.
type fleet map[string]*protocol.Signer

func (f fleet) keys(_ context.Context, edge string) (protocol.Keys, error) {
	s, ok := f[edge]
	if !ok {
		return nil, fmt.Errorf("edge %q is not registered", edge)
	}
	return protocol.NewKeyMap(s.Public()), nil
}

// MustServer starts the embedded server on a free port for tb.
func MustServer(tb testing.TB, f fleet) *brokernats.Broker {
	tb.Helper()
	s, err := brokernats.Start(brokernats.Options{Addr: "127.0.0.1:0", StoreDir: tb.TempDir(), Keys: f.keys, Logger: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// MustInternal connects as the cloud's internal user.
func MustInternal(tb testing.TB, s *brokernats.Broker) (*natsgo.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo(protocol.InternalUser, s.InternalPassword()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// MustEdge connects as an edge with a broker token, the way the edge's
// uplink does.
func MustEdge(tb testing.TB, s *brokernats.Broker, edge string, sg *protocol.Signer) (*natsgo.Conn, *errs) {
	tb.Helper()
	e := &errs{}
	nc, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo(edge, sg.BrokerToken(protocol.BrokerNATS, edge, counter())),
		natsgo.CustomInboxPrefix(protocol.NATSInboxPrefix(edge)),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) { e.add(err) }))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc, e
}

// counter returns broker-token counters that only go up.
func counter() uint64 { return lastCounter.Add(1) }

var lastCounter atomic.Uint64

type errs struct {
	mu   sync.Mutex
	list []error
}

func (e *errs) add(err error) { e.mu.Lock(); e.list = append(e.list, err); e.mu.Unlock() }
func (e *errs) has(substr string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, err := range e.list {
		if strings.Contains(strings.ToLower(err.Error()), substr) {
			return true
		}
	}
	return false
}

func TestEnsureStreamAndConsumer(t *testing.T) {
	s := MustServer(t, fleet{})
	_, js := MustInternal(t, s)
	ctx := context.Background()

	st, created, err := ingestnats.EnsureStream(ctx, js, ingestnats.StreamOptions{})
	if err != nil || !created {
		t.Fatalf("create: created %v, %v", created, err)
	}
	cfg := st.CachedInfo().Config
	if cfg.Name != ingestnats.DefaultStream || cfg.Retention != jetstream.WorkQueuePolicy || cfg.MaxAge != ingestnats.DefaultMaxAge ||
		len(cfg.Subjects) != 1 || cfg.Subjects[0] != protocol.SegmentFilterNATS || cfg.Storage != jetstream.FileStorage ||
		!cfg.DenyPurge || !cfg.DenyDelete || cfg.MaxBytes != ingestnats.DefaultMaxBytes || cfg.MaxMsgsPerSubject != ingestnats.DefaultMaxPerEdge ||
		cfg.MaxMsgSize != ingestnats.MaxMsgSize || cfg.Discard != jetstream.DiscardNew || !cfg.DiscardNewPerSubject {
		t.Fatalf("stream config %+v", cfg)
	}
	if _, created, err := ingestnats.EnsureStream(ctx, js, ingestnats.StreamOptions{Retention: "workqueue"}); err != nil || created {
		t.Fatalf("check: created %v, %v", created, err)
	}
	for _, tc := range []struct {
		name string
		o    ingestnats.StreamOptions
		want []string
	}{
		{"retention", ingestnats.StreamOptions{Retention: "limits"}, []string{"retention is workqueue, want limits", "--nats-retention"}},
		{"max age and replicas", ingestnats.StreamOptions{MaxAge: time.Hour, Replicas: 3}, []string{"max age is 24h0m0s, want 1h0m0s", "replicas are 1, want 3"}},
		{"subjects", ingestnats.StreamOptions{Subjects: []string{"outpost.v1.edge.e1.seg"}}, []string{"subjects are"}},
		{"limits", ingestnats.StreamOptions{MaxBytes: 8 << 30, MaxPerEdge: 10}, []string{"max bytes are 4294967296, want 8589934592 (--nats-max-bytes)",
			"max messages per subject (per edge) are 64, want 10 (--nats-max-per-edge)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ingestnats.EnsureStream(ctx, js, tc.o)
			if !errors.Is(err, ingestnats.ErrMismatch) {
				t.Fatalf("got %v, want ErrMismatch", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	for _, bad := range []ingestnats.StreamOptions{
		{Retention: "interest"}, {Subjects: []string{"outpost.v1.edge.>"}}, {Subjects: []string{"outpost.v1.edge.*.rcpt"}}, {Name: "a.b"},
		{MaxBytes: 1000},
	} {
		if _, _, err := ingestnats.EnsureStream(ctx, js, bad); err == nil || errors.Is(err, ingestnats.ErrMismatch) {
			t.Errorf("%+v: got %v, want a refusal of the options", bad, err)
		}
	}

	c, created, err := ingestnats.EnsureConsumer(ctx, st, ingestnats.ConsumerOptions{})
	if err != nil || !created {
		t.Fatalf("consumer: created %v, %v", created, err)
	}
	cc := c.CachedInfo().Config
	if cc.Durable != ingestnats.DefaultConsumer || cc.AckPolicy != jetstream.AckExplicitPolicy || cc.AckWait != ingestnats.DefaultAckWait ||
		cc.MaxAckPending != ingestnats.DefaultMaxAckPending || cc.DeliverSubject != "" {
		t.Fatalf("consumer config %+v", cc)
	}
	if _, created, err := ingestnats.EnsureConsumer(ctx, st, ingestnats.ConsumerOptions{AckWait: ingestnats.DefaultAckWait}); err != nil || created {
		t.Fatalf("check consumer: created %v, %v", created, err)
	}
	_, _, err = ingestnats.EnsureConsumer(ctx, st, ingestnats.ConsumerOptions{AckWait: time.Minute, MaxAckPending: 10})
	if !errors.Is(err, ingestnats.ErrMismatch) || !strings.Contains(err.Error(), "ack wait is 10s, want 1m0s") ||
		!strings.Contains(err.Error(), "max ack pending is 256, want 10") {
		t.Fatalf("got %v, want a mismatch naming ack wait and max ack pending", err)
	}
}

// gatedLedger commits segments in order per stream once its gate is open.
type gatedLedger struct {
	mu      sync.Mutex
	hwm     map[protocol.Stream]uint64
	records int
	calls   int
	gate    chan struct{}
}

func newGatedLedger(open bool) *gatedLedger {
	l := &gatedLedger{hwm: map[protocol.Stream]uint64{}, gate: make(chan struct{})}
	if open {
		close(l.gate)
	}
	return l
}

func (l *gatedLedger) Commit(ctx context.Context, batch []ledger.Input) ([]ledger.Outcome, error) {
	l.mu.Lock()
	l.calls++
	l.mu.Unlock()
	select {
	case <-l.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ledger.Outcome, len(batch))
	for i, in := range batch {
		s := in.Segment.Stream()
		h := l.hwm[s]
		w := ledger.Watermark{Stream: s, HWM: h, CommittedAt: time.UnixMilli(1)}
		switch {
		case in.Segment.First > h+1:
			out[i] = ledger.Outcome{Kind: ledger.KindGap, Watermark: w, Code: protocol.NackGap, Reason: "gap"}
		case in.Segment.Last <= h:
			out[i] = ledger.Outcome{Kind: ledger.KindDuplicate, Watermark: w}
		default:
			l.records += int(in.Segment.Last - h)
			l.hwm[s] = in.Segment.Last
			w.HWM = in.Segment.Last
			out[i] = ledger.Outcome{Kind: ledger.KindCommitted, Watermark: w, Records: int(in.Segment.Last - h)}
		}
	}
	return out, nil
}

func (l *gatedLedger) NoteHello(_ context.Context, h protocol.Hello) (ledger.Watermark, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := protocol.Stream{Edge: h.Edge, Epoch: h.Epoch}
	return ledger.Watermark{Stream: s, HWM: l.hwm[s]}, nil
}

func (l *gatedLedger) count() int { l.mu.Lock(); defer l.mu.Unlock(); return l.records }
func (l *gatedLedger) tried() int { l.mu.Lock(); defer l.mu.Unlock(); return l.calls }

// seg builds records first..last of stream st, signed by s (signatures
// are the ledger's business, not checked here).
func seg(t *testing.T, s *protocol.Signer, st protocol.Stream, first, last uint64) []byte {
	t.Helper()
	chain := (&protocoltest.Stream{Stream: st, Signer: s}).AddN(t, int(last))
	return protocoltest.Encode(t, chain.Segment(first, last), false)
}

// runCloud runs an ingest service and a NATS consumer until the test ends.
func runCloud(t *testing.T, s *brokernats.Broker, l ingest.Ledger, cloudKey *protocol.Signer, co ingestnats.ConsumerOptions, gapWait time.Duration) *ingestnats.Consumer {
	t.Helper()
	svc, err := ingest.New(ingest.Options{Ledger: l, Signer: cloudKey, GapWait: gapWait, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ingestnats.New(ingestnats.Options{InProcess: s, User: protocol.InternalUser, Password: s.InternalPassword(),
		Consumer: co, Service: svc, IsolatedReplies: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(2)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	go func() { defer wg.Done(); errc <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err := <-errc; err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
	poll.Until(t, 15*time.Second, "the consumer pulling", c.Connected)
	return c
}

// TestAckAfterCommit: a segment stays unacked (NumAckPending 1, still in
// the work queue) until ingest has committed it; then the receipt goes to
// the edge's rcpt subject and the message leaves the stream.
func TestAckAfterCommit(t *testing.T) {
	edgeKey, cloudKey := protocoltest.Signer(t, "e1"), protocoltest.Signer(t, "cloud")
	s := MustServer(t, fleet{"e1": edgeKey})
	l := newGatedLedger(false)
	c := runCloud(t, s, l, cloudKey, ingestnats.ConsumerOptions{}, 0)
	_, cjs := MustInternal(t, s)

	nc, _ := MustEdge(t, s, "e1", edgeKey)
	rcpt, err := nc.SubscribeSync("outpost.v1.edge.e1.rcpt")
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	ctx := context.Background()
	ack, err := js.Publish(ctx, "outpost.v1.edge.e1.seg", seg(t, edgeKey, st, 1, 3), jetstream.WithMsgID("e1:x:1-3"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != ingestnats.DefaultStream {
		t.Fatalf("stored in %q", ack.Stream)
	}
	// Inside the duplicate window the server drops a resend.
	if ack, err := js.Publish(ctx, "outpost.v1.edge.e1.seg", seg(t, edgeKey, st, 1, 3), jetstream.WithMsgID("e1:x:1-3")); err != nil || !ack.Duplicate {
		t.Fatalf("resend: %+v, %v; want a duplicate", ack, err)
	}
	poll.Until(t, 15*time.Second, "the segment delivered and held", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 1
	})
	if si, err := cjs.Stream(ctx, ingestnats.DefaultStream); err != nil || si.CachedInfo().State.Msgs != 1 {
		t.Fatalf("stream before the commit: %v", err)
	}
	close(l.gate)
	m, err := rcpt.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r, err := protocol.VerifyReply(m.Data, protocol.NewKeyMap(cloudKey.Public()))
	if err != nil || r.Receipt == nil || r.Receipt.HWM != 3 {
		t.Fatalf("reply %+v, %v", r, err)
	}
	poll.Until(t, 15*time.Second, "the message acked and gone from the work queue", func() bool {
		info, err := c.Info(ctx)
		si, serr := cjs.Stream(ctx, ingestnats.DefaultStream)
		return err == nil && serr == nil && info.NumAckPending == 0 && si.CachedInfo().State.Msgs == 0
	})

	// A hello is answered with the stream's receipt.
	h := protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: st.Epoch, Seq: 3, SentAt: 1})
	rep, err := nc.Request("outpost.v1.edge.e1.hello", h, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := protocol.VerifyReply(rep.Data, protocol.NewKeyMap(cloudKey.Public())); err != nil || r.Receipt == nil || r.Receipt.HWM != 3 {
		t.Fatalf("hello reply %+v, %v", r, err)
	}
}

// TestSharedConsumer: two consumers (two cloud processes) share the
// durable consumer, and one of them stops with segments in hand, unacked.
// JetStream redelivers those to the other after AckWait, so every record is
// committed. (The survivor's gap wait is longer than AckWait, so the
// segments after the missing ones wait for them instead of being nacked:
// there is no edge here to resend.)
func TestSharedConsumer(t *testing.T) {
	edgeKey, cloudKey := protocoltest.Signer(t, "e1"), protocoltest.Signer(t, "cloud")
	s := MustServer(t, fleet{"e1": edgeKey})
	co := ingestnats.ConsumerOptions{AckWait: time.Second}

	// The process that stops: its database hangs, so it acks nothing.
	stuck := newGatedLedger(false)
	svc, _ := ingest.New(ingest.Options{Ledger: stuck, Signer: cloudKey, Logger: quiet})
	c2, err := ingestnats.New(ingestnats.Options{InProcess: s, User: protocol.InternalUser, Password: s.InternalPassword(), Consumer: co, Service: svc, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx2, stop2 := context.WithCancel(context.Background())
	var wg2 sync.WaitGroup
	wg2.Add(2)
	go func() { defer wg2.Done(); _ = svc.Run(ctx2) }()
	go func() { defer wg2.Done(); _ = c2.Run(ctx2) }()
	defer func() { stop2(); wg2.Wait() }()
	poll.Until(t, 15*time.Second, "the first consumer", c2.Connected)

	nc, _ := MustEdge(t, s, "e1", edgeKey)
	js, _ := jetstream.New(nc)
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{2}}
	const n = 40
	publish := func(from, to uint64) {
		for i := from; i < to; i++ {
			if _, err := js.Publish(context.Background(), "outpost.v1.edge.e1.seg", seg(t, edgeKey, st, 2*i+1, 2*i+2)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(0, n/2)
	poll.Until(t, 15*time.Second, "the first consumer holding segments", func() bool { return stuck.tried() > 0 })

	l := newGatedLedger(true)
	runCloud(t, s, l, cloudKey, co, time.Minute)
	publish(n/2, n)
	stop2()
	wg2.Wait()
	poll.Until(t, 15*time.Second, "every record committed once", func() bool { return l.count() == 2*n })
}

// TestKeepalive: a message held longer than AckWait (its commit hangs) is
// kept in progress, not redelivered.
func TestKeepalive(t *testing.T) {
	edgeKey, cloudKey := protocoltest.Signer(t, "e1"), protocoltest.Signer(t, "cloud")
	s := MustServer(t, fleet{"e1": edgeKey})
	l := newGatedLedger(false)
	defer close(l.gate)
	c := runCloud(t, s, l, cloudKey, ingestnats.ConsumerOptions{AckWait: 300 * time.Millisecond}, 0)
	nc, _ := MustEdge(t, s, "e1", edgeKey)
	js, _ := jetstream.New(nc)
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{3}}
	if _, err := js.Publish(context.Background(), "outpost.v1.edge.e1.seg", seg(t, edgeKey, st, 1, 1)); err != nil {
		t.Fatal(err)
	}
	// Ten keepalives span more than three AckWaits.
	poll.Until(t, 15*time.Second, "keepalives", func() bool { return c.Stats().InProgress >= 10 })
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 1 || info.NumRedelivered != 0 || c.Stats().Redelivered != 0 {
		t.Fatalf("ack pending %d, redelivered %d (server) %d (here); want 1, 0, 0", info.NumAckPending, info.NumRedelivered, c.Stats().Redelivered)
	}
}

// TestHelloReplySubjectAttack: on the embedded server, edge A, with its
// own valid credentials and a plain nats.go client, sends hellos whose
// reply subjects are the JetStream API's purge of the shared stream, and
// edge B's rcpt, seg and inbox subjects. B's pending and ack-pending
// segments stay in the stream (on main the purge emptied it), nothing
// lands on B's subjects, and A's honest hello is still answered. (The
// server delivers the replies inside A's own account, where they reach
// nothing; TestHelloReplySubjectCheck covers a server without that.)
func TestHelloReplySubjectAttack(t *testing.T) {
	aKey, bKey, cloudKey := protocoltest.Signer(t, "ea"), protocoltest.Signer(t, "eb"), protocoltest.Signer(t, "cloud")
	s := MustServer(t, fleet{"ea": aKey, "eb": bKey})
	l := newGatedLedger(false) // nothing commits: B's segments stay pending
	defer close(l.gate)
	c := runCloud(t, s, l, cloudKey, ingestnats.ConsumerOptions{MaxAckPending: 4}, 0)
	_, cjs := MustInternal(t, s)
	ctx := context.Background()

	b, _ := MustEdge(t, s, "eb", bKey)
	bRcpt, err := b.SubscribeSync("outpost.v1.edge.eb.rcpt")
	if err != nil {
		t.Fatal(err)
	}
	bjs, _ := jetstream.New(b)
	st := protocol.Stream{Edge: "eb", Epoch: protocol.Epoch{9}}
	for i := range uint64(10) {
		if _, err := bjs.Publish(ctx, "outpost.v1.edge.eb.seg", seg(t, bKey, st, i+1, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	state := func() (msgs, pending, ackPending uint64) {
		t.Helper()
		si, err := cjs.Stream(ctx, ingestnats.DefaultStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return si.CachedInfo().State.Msgs, info.NumPending, uint64(info.NumAckPending)
	}
	poll.Until(t, 15*time.Second, "B's segments pending 6, ack-pending 4", func() bool {
		m, p, ap := state()
		return m == 10 && p == 6 && ap == 4
	})

	a, _ := MustEdge(t, s, "ea", aKey)
	hello := protocol.EncodeHello(protocol.Hello{Edge: "ea", Epoch: protocol.Epoch{1}, Seq: 1, SentAt: 1})
	attacks := []string{"$JS.API.STREAM.PURGE." + ingestnats.DefaultStream, "outpost.v1.edge.eb.rcpt", "outpost.v1.edge.eb.seg", "_INBOX.edge.eb.x"}
	for _, reply := range attacks {
		if err := a.PublishRequest("outpost.v1.edge.ea.hello", reply, hello); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 15*time.Second, "the attacking hellos handled, or the stream changed", func() bool {
		m, p, ap := state()
		st := c.Stats()
		return st.Hellos+st.BadReplySubjects == uint64(len(attacks)) || m != 10 || p != 6 || ap != 4
	})
	if m, p, ap := state(); m != 10 || p != 6 || ap != 4 {
		t.Fatalf("after A's hellos the stream holds %d, pending %d, ack-pending %d; want 10, 6, 4 (untouched)", m, p, ap)
	}
	// An honest hello from A still gets its receipt, and B got nothing.
	rep, err := a.Request("outpost.v1.edge.ea.hello", hello, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := protocol.VerifyReply(rep.Data, protocol.NewKeyMap(cloudKey.Public())); err != nil || r.Receipt == nil {
		t.Fatalf("honest hello reply %+v, %v", r, err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := bRcpt.Pending(); n != 0 {
		t.Errorf("B's rcpt subject got %d messages from A's hellos", n)
	}
	if m, _, _ := state(); m != 10 {
		t.Errorf("the stream holds %d messages after A's hellos, want B's 10", m)
	}
}

// TestEnsureStreamRefusesOpenStream: a stream made before the limits
// (purge and delete allowed, no byte or per-edge cap, discard old) is not
// used; the error names each difference.
func TestEnsureStreamRefusesOpenStream(t *testing.T) {
	s := MustServer(t, fleet{})
	_, js := MustInternal(t, s)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: ingestnats.DefaultStream, Subjects: []string{protocol.SegmentFilterNATS},
		Retention: jetstream.WorkQueuePolicy, MaxAge: ingestnats.DefaultMaxAge, Storage: jetstream.FileStorage, MaxBytes: -1, MaxMsgs: -1}); err != nil {
		t.Fatal(err)
	}
	_, _, err := ingestnats.EnsureStream(ctx, js, ingestnats.StreamOptions{})
	if !errors.Is(err, ingestnats.ErrMismatch) {
		t.Fatalf("got %v, want ErrMismatch", err)
	}
	for _, w := range []string{"purge is allowed, want denied", "message delete is allowed, want denied", "max bytes are -1, want 4294967296",
		"max messages per subject (per edge) are -1, want 64", "max message size is -1", "discard policy is DiscardOld"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

// TestEdgeShare: while the cloud takes nothing (a commit stall), one edge
// can store only its share of segments; the next is refused with an error
// it sees (and backs off on), and another edge's segments still land.
func TestEdgeShare(t *testing.T) {
	aKey, bKey := protocoltest.Signer(t, "ea"), protocoltest.Signer(t, "eb")
	s := MustServer(t, fleet{"ea": aKey, "eb": bKey})
	_, cjs := MustInternal(t, s)
	ctx := context.Background()
	if _, _, err := ingestnats.EnsureStream(ctx, cjs, ingestnats.StreamOptions{MaxPerEdge: 3}); err != nil {
		t.Fatal(err)
	}
	a, _ := MustEdge(t, s, "ea", aKey)
	ajs, _ := jetstream.New(a)
	st := protocol.Stream{Edge: "ea", Epoch: protocol.Epoch{1}}
	for i := range uint64(3) {
		if _, err := ajs.Publish(ctx, "outpost.v1.edge.ea.seg", seg(t, aKey, st, i+1, i+1)); err != nil {
			t.Fatalf("segment %d within the share: %v", i+1, err)
		}
	}
	if _, err := ajs.Publish(ctx, "outpost.v1.edge.ea.seg", seg(t, aKey, st, 4, 4)); err == nil || !strings.Contains(err.Error(), "maximum messages per subject") {
		t.Fatalf("a segment beyond the edge's share: %v, want refused", err)
	}
	b, _ := MustEdge(t, s, "eb", bKey)
	bjs, _ := jetstream.New(b)
	if _, err := bjs.Publish(ctx, "outpost.v1.edge.eb.seg", seg(t, bKey, protocol.Stream{Edge: "eb", Epoch: protocol.Epoch{2}}, 1, 1)); err != nil {
		t.Fatalf("another edge's segment: %v", err)
	}
	si, err := cjs.Stream(ctx, ingestnats.DefaultStream)
	if err != nil || si.CachedInfo().State.Msgs != 4 {
		t.Fatalf("stream %+v, %v; want A's 3 and B's 1", si.CachedInfo().State, err)
	}
}

// helloLedger is a gatedLedger whose hellos wait for release, ignoring
// their context, as a slow database read would.
type helloLedger struct {
	*gatedLedger
	entered  chan struct{}
	release  chan struct{}
	finished atomic.Bool
}

func (l *helloLedger) NoteHello(ctx context.Context, h protocol.Hello) (ledger.Watermark, error) {
	l.entered <- struct{}{}
	<-l.release
	defer l.finished.Store(true)
	return l.gatedLedger.NoteHello(ctx, h)
}

// TestRunWaitsForHellos: Run returns only once the hello handlers it
// started have returned.
func TestRunWaitsForHellos(t *testing.T) {
	edgeKey, cloudKey := protocoltest.Signer(t, "e1"), protocoltest.Signer(t, "cloud")
	s := MustServer(t, fleet{"e1": edgeKey})
	l := &helloLedger{gatedLedger: newGatedLedger(true), entered: make(chan struct{}, 1), release: make(chan struct{})}
	svc, err := ingest.New(ingest.Options{Ledger: l, Signer: cloudKey, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ingestnats.New(ingestnats.Options{InProcess: s, User: protocol.InternalUser, Password: s.InternalPassword(), Service: svc,
		IsolatedReplies: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svcDone, runDone := make(chan struct{}), make(chan error, 1)
	go func() { defer close(svcDone); _ = svc.Run(ctx) }()
	go func() { runDone <- c.Run(ctx) }()
	poll.Until(t, 15*time.Second, "the consumer pulling", c.Connected)

	nc, _ := MustEdge(t, s, "e1", edgeKey)
	h := protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: protocol.Epoch{1}, Seq: 1, SentAt: 1})
	reply := nc.NewRespInbox()
	if err := nc.PublishRequest("outpost.v1.edge.e1.hello", reply, h); err != nil {
		t.Fatal(err)
	}
	<-l.entered
	cancel()
	close(l.release)
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	if !l.finished.Load() {
		t.Fatal("Run returned while a hello handler was still running")
	}
	<-svcDone
}

// TestHelloReplySubjectCheck: on a server where all edges share one
// account (an external deployment), the consumer itself refuses to answer
// a hello whose reply subject is not the sending edge's own inbox: the
// JetStream API's purge, another edge's subjects or inbox, its own inbox
// prefix without a token or with a wildcard. It publishes nothing for
// them; an honest hello is answered.
func TestHelloReplySubjectCheck(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	svc, err := ingest.New(ingest.Options{Ledger: newGatedLedger(true), Signer: protocoltest.Signer(t, "cloud"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ingestnats.New(ingestnats.Options{URL: srv.ClientURL(), Service: svc, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	go func() { defer wg.Done(); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	poll.Until(t, 15*time.Second, "the consumer pulling", c.Connected)

	a, err := natsgo.Connect(srv.ClientURL(), natsgo.CustomInboxPrefix(protocol.NATSInboxPrefix("ea")))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	hello := protocol.EncodeHello(protocol.Hello{Edge: "ea", Epoch: protocol.Epoch{1}, Seq: 1, SentAt: 1})
	attacks := []string{"$JS.API.STREAM.PURGE." + ingestnats.DefaultStream, "outpost.v1.edge.eb.rcpt", "outpost.v1.edge.eb.seg",
		"_INBOX.edge.eb.x", "_INBOX.edge.ea", "_INBOX.edge.ea.*", ""}
	for _, reply := range attacks {
		if err := a.PublishMsg(&natsgo.Msg{Subject: "outpost.v1.edge.ea.hello", Reply: reply, Data: hello}); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 15*time.Second, "the attacking hellos refused", func() bool { return c.Stats().BadReplySubjects == uint64(len(attacks)) })
	if st := c.Stats(); st.Hellos != 0 {
		t.Fatalf("the cloud answered %d of A's hellos", st.Hellos)
	}
	if _, err := a.Request("outpost.v1.edge.ea.hello", hello, 10*time.Second); err != nil {
		t.Fatalf("honest hello: %v", err)
	}
}

// busyHellos holds the first n hellos until released; the others pass.
type busyHellos struct {
	*gatedLedger
	n       int64
	calls   atomic.Int64
	entered chan struct{}
	release chan struct{}
}

func (l *busyHellos) NoteHello(ctx context.Context, h protocol.Hello) (ledger.Watermark, error) {
	if l.calls.Add(1) <= l.n {
		l.entered <- struct{}{}
		<-l.release
	}
	return l.gatedLedger.NoteHello(ctx, h)
}

// TestHellosWaitForAHandler: hellos that come while MaxHellos are being
// answered wait for a handler and are answered, instead of being dropped
// for their edges to repeat after their hello timeout.
func TestHellosWaitForAHandler(t *testing.T) {
	edgeKey, cloudKey := protocoltest.Signer(t, "e1"), protocoltest.Signer(t, "cloud")
	s := MustServer(t, fleet{"e1": edgeKey})
	l := &busyHellos{gatedLedger: newGatedLedger(true), n: ingestnats.MaxHellos, entered: make(chan struct{}, ingestnats.MaxHellos), release: make(chan struct{})}
	svc, err := ingest.New(ingest.Options{Ledger: l, Signer: cloudKey, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ingestnats.New(ingestnats.Options{InProcess: s, User: protocol.InternalUser, Password: s.InternalPassword(), Service: svc,
		IsolatedReplies: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	go func() { defer wg.Done(); _ = c.Run(ctx) }()
	released := false
	t.Cleanup(func() {
		if !released {
			close(l.release)
		}
		cancel()
		wg.Wait()
	})
	poll.Until(t, 15*time.Second, "the consumer pulling", c.Connected)
	nc, _ := MustEdge(t, s, "e1", edgeKey)
	var answered atomic.Int64
	inbox := nc.NewRespInbox()
	sub, err := nc.Subscribe(inbox, func(*natsgo.Msg) { answered.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	h := protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: protocol.Epoch{1}, Seq: 1, SentAt: 1})
	const more = 10
	for range ingestnats.MaxHellos {
		if err := nc.PublishRequest("outpost.v1.edge.e1.hello", inbox, h); err != nil {
			t.Fatal(err)
		}
	}
	for range ingestnats.MaxHellos {
		<-l.entered // every handler is busy
	}
	for range more {
		if err := nc.PublishRequest("outpost.v1.edge.e1.hello", inbox, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	close(l.release)
	released = true
	poll.Until(t, 30*time.Second, "every hello to be answered", func() bool { return answered.Load() == ingestnats.MaxHellos+more })
	if d := c.Stats().HellosDropped; d != 0 {
		t.Errorf("%d hellos dropped", d)
	}
}
