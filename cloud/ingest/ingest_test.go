package ingest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outpost-edge/outpost/cloud/ingest"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// fakeLedger commits segments in order per stream, reports gaps, and can
// fail a number of times first. It checks nothing cryptographic: that is
// the real ledger's job and its tests'.
type fakeLedger struct {
	mu       sync.Mutex
	hwm      map[protocol.Stream]uint64
	failures int
	calls    int
	batches  [][]ledger.Input
	poison   string // a batch holding this edge's segment fails as Postgres refusing the data
}

func (f *fakeLedger) Commit(ctx context.Context, batch []ledger.Input) ([]ledger.Outcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failures > 0 {
		f.failures--
		return nil, errors.New("database unavailable")
	}
	for _, in := range batch {
		if in.Segment != nil && f.poison != "" && in.Segment.Edge == f.poison {
			return nil, fmt.Errorf("commit: %w", &ingest.RefusedError{Err: &pgconn.PgError{Code: "22008", Message: "timestamp out of range"}})
		}
	}
	f.batches = append(f.batches, batch)
	out := make([]ledger.Outcome, len(batch))
	for i, in := range batch {
		if in.Segment == nil {
			out[i] = ledger.Outcome{Kind: ledger.KindQuarantined, Watermark: ledger.Watermark{Stream: protocol.Stream{Edge: in.TopicEdge}},
				Code: protocol.NackMalformed, Reason: in.Problem, QuarantineID: 1}
			continue
		}
		s := in.Segment.Stream()
		h := f.hwm[s]
		w := ledger.Watermark{Stream: s, HWM: h, CommittedAt: time.UnixMilli(1)}
		switch {
		case in.Segment.First > h+1:
			out[i] = ledger.Outcome{Kind: ledger.KindGap, Watermark: w, Code: protocol.NackGap, Reason: "gap"}
		case in.Segment.Last <= h:
			out[i] = ledger.Outcome{Kind: ledger.KindDuplicate, Watermark: w}
		default:
			n := in.Segment.Last - h
			f.hwm[s] = in.Segment.Last
			w.HWM = in.Segment.Last
			out[i] = ledger.Outcome{Kind: ledger.KindCommitted, Watermark: w, Records: int(n)}
		}
	}
	return out, nil
}

func (f *fakeLedger) NoteHello(ctx context.Context, h protocol.Hello) (ledger.Watermark, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := protocol.Stream{Edge: h.Edge, Epoch: h.Epoch}
	return ledger.Watermark{Stream: s, HWM: f.hwm[s]}, nil
}

type replies struct {
	mu   sync.Mutex
	msgs map[string][][]byte
}

func (r *replies) Reply(ctx context.Context, edge string, msg []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs[edge] = append(r.msgs[edge], msg)
	return nil
}

func (r *replies) verified(t *testing.T, edge string, keys protocol.Keys) []protocol.Reply {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []protocol.Reply
	for _, m := range r.msgs[edge] {
		rep, err := protocol.VerifyReply(m, keys)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rep)
	}
	return out
}

