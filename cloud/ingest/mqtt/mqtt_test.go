package mqtt_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/cloud/ingest"
	ingestmqtt "github.com/outpost-edge/outpost/cloud/ingest/mqtt"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// memLedger commits segments in order per stream.
type memLedger struct {
	mu  sync.Mutex
	hwm map[protocol.Stream]uint64
}

func (l *memLedger) Commit(_ context.Context, batch []ledger.Input) ([]ledger.Outcome, error) {
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
			l.hwm[s] = in.Segment.Last
			w.HWM = in.Segment.Last
			out[i] = ledger.Outcome{Kind: ledger.KindCommitted, Watermark: w, Records: int(in.Segment.Last - h)}
		}
	}
	return out, nil
}

func (l *memLedger) NoteHello(_ context.Context, h protocol.Hello) (ledger.Watermark, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := protocol.Stream{Edge: h.Edge, Epoch: h.Epoch}
	return ledger.Watermark{Stream: s, HWM: l.hwm[s]}, nil
}

// subscribeFaults makes the broker refuse (SUBACK 0x80) or drop (close the
// connection instead of answering) the ingest client's first SUBSCRIBEs.
type subscribeFaults struct {
	mochi.HookBase
	refuse, drop   atomic.Int64 // how many more to refuse, to drop
	refused, seen  atomic.Int64
	dropped        atomic.Int64
	ingestClientID string
}

func (h *subscribeFaults) ID() string { return "subscribe-faults" }
func (h *subscribeFaults) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck || b == mochi.OnSubscribe
}

func (h *subscribeFaults) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

func (h *subscribeFaults) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	if write || cl.ID != h.ingestClientID {
		return true
	}
	if h.refuse.Add(-1) >= 0 {
		h.refused.Add(1)
		return false
	}
	return true
}

func (h *subscribeFaults) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if cl.ID == h.ingestClientID {
		h.seen.Add(1)
		if h.drop.Add(-1) >= 0 {
			h.dropped.Add(1)
			cl.Stop(errors.New("test: dropped the SUBSCRIBE"))
		}
	}
	return pk
}

func startBroker(t *testing.T, h *subscribeFaults) (*mochi.Server, string) {
	t.Helper()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	// h is the only hook: mochi allows what any hook allows.
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv, "tcp://" + l.Address()
}

type cloud struct {
	c      *ingestmqtt.Consumer
	signer *protocol.Signer
	done   chan struct{}
	cancel context.CancelFunc
}

// runCloud runs an ingest service and the MQTT consumer until the test ends.
func runCloud(t *testing.T, url string, h *subscribeFaults, mod func(*ingestmqtt.Options)) *cloud {
	t.Helper()
	return runCloudOn(t, url, h, &memLedger{hwm: map[protocol.Stream]uint64{}}, mod)
}

// runCloudOn is runCloud on the ledger l.
func runCloudOn(t *testing.T, url string, h *subscribeFaults, l ingest.Ledger, mod func(*ingestmqtt.Options)) *cloud {
	t.Helper()
	cl := &cloud{signer: protocoltest.Signer(t, "cloud"), done: make(chan struct{})}
	svc, err := ingest.New(ingest.Options{Ledger: l, Signer: cl.signer, Workers: 1, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	o := ingestmqtt.Options{Broker: url, Service: svc, ClientID: h.ingestClientID, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		ConnectTimeout: 2 * time.Second}
	if mod != nil {
		mod(&o)
	}
	cl.c, err = ingestmqtt.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cl.cancel = cancel
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	go func() { defer wg.Done(); _ = cl.c.Run(ctx) }()
	go func() { wg.Wait(); close(cl.done) }()
	t.Cleanup(func() { cancel(); <-cl.done })
	return cl
}

// edge is a plain MQTT client in the place of edge e1: it says hello,
// sends segments and collects the replies on its rcpt topic.
type edge struct {
	c       paho.Client
	mu      sync.Mutex
	replies [][]byte
}

func newEdge(t *testing.T, url string) *edge {
	t.Helper()
	e := &edge{}
	e.c = paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("outpost-edge-e1").SetAutoReconnect(false))
	if tok := e.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("edge connect: %v", tok.Error())
	}
	t.Cleanup(func() { e.c.Disconnect(0) })
	tok := e.c.Subscribe("outpost/v1/edge/e1/rcpt", 1, func(_ paho.Client, m paho.Message) {
		e.mu.Lock()
		e.replies = append(e.replies, m.Payload())
		e.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("edge subscribe: %v", tok.Error())
	}
	return e
}

func (e *edge) publish(t *testing.T, kind protocol.Kind, payload []byte) {
	t.Helper()
	topic, _ := protocol.EdgeTopic("e1", kind)
	if tok := e.c.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// receipt returns the highest watermark among the verified receipts.
func (e *edge) hwm(t *testing.T, cloud *protocol.Signer) (uint64, int) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	var hwm uint64
	for _, m := range e.replies {
		r, err := protocol.VerifyReply(m, protocol.NewKeyMap(cloud.Public()))
		if err != nil || r.Receipt == nil {
			t.Fatalf("reply %+v, %v", r, err)
		}
		hwm = max(hwm, r.Receipt.HWM)
	}
	return hwm, len(e.replies)
}

// works checks that the consumer answers a hello and commits a segment.
func works(t *testing.T, url string, cl *cloud, st protocol.Stream, first, last uint64) {
	t.Helper()
	poll.Until(t, 10*time.Second, "ingest to subscribe", cl.c.Connected)
	e := newEdge(t, url)
	e.publish(t, protocol.KindHello, protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: st.Epoch, Seq: last}))
	poll.Until(t, 10*time.Second, "the hello's receipt", func() bool { _, n := e.hwm(t, cl.signer); return n >= 1 })
	chain := (&protocoltest.Stream{Stream: st, Signer: protocoltest.Signer(t, "e1")}).AddN(t, int(last))
	e.publish(t, protocol.KindSegment, protocoltest.Encode(t, chain.Segment(first, last), false))
	poll.Until(t, 10*time.Second, "a receipt for the segment", func() bool { h, _ := e.hwm(t, cl.signer); return h == last })
}

