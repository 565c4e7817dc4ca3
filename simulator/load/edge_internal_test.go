package load

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

func testEdge(tb testing.TB) *edge {
	tb.Helper()
	_, priv, _ := protocol.GenerateKey()
	signer, _ := protocol.NewSigner(priv)
	epoch, _ := protocol.NewEpoch(nil)
	r := &run{cfg: Config{EdgePrefix: "e", Seed: 1}, poolSize: 64}
	r.makePool()
	e := &edge{id: "e-1", r: r, signer: signer, stream: protocol.Stream{Edge: "e-1", Epoch: epoch}, device: "till-1", pool: r.pool,
		rng: rand.New(rand.NewPCG(1, 2))}
	e.hlc.Now = func() time.Time { return e.clock }
	return e
}

// BenchmarkMakeRecord is the load generator's cost of one record: a POS
// event, its record's CBOR and link hash.
func BenchmarkMakeRecord(b *testing.B) {
	e := testEdge(b)
	now := time.Now()
	for b.Loop() {
		e.makeRecord(now, true)
		if len(e.raws) > 1000 {
			e.raws, e.links, e.times, e.sentAt = e.raws[:0], e.links[:0], e.times[:0], e.sentAt[:0]
			e.base = e.head
		}
	}
}

// withRecords returns a test edge holding n records, none receipted, and
// a cloud signer whose key the edge pinned.
func withRecords(t *testing.T, n int) (*edge, *protocol.Signer) {
	t.Helper()
	e := testEdge(t)
	e.r.cfg.Window, e.r.cfg.SegmentRecords, e.r.cfg.SegmentBytes = 4, 10, 256<<10
	_, priv, _ := protocol.GenerateKey()
	cloud, _ := protocol.NewSigner(priv)
	e.cloudKeys = protocol.NewKeyMap(cloud.Public())
	now := time.Now()
	for range n {
		e.makeRecord(now, true)
	}
	return e, cloud
}

func (e *edge) receipt(s *protocol.Signer, hwm uint64, head protocol.Hash) []byte {
	return s.SignReceipt(protocol.Receipt{Edge: e.stream.Edge, Epoch: e.stream.Epoch, HWM: hwm, Head: head, CommittedAt: time.Now().UnixMilli()})
}

func TestReceiptTrimsOnlyWithItsOwnHead(t *testing.T) {
	e, cloud := withRecords(t, 30)
	now := time.Now()
	e.reply(e.receipt(cloud, 10, e.links[9]), now)
	if e.base != 10 || len(e.raws) != 20 || len(e.st.errors) != 0 {
		t.Fatalf("after a good receipt for 10: base %d, %d held, errors %v", e.base, len(e.raws), e.st.errors)
	}
	// A receipt whose head is not this edge's hash at that seq (a forked
	// or corrupted ledger) trims nothing and is a violation.
	e.reply(e.receipt(cloud, 20, protocol.Hash{1}), now)
	if e.base != 10 || len(e.st.errors) != 1 {
		t.Fatalf("after a receipt with a wrong head: base %d, errors %v", e.base, e.st.errors)
	}
	// Beyond the head is a violation too; an older receipt that comes
	// late (two workers published in the other order) is ignored.
	e.reply(e.receipt(cloud, 31, protocol.Hash{}), now)
	e.reply(e.receipt(cloud, 5, protocol.Hash{}), now)
	if e.base != 10 || len(e.st.errors) != 2 || e.st.staleReceipts != 1 {
		t.Fatalf("after receipts beyond the head and below the watermark: base %d, errors %v, stale %d", e.base, e.st.errors, e.st.staleReceipts)
	}
	// A receipt signed by another key is refused.
	_, priv, _ := protocol.GenerateKey()
	other, _ := protocol.NewSigner(priv)
	e.reply(e.receipt(other, 30, e.links[19]), now)
	if e.base != 10 || e.st.badReplies != 1 {
		t.Fatalf("after a receipt by another key: base %d, bad replies %d", e.base, e.st.badReplies)
	}
}

// recorder is a conn that keeps what is published.
type recorder struct {
	segs      []*protocol.Segment
	lost      chan struct{}
	dupWindow time.Duration
}