// seg builds records first..last of stream st, signed by s (the fake
// ledger checks no signature; the real one would accept them).
func seg(t *testing.T, s *protocol.Signer, st protocol.Stream, first, last uint64) []byte {
	t.Helper()
	chain := (&protocoltest.Stream{Stream: st, Signer: s}).AddN(t, int(last))
	return protocoltest.Encode(t, chain.Segment(first, last), false)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

func start(t *testing.T, l ingest.Ledger, mod func(*ingest.Options)) (*ingest.Service, *protocol.Signer) {
	t.Helper()
	cloud := protocoltest.Signer(t, "cloud")
	o := ingest.Options{Ledger: l, Signer: cloud, Workers: 1, MaxDelay: time.Millisecond, GapWait: 5 * time.Second}
	if mod != nil {
		mod(&o)
	}
	svc, err := ingest.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return svc, cloud
}

// A segment that arrives before its predecessor waits for it instead of
// being nacked, and both are acked and receipted once committed.
func TestGapWaitsForItsFill(t *testing.T) {
	fl := &fakeLedger{hwm: map[protocol.Stream]uint64{}}
	svc, cloud := start(t, fl, nil)
	edge := protocoltest.Signer(t, "edge")
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	rp := &replies{msgs: map[string][][]byte{}}
	var acked sync.Map
	deliver := func(first, last uint64) {
		k := fmt.Sprint(first)
		if err := svc.Handle(context.Background(), ingest.Delivery{TopicEdge: "e1", Payload: seg(t, edge, st, first, last), Replier: rp,
			Ack: func() { acked.Store(k, true) }}); err != nil {
			t.Fatal(err)
		}
	}
	deliver(11, 20) // before 1-10
	waitFor(t, "the gap tried", func() bool { fl.mu.Lock(); defer fl.mu.Unlock(); return fl.calls >= 1 })
	if _, ok := acked.Load("11"); ok {
		t.Fatal("a gap was acked before it was resolved")
	}
	deliver(1, 10)
	waitFor(t, "both acked", func() bool {
		_, a := acked.Load("1")
		_, b := acked.Load("11")
		return a && b
	})
	reps := rp.verified(t, "e1", protocol.NewKeyMap(cloud.Public()))
	var maxHWM uint64
	for _, r := range reps {
		if r.Nack != nil {
			t.Fatalf("a nack was sent: %+v", r.Nack)
		}
		maxHWM = max(maxHWM, r.Receipt.HWM)
	}
	if maxHWM != 20 {
		t.Fatalf("receipts reached %d, want 20", maxHWM)
	}
	if s := svc.Stats(); s.Gaps != 0 || s.Records != 20 {
		t.Fatalf("stats %+v", s)
	}
}

// A gap that is never filled is nacked after GapWait with the watermark.
func TestGapNackedAfterWait(t *testing.T) {
	fl := &fakeLedger{hwm: map[protocol.Stream]uint64{}}
	svc, cloud := start(t, fl, func(o *ingest.Options) { o.GapWait = 50 * time.Millisecond })
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	rp := &replies{msgs: map[string][][]byte{}}
	acked := make(chan struct{})
	_ = svc.Handle(context.Background(), ingest.Delivery{TopicEdge: "e1", Payload: seg(t, protocoltest.Signer(t, "edge"), st, 5, 9), Replier: rp, Ack: func() { close(acked) }})
	<-acked
	reps := rp.verified(t, "e1", protocol.NewKeyMap(cloud.Public()))
	if len(reps) != 1 || reps[0].Nack == nil || reps[0].Nack.Code != protocol.NackGap || reps[0].Nack.HWM != 0 {
		t.Fatalf("replies %+v", reps)
	}
}

// While the database fails, nothing is acked or receipted; the batch is
// retried until it commits.
func TestCommitRetriedWithoutAck(t *testing.T) {
	fl := &fakeLedger{hwm: map[protocol.Stream]uint64{}, failures: 3}
	svc, _ := start(t, fl, nil)
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	rp := &replies{msgs: map[string][][]byte{}}
	acked := make(chan struct{})
	_ = svc.Handle(context.Background(), ingest.Delivery{TopicEdge: "e1", Payload: seg(t, protocoltest.Signer(t, "edge"), st, 1, 3), Replier: rp, Ack: func() { close(acked) }})
	<-acked
	fl.mu.Lock()
	calls := fl.calls
	fl.mu.Unlock()
	if calls != 4 {
		t.Fatalf("%d commit attempts, want 4", calls)
	}
	if s := svc.Stats(); s.CommitErrs != 3 || s.Records != 3 {
		t.Fatalf("stats %+v", s)
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if len(rp.msgs["e1"]) != 1 {
		t.Fatalf("%d replies", len(rp.msgs["e1"]))
	}
}

// Segments queued together go in one commit, and each stream gets one
// receipt for the highest watermark, not one per segment.
func TestBatchingAndOneReceiptPerStream(t *testing.T) {
	fl := &fakeLedger{hwm: map[protocol.Stream]uint64{}}
	svc, cloud := start(t, fl, func(o *ingest.Options) { o.MaxDelay = 200 * time.Millisecond })
	edge := protocoltest.Signer(t, "edge")
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	rp := &replies{msgs: map[string][][]byte{}}
	var wg sync.WaitGroup
	for i := uint64(0); i < 5; i++ {
		wg.Add(1)
		_ = svc.Handle(context.Background(), ingest.Delivery{TopicEdge: "e1", Payload: seg(t, edge, st, i*10+1, i*10+10), Replier: rp, Ack: wg.Done})
	}
	wg.Wait()
	fl.mu.Lock()
	nb := len(fl.batches)
	fl.mu.Unlock()
	reps := rp.verified(t, "e1", protocol.NewKeyMap(cloud.Public()))
	if nb != 1 || len(reps) != 1 || reps[0].Receipt.HWM != 50 {
		t.Fatalf("%d batches, replies %+v", nb, reps)
	}
}

func TestMalformedAndHello(t *testing.T) {
	fl := &fakeLedger{hwm: map[protocol.Stream]uint64{}}
	svc, cloud := start(t, fl, nil)
	acked := make(chan struct{})
	rp := &replies{msgs: map[string][][]byte{}}
	garbage := []byte("not a segment")
	_ = svc.Handle(context.Background(), ingest.Delivery{TopicEdge: "e1", Payload: garbage, Replier: rp, Ack: func() { close(acked) }})
	<-acked
	if svc.Stats().Malformed != 1 {
		t.Fatalf("malformed not counted: %+v", svc.Stats())
	}
	// It went to the ledger's quarantine with the decoder's complaint, and
	// the sender the topic names got a nack naming the bytes.
	fl.mu.Lock()
	in := fl.batches[len(fl.batches)-1][0]
	fl.mu.Unlock()
	if in.Segment != nil || in.TopicEdge != "e1" || !bytes.Equal(in.Raw, garbage) || in.Problem == "" {
		t.Fatalf("ledger input %+v", in)
	}
	reps := rp.verified(t, "e1", protocol.NewKeyMap(cloud.Public()))
	if len(reps) != 1 || reps[0].Nack == nil || reps[0].Nack.Code != protocol.NackMalformed || reps[0].Nack.SegHash != protocol.HashBytes(garbage) || reps[0].Nack.Edge != "e1" {
		t.Fatalf("replies %+v", reps)
	}
	ep := protocol.Epoch{7}
	rc, err := svc.Hello(context.Background(), "e1", protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: ep}))
	if err != nil {
		t.Fatal(err)
	}
	r, err := protocol.VerifyReply(rc, protocol.NewKeyMap(cloud.Public()))
	if err != nil || r.Receipt == nil || r.Receipt.HWM != 0 || r.Receipt.Epoch != ep {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := svc.Hello(context.Background(), "e2", protocol.EncodeHello(protocol.Hello{Edge: "e1", Epoch: ep})); err == nil {
		t.Fatal("a hello naming another edge than its topic was answered")
	}
}

// A segment whose records the database refuses (a data error, not an
// outage) is refused alone; the other segments of its batch commit.
func TestPoisonSegmentIsolated(t *testing.T) {
	fl := &fakeLedger{hwm: map[protocol.Stream]uint64{}, poison: "bad"}
	svc, cloud := start(t, fl, func(o *ingest.Options) { o.MaxDelay = 200 * time.Millisecond })
	edge := protocoltest.Signer(t, "edge")
	rp := &replies{msgs: map[string][][]byte{}}
	var wg sync.WaitGroup
	for _, e := range []string{"e1", "bad", "e2"} {
		wg.Add(1)
		st := protocol.Stream{Edge: e, Epoch: protocol.Epoch{1}}
		_ = svc.Handle(context.Background(), ingest.Delivery{TopicEdge: e, Payload: seg(t, edge, st, 1, 5), Replier: rp, Ack: wg.Done})
	}
	wg.Wait()
	keys := protocol.NewKeyMap(cloud.Public())
	for _, e := range []string{"e1", "e2"} {
		if reps := rp.verified(t, e, keys); len(reps) != 1 || reps[0].Receipt == nil || reps[0].Receipt.HWM != 5 {
			t.Fatalf("%s: replies %+v", e, reps)
		}
	}
	if reps := rp.verified(t, "bad", keys); len(reps) != 1 || reps[0].Nack == nil || reps[0].Nack.Code != protocol.NackMalformed {
		t.Fatalf("bad: replies %+v", reps)
	}
}

// gatedLedger holds each Commit until the test releases it, so a test can
// act while a batch is in hand. Its commits honour the context as the real
// ledger's transaction does: a cancelled commit commits nothing.
type gatedLedger struct {
	*fakeLedger
	entered chan struct{}
	release chan struct{}
}

func (g *gatedLedger) Commit(ctx context.Context, batch []ledger.Input) ([]ledger.Outcome, error) {
	g.entered <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.fakeLedger.Commit(ctx, batch)
}

// ctxReplies is a transport's replier: once its context ends it sends
// nothing, as a disconnected broker client does.
type ctxReplies struct{ replies }

func (r *ctxReplies) Reply(ctx context.Context, edge string, msg []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return r.replies.Reply(ctx, edge, msg)
}

// Shutdown lets the batch in hand finish, commit, receipt and ack,
// refuses new deliveries meanwhile, and returns once the workers stopped;
// Run's context is still alive throughout, as cmd/cloud ends it only
// after the drain.
func TestShutdownFinishesTheBatchInHand(t *testing.T) {
	gl := &gatedLedger{fakeLedger: &fakeLedger{hwm: map[protocol.Stream]uint64{}},
		entered: make(chan struct{}, 1), release: make(chan struct{})}
	svc, cloud := start(t, gl, nil)
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	rp := &ctxReplies{replies{msgs: map[string][][]byte{}}}
	acked := make(chan struct{})
	edge := protocoltest.Signer(t, "edge")
	if err := svc.Handle(context.Background(), ingest.Delivery{TopicEdge: "e1", Payload: seg(t, edge, st, 1, 3), Replier: rp,
		Ack: func() { close(acked) }}); err != nil {
		t.Fatal(err)
	}
	<-gl.entered // the batch is in hand, its commit in progress

	drained := make(chan error, 1)
	go func() { drained <- svc.Shutdown(context.Background()) }()
	poll.Until(t, 10*time.Second, "Shutdown begun", svc.Draining)
	ok, err := svc.Offer(context.Background(), ingest.Delivery{TopicEdge: "e1", Payload: seg(t, edge, st, 4, 5), Replier: rp,
		Ack: func() { t.Error("a delivery offered while draining was acked") }}, time.Second)
	if ok || !errors.Is(err, ingest.ErrDraining) {
		t.Fatalf("Offer while draining: %v, %v; want false, ErrDraining", ok, err)
	}
	select {
	case err := <-drained:
		t.Fatalf("Shutdown returned %v with a commit in hand", err)
	default:
	}
	close(gl.release)
	if err := <-drained; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	<-acked
	reps := rp.verified(t, "e1", protocol.NewKeyMap(cloud.Public()))
	if len(reps) != 1 || reps[0].Receipt == nil || reps[0].Receipt.HWM != 3 {
		t.Fatalf("replies %+v, want one receipt of hwm 3", reps)
	}
	if gl.calls != 1 {
		t.Fatalf("%d commits, want 1 (nothing offered while draining may be committed)", gl.calls)
	}
}

// A drain that cannot finish in time says so, and ending Run's context
// then stops the worker.
func TestShutdownTimesOut(t *testing.T) {
	gl := &gatedLedger{fakeLedger: &fakeLedger{hwm: map[protocol.Stream]uint64{}},
		entered: make(chan struct{}, 1), release: make(chan struct{})}
	svc, _ := start(t, gl, nil)
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	if err := svc.Handle(context.Background(), ingest.Delivery{TopicEdge: "e1", Payload: seg(t, protocoltest.Signer(t, "edge"), st, 1, 3),
		Ack: func() { t.Error("an abandoned batch was acked") }}); err != nil {
		t.Fatal(err)
	}
	<-gl.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a drain timeout that has passed
	if err := svc.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with the commit still held: %v, want context.Canceled", err)
	}
}