// A broker that refuses the ingest's SUBSCRIBE (SUBACK 0x80, which paho
// reports as success) used to leave the ingest connected and consuming
// nothing, for good. It now resubscribes until the broker agrees.
func TestResubscribeAfterRefusedSubscribe(t *testing.T) {
	h := &subscribeFaults{ingestClientID: "ingest-1"}
	h.refuse.Store(3)
	_, url := startBroker(t, h)
	cl := runCloud(t, url, h, nil)
	works(t, url, cl, protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}, 1, 5)
	if n := h.refused.Load(); n != 3 {
		t.Fatalf("%d subscriptions refused, want 3", n)
	}
}

// A SUBSCRIBE the broker never answers (the connection dies in between,
// as when a broker is killed twice in a row) used to make the ingest
// disconnect paho for good. It now reconnects and resubscribes.
func TestResubscribeAfterDroppedSubscribe(t *testing.T) {
	h := &subscribeFaults{ingestClientID: "ingest-1"}
	h.drop.Store(2)
	_, url := startBroker(t, h)
	cl := runCloud(t, url, h, nil)
	works(t, url, cl, protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}, 1, 5)
	if n := h.dropped.Load(); n != 2 {
		t.Fatalf("%d subscriptions dropped, want 2", n)
	}
}

// A connection lost after the subscription is made again.
func TestReconnectAfterLostConnection(t *testing.T) {
	h := &subscribeFaults{ingestClientID: "ingest-1"}
	srv, url := startBroker(t, h)
	cl := runCloud(t, url, h, nil)
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	works(t, url, cl, st, 1, 5)
	c, ok := srv.Clients.Get("ingest-1")
	if !ok {
		t.Fatal("no ingest client on the broker")
	}
	c.Stop(errors.New("test: cut the ingest's connection"))
	poll.Until(t, 10*time.Second, "the ingest to subscribe again", func() bool { return h.seen.Load() >= 2 && cl.c.Connected() })
	works(t, url, cl, st, 6, 9)
}

// Healthy (the liveness probe) fails once the consumer has tried for
// StuckAfter without a subscription, and passes again once it has one.
func TestHealthyFailsWhenStuck(t *testing.T) {
	h := &subscribeFaults{ingestClientID: "ingest-1"}
	h.refuse.Store(1 << 40)
	_, url := startBroker(t, h)
	cl := runCloud(t, url, h, func(o *ingestmqtt.Options) { o.StuckAfter = 50 * time.Millisecond })
	poll.Until(t, 10*time.Second, "Healthy to fail", func() bool { return cl.c.Healthy() != nil })
	if cl.c.Connected() {
		t.Fatal("Connected with every subscription refused")
	}
	h.refuse.Store(0)
	poll.Until(t, 10*time.Second, "Healthy to pass once subscribed", func() bool { return cl.c.Connected() && cl.c.Healthy() == nil })
}