func (r *recorder) Hello(context.Context, []byte) error { return nil }
func (r *recorder) Publish(b []byte, _ string) error {
	s, err := protocol.DecodeSegment(b)
	if err != nil {
		return err
	}
	r.segs = append(r.segs, s)
	return nil
}
func (r *recorder) Accepted() int                  { return len(r.segs) }
func (r *recorder) DuplicateWindow() time.Duration { return r.dupWindow }
func (r *recorder) Lost() <-chan struct{}          { return r.lost }
func (r *recorder) Close()                         {}
func (r *recorder) Reason() string                 { return "" }

func TestNackRewindsOnlyForSegmentsInFlight(t *testing.T) {
	e, cloud := withRecords(t, 100)
	c := &recorder{lost: make(chan struct{})}
	now := time.Now()
	e.pump(c, now)
	if len(c.segs) != 4 || c.segs[0].First != 1 || c.segs[3].Last != 40 {
		t.Fatalf("published %d segments; want 4 of 10 records from 1", len(c.segs))
	}
	for _, s := range c.segs {
		if _, err := protocol.VerifyCheckpoint(s.Checkpoint, protocol.NewKeyMap(e.signer.Public())); err != nil {
			t.Fatalf("segment %d..%d: %v", s.First, s.Last, err)
		}
	}
	nack := func(first, last uint64) []byte {
		return cloud.SignNack(protocol.Nack{Edge: e.stream.Edge, Epoch: e.stream.Epoch, HWM: 0, Code: protocol.NackGap,
			Reason: "gap", First: first, Last: last})
	}
	// A nack about a segment never sent is ignored.
	e.reply(nack(91, 100), now)
	if e.st.staleNacks != 1 || e.sent != 40 {
		t.Fatalf("after a nack about a segment not in flight: stale %d, sent %d", e.st.staleNacks, e.sent)
	}
	// A nack about one in flight rewinds to the watermark, and the
	// records go again in the next pump, counted as resent.
	e.reply(nack(11, 20), now)
	if e.sent != 0 || len(e.inflight) != 0 || e.rewinds != 1 {
		t.Fatalf("after a nack in flight: sent %d, in flight %d, rewinds %d", e.sent, len(e.inflight), e.rewinds)
	}
	e.pump(c, now)
	if len(c.segs) != 8 || c.segs[4].First != 1 || e.st.resent != 4 {
		t.Fatalf("after the rewind: %d segments, the fifth from %d, %d resent", len(c.segs), c.segs[4].First, e.st.resent)
	}
	// A receipt with the edge's own head at 100 trims everything and
	// empties the window.
	e.reply(e.receipt(cloud, 100, e.links[99]), now)
	if e.base != 100 || len(e.inflight) != 0 || len(e.raws) != 0 || len(e.st.errors) != 0 {
		t.Fatalf("after a receipt for 100: base %d, in flight %d, held %d, errors %v", e.base, len(e.inflight), len(e.raws), e.st.errors)
	}
	if !e.done(now) {
		t.Error("an edge with everything receipted and no traffic is not done")
	}
}

// Live events arrive while the uplink is down too: a session that starts
// late makes every event due since, at its own time.
func TestArrivalsWhileAway(t *testing.T) {
	e := testEdge(t)
	e.r.cfg.Rate = 50
	t0 := time.Now().Add(-2 * time.Second)
	e.liveEnd, e.nextArrival = t0.Add(time.Second), t0
	e.catchUp(t0.Add(500 * time.Millisecond))
	half := e.head
	if half < 5 || half > 60 {
		t.Fatalf("%d events made in the first half second at 50/s", half)
	}
	e.catchUp(time.Now())
	if !e.nextArrival.IsZero() || e.more(time.Now()) {
		t.Errorf("after the live window: next arrival %v, more %v", e.nextArrival, e.more(time.Now()))
	}
	if e.head <= half {
		t.Errorf("the second half second made nothing (%d then %d)", half, e.head)
	}
	for i, ht := range e.times {
		if ht.Time().After(t0.Add(time.Second)) || ht.Time().Before(t0.Add(-time.Millisecond)) {
			t.Fatalf("record %d at %v, outside the live window from %v", i+1, ht.Time(), t0)
		}
	}
}