// CommitError reports a commit path whose every attempt fails, with when
// it began and how many attempts failed, and clears on the first success.
func TestCommitErrorWhileFailing(t *testing.T) {
	fl := &fakeLedger{hwm: map[protocol.Stream]uint64{}, failures: 1 << 30}
	svc, _ := start(t, fl, nil)
	if ce := svc.CommitError(); ce != nil {
		t.Fatalf("CommitError before any commit: %v", ce)
	}
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	acked := make(chan struct{})
	_ = svc.Handle(context.Background(), ingest.Delivery{TopicEdge: "e1", Payload: seg(t, protocoltest.Signer(t, "edge"), st, 1, 3),
		Ack: func() { close(acked) }})
	poll.Until(t, 10*time.Second, "two failed attempts reported", func() bool {
		ce := svc.CommitError()
		return ce != nil && ce.Attempts >= 2
	})
	ce := svc.CommitError()
	if !strings.Contains(ce.Error(), "database unavailable") || ce.Since.IsZero() {
		t.Fatalf("CommitError %v", ce)
	}
	fl.mu.Lock()
	fl.failures = 0
	fl.mu.Unlock()
	<-acked
	if ce := svc.CommitError(); ce != nil {
		t.Fatalf("CommitError after a commit succeeded: %v", ce)
	}
}