// Run returns once its context ends, also while it is retrying.
func TestRunStopsWhileRetrying(t *testing.T) {
	h := &subscribeFaults{ingestClientID: "ingest-1"}
	h.refuse.Store(1 << 40)
	_, url := startBroker(t, h)
	cl := runCloud(t, url, h, nil)
	poll.Until(t, 10*time.Second, "a refused subscription", func() bool { return h.refused.Load() >= 2 })
	cl.cancel()
	select {
	case <-cl.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// blockingHello is a ledger whose NoteHello waits for release (ignoring
// its context, as a slow database query would).
type blockingHello struct {
	memLedger
	entered  chan struct{}
	release  chan struct{}
	finished atomic.Bool
}

func (l *blockingHello) NoteHello(ctx context.Context, h protocol.Hello) (ledger.Watermark, error) {
	close(l.entered)
	<-l.release
	defer l.finished.Store(true)
	return l.memLedger.NoteHello(ctx, h)
}

// Run does not return while a hello handler it started is still running:
// the handlers belong to it.
func TestRunWaitsForHelloHandlers(t *testing.T) {
	h := &subscribeFaults{ingestClientID: "ingest-1"}
	_, url := startBroker(t, h)
	l := &blockingHello{memLedger: memLedger{hwm: map[protocol.Stream]uint64{}}, entered: make(chan struct{}), release: make(chan struct{})}
	svc, err := ingest.New(ingest.Options{Ledger: l, Signer: protocoltest.Signer(t, "cloud"), Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ingestmqtt.New(ingestmqtt.Options{Broker: url, Service: svc, ClientID: "ingest-1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = c.Run(ctx) }()
	poll.Until(t, 10*time.Second, "ingest to subscribe", c.Connected)
	newEdge(t, url).publish(t, protocol.KindHello, protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: protocol.Epoch{1}}))
	<-l.entered
	cancel()
	// Run either returns at once (it does not own its handlers: wrong) or
	// waits in its errgroup for the handler, which is then released.
	var returnedEarly bool
	poll.Until(t, 10*time.Second, "Run to return or to wait for its hello handler", func() bool {
		select {
		case <-runDone:
			returnedEarly = !l.finished.Load()
			return true
		default:
		}
		return waitingInRun()
	})
	close(l.release)
	<-runDone
	if returnedEarly {
		t.Fatal("Run returned while a hello handler it started was still running")
	}
	if !l.finished.Load() {
		t.Fatal("Run returned before its hello handler finished")
	}
}

// waitingInRun reports whether a goroutine is in Consumer.Run, waiting for
// its errgroup.
func waitingInRun() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "ingest/mqtt.(*Consumer).Run") && strings.Contains(g, "errgroup.(*Group).Wait") {
			return true
		}
	}
	return false
}

// slowFirstHello holds the first hello until released; the others pass.
type slowFirstHello struct {
	memLedger
	calls   atomic.Int64
	entered chan struct{}
	release chan struct{}
}

func (l *slowFirstHello) NoteHello(ctx context.Context, h protocol.Hello) (ledger.Watermark, error) {
	if l.calls.Add(1) == 1 {
		close(l.entered)
		<-l.release
	}
	return l.memLedger.NoteHello(ctx, h)
}

// TestHellosWaitForAHandler: hellos beyond MaxHellos at once wait for a
// handler and are answered, instead of being dropped for their edges to
// repeat after their hello timeout (a fleet reconnecting after an outage
// had a quarter of its hellos dropped, and each of those edges connected
// again).
func TestHellosWaitForAHandler(t *testing.T) {
	h := &subscribeFaults{ingestClientID: "ingest-1"}
	_, url := startBroker(t, h)
	l := &slowFirstHello{memLedger: memLedger{hwm: map[protocol.Stream]uint64{}}, entered: make(chan struct{}), release: make(chan struct{})}
	cl := runCloudOn(t, url, h, l, func(o *ingestmqtt.Options) { o.MaxHellos = 1 })
	poll.Until(t, 10*time.Second, "ingest to subscribe", cl.c.Connected)
	e := newEdge(t, url)
	hello := protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: protocol.Epoch{1}})
	e.publish(t, protocol.KindHello, hello)
	<-l.entered // the only handler is busy
	const more = 5
	for range more {
		e.publish(t, protocol.KindHello, hello)
	}
	close(l.release)
	poll.Until(t, 30*time.Second, "every hello to be answered", func() bool { _, n := e.hwm(t, cl.signer); return n == 1+more })
}