// The load edge runs the ack timeout as edge/uplink does: not before the
// broker took the segments in flight, no resend when the hello shows the
// cloud moved since the last look, a resend (with the same message ids)
// when it is stuck, and the timeout doubling meanwhile.
func TestAckTimeoutAsTheUplink(t *testing.T) {
	e, cloud := withRecords(t, 100)
	e.r.cfg.AckTimeout = 30 * time.Second
	e.ackTimeout = e.r.cfg.AckTimeout
	c := &recorder{lost: make(chan struct{})}
	t0 := time.Now()
	e.pump(c, t0)
	if e.ackDue(0, t0.Add(time.Hour)) {
		t.Fatal("ack timeout due with nothing taken by the broker")
	}
	e.noteAccepted(4, t0)
	if e.ackDue(4, t0.Add(29*time.Second)) || !e.ackDue(4, t0.Add(30*time.Second)) {
		t.Fatal("the ack timeout does not end 30s after the broker took the oldest segment")
	}
	// A receipt for the first segment, then nothing: the hello shows the
	// watermark above the last look (the session's start), so nothing is
	// resent and the timeout doubles.
	e.reply(e.receipt(cloud, 10, e.links[9]), t0.Add(5*time.Second))
	e.awaitHello, e.timeoutHello = true, true
	e.reply(e.receipt(cloud, 10, e.links[9]), t0.Add(35*time.Second))
	if e.awaitHello || e.sent != 40 || len(e.inflight) != 3 || e.ackTimeout != time.Minute || e.st.ackWaits != 1 {
		t.Fatalf("after a hello that shows the cloud moving: sent %d, in flight %d, timeout %s, waits %d", e.sent, len(e.inflight), e.ackTimeout, e.st.ackWaits)
	}
	// Stuck across the next timeout: resend from the watermark, with the
	// message ids of the first copies.
	e.awaitHello, e.timeoutHello = true, true
	e.reply(e.receipt(cloud, 10, e.links[9]), t0.Add(95*time.Second))
	if e.sent != 10 || len(e.inflight) != 0 || e.ackTimeout != 2*time.Minute || e.nackRewinds != 0 {
		t.Fatalf("after a hello that shows the cloud stuck: sent %d, in flight %d, timeout %s, nack rewinds %d", e.sent, len(e.inflight), e.ackTimeout, e.nackRewinds)
	}
}

// Over a broker with a duplicate window, a stuck watermark inside the
// oldest segment's window resends nothing (the broker would drop it), and
// the next ack timeout comes no earlier than the window's end.
func TestAckTimeoutWaitsOutTheDuplicateWindow(t *testing.T) {
	e, cloud := withRecords(t, 100)
	e.r.cfg.AckTimeout = 30 * time.Second
	e.ackTimeout, e.dupWindow = e.r.cfg.AckTimeout, 2*time.Minute
	c := &recorder{lost: make(chan struct{}), dupWindow: 2 * time.Minute}
	t0 := time.Now()
	e.pump(c, t0)
	e.noteAccepted(4, t0)
	e.awaitHello, e.timeoutHello = true, true
	e.reply(e.receipt(cloud, 0, protocol.Hash{}), t0.Add(30*time.Second))
	if e.sent != 40 || len(e.inflight) != 4 || e.st.dupWaits != 1 {
		t.Fatalf("stuck inside the window: sent %d, in flight %d, waits %d; want nothing resent", e.sent, len(e.inflight), e.st.dupWaits)
	}
	if e.ackDue(4, t0.Add(119*time.Second)) || !e.ackDue(4, t0.Add(120*time.Second)) {
		t.Fatal("the next ack timeout is not at the end of the duplicate window")
	}
	e.awaitHello, e.timeoutHello = true, true
	e.reply(e.receipt(cloud, 0, protocol.Hash{}), t0.Add(120*time.Second))
	if e.sent != 0 || len(e.inflight) != 0 {
		t.Fatalf("stuck past the window: sent %d, in flight %d; want a resend from the watermark", e.sent, len(e.inflight))
	}
}