// A nack names the segment it refuses, as it arrived: its range, the kid of
// its checkpoint and the hash of its bytes (nack version 2), so that the
// edge can tell it from a replay or a nack about someone else's segment.
func TestNackNamesTheSegment(t *testing.T) {
	fl := &fakeLedger{hwm: map[protocol.Stream]uint64{}}
	svc, cloud := start(t, fl, func(o *ingest.Options) { o.GapWait = time.Millisecond })
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	edge := protocoltest.Signer(t, "edge")
	payload := seg(t, edge, st, 5, 9)
	rp := &replies{msgs: map[string][][]byte{}}
	acked := make(chan struct{})
	_ = svc.Handle(context.Background(), ingest.Delivery{TopicEdge: "e1", Payload: payload, Replier: rp, Ack: func() { close(acked) }})
	<-acked
	reps := rp.verified(t, "e1", protocol.NewKeyMap(cloud.Public()))
	if len(reps) != 1 || reps[0].Nack == nil {
		t.Fatalf("replies %+v", reps)
	}
	n := reps[0].Nack
	want := protocol.SegmentRef{First: 5, Last: 9, KID: edge.KeyID(), Hash: protocol.HashBytes(payload)}
	if n.V != protocol.NackVersion || n.Refused() != want || n.Stream() != st || n.At == 0 {
		t.Fatalf("nack %+v; want version %d refusing %+v", n, protocol.NackVersion, want)
	}
}

// batchReplier confirms a reply only once `want` replies have been
// published: a worker that waits for each reply before it publishes the
// next never gets there.
type batchReplier struct {
	mu        sync.Mutex
	want      int
	published int
	confirmed int
	all       chan struct{} // closed when want replies are published
}

func (r *batchReplier) ReplyAsync(edge string, msg []byte) func(context.Context) error {
	r.mu.Lock()
	r.published++
	if r.published == r.want {
		close(r.all)
	}
	r.mu.Unlock()
	return func(ctx context.Context) error {
		select {
		case <-r.all:
		case <-ctx.Done():
			return ctx.Err()
		}
		r.mu.Lock()
		r.confirmed++
		r.mu.Unlock()
		return nil
	}
}

func (r *batchReplier) Reply(ctx context.Context, edge string, msg []byte) error {
	return r.ReplyAsync(edge, msg)(ctx)
}

// The receipts of one batch are all published before the worker waits for
// any broker confirmation (one round trip per batch, not one per receipt),
// and the broker messages are acked after that.
func TestBatchRepliesPublishedTogether(t *testing.T) {
	fl := &fakeLedger{hwm: map[protocol.Stream]uint64{}}
	svc, _ := start(t, fl, func(o *ingest.Options) { o.MaxDelay = 200 * time.Millisecond })
	edge := protocoltest.Signer(t, "edge")
	rp := &batchReplier{want: 3, all: make(chan struct{})}
	var acked atomic.Int64
	for _, e := range []string{"e1", "e2", "e3"} {
		st := protocol.Stream{Edge: e, Epoch: protocol.Epoch{1}}
		_ = svc.Handle(context.Background(), ingest.Delivery{TopicEdge: e, Payload: seg(t, edge, st, 1, 5), Replier: rp,
			Ack: func() { acked.Add(1) }})
	}
	waitFor(t, "three receipts confirmed and three acks", func() bool {
		rp.mu.Lock()
		defer rp.mu.Unlock()
		return rp.confirmed == 3 && acked.Load() == 3
	})
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if len(fl.batches) != 1 {
		t.Fatalf("%d batches, want the three segments in one", len(fl.batches))
	}
}

// TestIdenticalResendSkipsTheLedger: an edge's resend of a payload the
// ledger has taken (after its ack timeout, in a storm) is answered with
// the stream's watermark and acked without a commit transaction; a
// different segment over the same records, or the same bytes on another
// edge's topic, still goes to the ledger.
func TestIdenticalResendSkipsTheLedger(t *testing.T) {
	fl := &fakeLedger{hwm: map[protocol.Stream]uint64{}}
	svc, cloud := start(t, fl, nil)
	edge := protocoltest.Signer(t, "edge")
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	rp := &replies{msgs: map[string][][]byte{}}
	keys := protocol.NewKeyMap(cloud.Public())
	batches := func() int { fl.mu.Lock(); defer fl.mu.Unlock(); return len(fl.batches) }
	var acks atomic.Int64
	deliver := func(topicEdge string, payload []byte) {
		if err := svc.Handle(context.Background(), ingest.Delivery{TopicEdge: topicEdge, Payload: payload, Replier: rp, Ack: func() { acks.Add(1) }}); err != nil {
			t.Fatal(err)
		}
	}
	first, next := seg(t, edge, st, 1, 3), seg(t, edge, st, 4, 6)
	deliver("e1", first)
	deliver("e1", next)
	waitFor(t, "both committed", func() bool { return acks.Load() == 2 })
	b := batches()
	for range 3 {
		deliver("e1", first) // the edge timed out and resends
	}
	waitFor(t, "the resends acked", func() bool { return acks.Load() == 5 })
	if got := batches(); got != b {
		t.Fatalf("identical resends made %d commit batches, want none", got-b)
	}
	reps := rp.verified(t, "e1", keys)
	if last := reps[len(reps)-1].Receipt; last == nil || last.HWM != 6 {
		t.Fatalf("the resend's receipt %+v, want the stream's watermark 6", reps[len(reps)-1])
	}
	if st := svc.Stats(); st.ResentSkipped != 3 || st.Duplicates != 3 {
		t.Errorf("stats %+v, want 3 resends skipped, counted as duplicates", st)
	}
	// Another segment over records the ledger has: to the ledger.
	deliver("e1", seg(t, edge, st, 1, 2))
	waitFor(t, "the other segment acked", func() bool { return acks.Load() == 6 })
	if got := batches(); got != b+1 {
		t.Fatalf("a different segment over committed records made %d batches, want 1", got-b)
	}
	// The same bytes on another edge's topic: to the ledger (which would
	// quarantine them), and no receipt of e1's stream goes to e2.
	deliver("e2", first)
	waitFor(t, "e2's copy acked", func() bool { return acks.Load() == 7 })
	if got := batches(); got != b+2 {
		t.Fatalf("the same bytes from another edge made %d batches, want 1 more", got-b-1)
	}
}
