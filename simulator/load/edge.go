package load

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// edge is one synthetic edge. Its goroutine (run) owns everything but the
// token counter, which the client libraries' credential callbacks read.
type edge struct {
	id        string
	index     int // from 0
	r         *run
	signer    *protocol.Signer
	cloudKeys protocol.KeyMap
	stream    protocol.Stream
	pool      []protocol.Event // the run's events, shared; read only
	poolAt    int              // where this edge starts in it
	device    string
	rng       *rand.Rand
	hlc       protocol.HLC
	clock     time.Time // the wall time the HLC reads

	counterMu   sync.Mutex
	lastCounter uint64

	// The records base+1..head, made and not yet receipted: raws[i] is
	// seq base+1+i. sentAt[i] is when it was first published (zero: not
	// yet).
	raws   [][]byte
	links  []protocol.Hash
	times  []protocol.HLCTime
	sentAt []time.Time
	base   uint64 // the cloud's verified watermark
	head   uint64
	hash   protocol.Hash // link hash of head

	backlog  int       // backlog events not yet made into records
	backT    time.Time // device and edge time of the next backlog event
	backStep time.Duration
	endless  time.Time // saturate: records are made on demand until then
	liveEnd  time.Time // no live arrivals after this
	// nextArrival is when the next live event arrives (zero: no more).
	nextArrival time.Time

	// The session.
	sent         uint64   // last seq published in this session
	maxSent      uint64   // last seq ever published
	inflight     []flight // published, not yet receipted, oldest first
	rewinds      uint64
	nackRewinds  uint64 // the last part of the message ids: only a nack changes them, as in the edge's uplink
	awaitHello   bool
	lastProgress time.Time
	holdUntil    time.Time // after a nack "unavailable": publish nothing before
	// The ack timeout as the edge's uplink runs it (edge/uplink/ackwait.go):
	// published counts the session's publishes, ackTimeout doubles at each
	// ack timeout until a receipt moves the watermark, looked is the
	// watermark at the last ack timeout's hello, and timeoutHello says
	// the hello awaited is an ack timeout's.
	published    int
	ackTimeout   time.Duration
	looked       uint64
	timeoutHello bool
	dupWindow    time.Duration // the conn's DuplicateWindow
	notBefore    time.Time     // no ack timeout before: the oldest segment's duplicate window

	st edgeStats
}

// flight is a segment in flight: pub is its place among the session's
// publishes (from 1), accepted when the broker was seen to take it.
type flight struct {
	first, last uint64
	pub         int
	accepted    time.Time
}

// edgeStats are one edge's figures.
type edgeStats struct {
	scheduled     time.Time // when it was to connect first
	firstConnect  time.Time
	drained       time.Time
	latencies     []float32 // receipt latency samples, ms
	segments      int       // segments published, every copy
	resent        int       // of which carried records published before
	nacks         map[protocol.NackCode]int
	staleNacks    int // nacks about segments no longer in flight (ignored)
	staleReceipts int // receipts below the watermark that came late (ignored)
	timeouts      int // AckTimeouts without a receipt (then a hello)
	ackWaits      int // of which found the cloud moving (nothing resent)
	dupWaits      int // of which found it stuck inside the broker's duplicate window (nothing resent)
	helloTimeouts int // hellos not answered within HelloTimeout (then a new session)
	sessions      int // successful connects
	dialFailures  int
	dialErrors    map[string]int // failed connects by error
	ends          map[string]int // sessions that ended before the edge was done, by why
	badReplies    int            // replies that did not verify, or named another stream
	errors        []string       // protocol violations by the cloud: a receipt beyond the head, a wrong head, a watermark that went back
}

// token returns a fresh broker token for broker: its counter is above
// every one this edge used before.
func (e *edge) token(broker string) string {
	e.counterMu.Lock()
	c := max(uint64(time.Now().UnixMilli()), e.lastCounter+1)
	e.lastCounter = c
	e.counterMu.Unlock()
	return e.signer.BrokerToken(protocol.BrokerAudience(broker, string(e.r.cloudKID)), e.id, c)
}

func (e *edge) fail(format string, args ...any) {
	if len(e.st.errors) < 10 {
		e.st.errors = append(e.st.errors, fmt.Sprintf(format, args...))
	}
	e.r.c.errors.Add(1)
}

// makeRecord appends the next record: a backlog event (with its past
// time) while there are some, else a live one at now.
func (e *edge) makeRecord(now time.Time, live bool) {
	t := now
	if !live && e.backlog > 0 {
		t = e.backT
		e.backT = e.backT.Add(e.backStep)
		e.backlog--
	}
	e.clock = t
	ev := e.pool[(e.poolAt+int(e.head))%len(e.pool)]
	ev.ID = e.id + "-" + strconv.FormatUint(e.head+1, 10)
	ev.TS = t
	rec := protocol.NewRecord(e.stream, e.device, ev)
	rec.Seq, rec.Prev, rec.EdgeTime = e.head+1, e.hash, e.hlc.Next()
	raw := rec.Encode()
	e.head++
	e.hash = rec.LinkHash(raw)
	e.raws = append(e.raws, raw)
	e.links = append(e.links, e.hash)
	e.times = append(e.times, rec.EdgeTime)
	e.sentAt = append(e.sentAt, time.Time{})
}

// more reports whether records are still to come from the backlog or the
// live traffic (the edge is not done when it has sent what it has).
func (e *edge) more(now time.Time) bool {
	return e.backlog > 0 || now.Before(e.endless) || !e.nextArrival.IsZero()
}

// canMake reports whether a record can be made on demand: from the
// backlog, or endlessly while saturating. Live events are made when they
// arrive.
func (e *edge) canMake(now time.Time) bool {
	return e.backlog > 0 || now.Before(e.endless)
}

func (e *edge) idx(seq uint64) int { return int(seq - e.base - 1) }

// pump publishes segments while the window has room and there is
// something to send.
func (e *edge) pump(c conn, now time.Time) {
	for !e.awaitHello && len(e.inflight) < e.r.cfg.Window && now.After(e.holdUntil) {
		first := e.sent + 1
		bytes := protocol.SegmentOverhead
		last := e.sent
		for last-first+1 < uint64(e.r.cfg.SegmentRecords) {
			if last == e.head {
				if !e.canMake(now) {
					break
				}
				e.makeRecord(now, false)
			}
			cost := protocol.SegmentRecordCost(len(e.raws[e.idx(last+1)]))
			if last >= first && bytes+cost > e.r.cfg.SegmentBytes {
				break
			}
			bytes += cost
			last++
		}
		if last < first {
			return
		}
		i, j := e.idx(first), e.idx(last)
		seg := &protocol.Segment{V: protocol.SegmentVersion, Edge: e.stream.Edge, Epoch: e.stream.Epoch,
			First: first, Last: last, Records: e.raws[i : j+1],
			Checkpoint: e.signer.SignCheckpoint(protocol.Checkpoint{Edge: e.stream.Edge, Epoch: e.stream.Epoch,
				Seq: last, Head: e.links[j], EdgeTime: e.times[j]})}
		b, err := protocol.EncodeSegment(seg, false)
		if err != nil {
			e.fail("encode segment %d..%d: %v", first, last, err)
			return
		}
		if err := c.Publish(b, seg.MsgID(e.nackRewinds)); err != nil {
			return // the session is lost; the next one resends
		}
		e.published++
		e.inflight = append(e.inflight, flight{first: first, last: last, pub: e.published})
		e.st.segments++
		e.r.c.segments.Add(1)
		if first <= e.maxSent {
			e.st.resent++
			e.r.c.resent.Add(1)
		}
		e.maxSent = max(e.maxSent, last)
		if e.sentAt[j].IsZero() {
			e.sentAt[j] = now
		}
		e.sent = last
	}
}

// advance takes a verified watermark hwm with its head hash: it checks the
// head against the edge's own chain and trims what is receipted.
func (e *edge) advance(hwm uint64, head protocol.Hash, now time.Time, what string) bool {
	switch {
	case hwm > e.head:
		e.fail("%s watermark %d is beyond this edge's head %d", what, hwm, e.head)
		return false
	case hwm < e.base:
		// An older receipt that arrives late (two workers commit
		// consecutive segments and publish their receipts in the other
		// order; a hello's answer after a newer receipt): the edge's
		// uplink ignores one that does not move the watermark, and so
		// does this one.
		e.st.staleReceipts++
		return true
	case hwm == e.base:
		return true
	}
	j := e.idx(hwm)
	if e.links[j] != head {
		e.fail("%s head at %d is %s, this edge's chain has %s", what, hwm, head, e.links[j])
		return false
	}
	if t := e.sentAt[j]; !t.IsZero() {
		e.st.latencies = append(e.st.latencies, float32(now.Sub(t).Seconds()*1000))
	}
	e.r.c.committed.Add(int64(hwm - e.base))
	k := j + 1
	e.raws, e.links, e.times, e.sentAt = e.raws[k:], e.links[k:], e.times[k:], e.sentAt[k:]
	e.base = hwm
	e.lastProgress = now
	if what == "receipt" {
		e.ackTimeout, e.notBefore = e.r.cfg.AckTimeout, time.Time{}
	}
	for len(e.inflight) > 0 && e.inflight[0].last <= hwm {
		e.inflight = e.inflight[1:]
	}
	if e.sent < hwm {
		e.sent = hwm
	}
	return true
}

// noteAccepted stamps the segments in flight the broker took (its count
// from the session's first publish).
func (e *edge) noteAccepted(n int, now time.Time) {
	for i := range e.inflight {
		f := &e.inflight[i]
		if f.pub > n {
			break
		}
		if f.accepted.IsZero() {
			f.accepted = now
		}
	}
}

// ackDue reports whether the ack timeout of the oldest segment in flight
// has run out, counted from the later of the last progress and the moment
// the broker took it, with every segment in flight taken (a hello then
// waits behind none of them): edge/uplink's rule.
func (e *edge) ackDue(accepted int, now time.Time) bool {
	if e.awaitHello || len(e.inflight) == 0 || e.inflight[0].accepted.IsZero() || accepted < e.published {
		return false
	}
	from := e.inflight[0].accepted
	if e.lastProgress.After(from) {
		from = e.lastProgress
	}
	at := from.Add(e.ackTimeout)
	if e.notBefore.After(at) {
		at = e.notBefore
	}
	return !now.Before(at)
}

// helloAnswered takes the first receipt after a hello. After an ack
// timeout's hello, a watermark that moved since the last look means the
// cloud is behind but moving: the window stays in flight. A stuck one
// resends from it.
func (e *edge) helloAnswered(now time.Time) {
	e.awaitHello = false
	if !e.timeoutHello {
		e.sent = e.base
		return
	}
	e.timeoutHello = false
	moving := e.base > e.looked
	e.looked = e.base
	e.lastProgress = now
	e.ackTimeout = min(2*e.ackTimeout, 8*e.r.cfg.AckTimeout)
	if moving {
		e.st.ackWaits++
		e.r.c.ackWaits.Add(1)
		return
	}
	if e.dupWindow > 0 && len(e.inflight) > 0 && !e.inflight[0].accepted.IsZero() {
		if until := e.inflight[0].accepted.Add(e.dupWindow); now.Before(until) {
			// A resend with the same id would be dropped by the broker.
			e.notBefore = until
			e.st.dupWaits++
			e.r.c.dupWaits.Add(1)
			return
		}
	}
	e.rewind(now)
}

// rewind resends from the watermark.
func (e *edge) rewind(now time.Time) {
	e.rewinds++
	e.sent = e.base
	e.inflight = nil
	e.lastProgress = now
}

// reply handles a receipt or nack.
func (e *edge) reply(b []byte, now time.Time) {
	rep, err := protocol.VerifyReply(b, e.cloudKeys)
	if err != nil {
		e.st.badReplies++
		e.fail("reply does not verify against the pinned cloud key: %v", err)
		return
	}
	if rc := rep.Receipt; rc != nil {
		if rc.Stream() != e.stream {
			e.st.badReplies++
			return
		}
		if e.advance(rc.HWM, rc.Head, now, "receipt") && e.awaitHello {
			e.helloAnswered(now)
		}
		return
	}
	n := rep.Nack
	if n.Stream() != e.stream {
		e.st.badReplies++
		return
	}
	if e.st.nacks == nil {
		e.st.nacks = map[protocol.NackCode]int{}
	}
	e.st.nacks[n.Code]++
	e.r.c.nacks.Add(1)
	mine := false
	for _, f := range e.inflight {
		mine = mine || f.first == n.First && f.last == n.Last
	}
	if !mine {
		e.st.staleNacks++
		return
	}
	switch n.Code {
	case protocol.NackGap, protocol.NackUnavailable:
	default:
		e.fail("nack %s for %d..%d: %s", n.Code, n.First, n.Last, n.Reason)
	}
	e.advance(n.HWM, n.Head, now, "nack")
	if n.Code == protocol.NackUnavailable {
		e.holdUntil = now.Add(500 * time.Millisecond)
	}
	e.nackRewinds++
	e.notBefore = time.Time{}
	e.rewind(now)
}

// done reports whether the edge has nothing more to send and everything
// it made is receipted.
func (e *edge) done(now time.Time) bool { return !e.more(now) && e.base == e.head }

// run plays the edge until it is done or ctx ends.
func (e *edge) run(ctx context.Context, start time.Time, dial dialer) {
	if d := time.Until(start); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	cfg := &e.r.cfg
	e.st.scheduled = start
	now := time.Now()
	if cfg.Rate > 0 {
		e.liveEnd = now.Add(cfg.Duration)
		e.nextArrival = now.Add(time.Duration(e.rng.ExpFloat64() * float64(time.Second) / cfg.Rate))
	}
	if cfg.Saturate {
		e.endless = now.Add(cfg.Duration)
	}
	// Replies go through one channel to the edge's goroutine; a session
	// that ends leaves its late replies there, which are verified like any.
	replies := make(chan []byte, 64)
	onReply := func(b []byte) {
		select {
		case replies <- append([]byte(nil), b...):
		case <-ctx.Done():
		}
	}
	backoff := 200 * time.Millisecond
	for !e.done(time.Now()) {
		c, err := dial(ctx, e, onReply)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			e.st.dialFailures++
			if e.st.dialErrors == nil {
				e.st.dialErrors = map[string]int{}
			}
			e.st.dialErrors[errText(err)]++
			e.r.c.dialFailures.Add(1)
			if !sleep(ctx, backoff/2+time.Duration(e.rng.Int64N(int64(backoff)))) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 200 * time.Millisecond
		e.st.sessions++
		if e.st.firstConnect.IsZero() {
			e.st.firstConnect = time.Now()
			e.r.c.connected.Add(1)
		}
		why := e.session(ctx, c, replies)
		if why == "" {
			why = c.Reason()
		}
		c.Close()
		if why != "" && !e.done(time.Now()) {
			if e.st.ends == nil {
				e.st.ends = map[string]int{}
			}
			e.st.ends[why]++
		}
		if ctx.Err() != nil {
			return
		}
	}
	e.st.drained = time.Now()
	e.r.c.drained.Add(1)
}

// catchUp makes the live events due by now, each at its own arrival
// time (Poisson arrivals at the rate), and sets the next arrival (zero
// when the live traffic is over).
func (e *edge) catchUp(now time.Time) {
	for !e.nextArrival.IsZero() && !e.nextArrival.After(now) {
		e.makeRecord(e.nextArrival, true)
		e.nextArrival = e.nextArrival.Add(time.Duration(e.rng.ExpFloat64() * float64(time.Second) / e.r.cfg.Rate))
		if !e.nextArrival.Before(e.liveEnd) {
			e.nextArrival = time.Time{}
		}
	}
}

// hello is the edge's hello: its head, with the signed checkpoint of it
// while it holds that record.
func (e *edge) hello() []byte {
	h := protocol.Hello{Edge: e.stream.Edge, Epoch: e.stream.Epoch, Seq: e.head, SentAt: time.Now().UnixMilli(), Agent: "outpost-sim-load"}
	if e.head > e.base {
		j := e.idx(e.head)
		h.Checkpoint = e.signer.SignCheckpoint(protocol.Checkpoint{Edge: e.stream.Edge, Epoch: e.stream.Epoch,
			Seq: e.head, Head: e.links[j], EdgeTime: e.times[j]})
	}
	return protocol.EncodeHello(h)
}

// session runs one broker session until it is lost, the edge is done, or
// ctx ends.
func (e *edge) session(ctx context.Context, c conn, replies chan []byte) string {
	cfg := &e.r.cfg
	e.rewind(time.Now())
	e.awaitHello, e.timeoutHello, e.published = true, false, 0
	e.looked, e.ackTimeout, e.dupWindow, e.notBefore = e.base, cfg.AckTimeout, c.DuplicateWindow(), time.Time{}
	if err := c.Hello(ctx, e.hello()); err != nil {
		return ""
	}
	helloAt := time.Now()

	// Live events arrive whether or not the uplink is up (devices keep
	// selling); those due while the edge was away are made now, at their
	// own times.
	e.catchUp(time.Now())
	arrival := time.NewTimer(time.Hour)
	defer arrival.Stop()
	if !e.nextArrival.IsZero() {
		arrival.Reset(time.Until(e.nextArrival))
	}
	tick := time.NewTicker(max(min(cfg.AckTimeout, cfg.HelloTimeout)/4, 50*time.Millisecond))
	defer tick.Stop()
	for {
		now := time.Now()
		e.pump(c, now)
		if e.done(now) {
			return ""
		}
		select {
		case <-ctx.Done():
			return ""
		case <-c.Lost():
			return ""
		case b := <-replies:
			e.reply(b, time.Now())
			// Take what else is waiting before publishing again.
			for more := true; more; {
				select {
				case b := <-replies:
					e.reply(b, time.Now())
				default:
					more = false
				}
			}
		case <-arrival.C:
			// A live event is stored at once, as an edge's outbox does;
			// it goes out with the next segment the window allows.
			e.catchUp(time.Now())
			if !e.nextArrival.IsZero() {
				arrival.Reset(time.Until(e.nextArrival))
			}
		case <-tick.C:
			now := time.Now()
			e.noteAccepted(c.Accepted(), now)
			switch {
			case e.awaitHello && now.Sub(helloAt) > cfg.HelloTimeout:
				e.st.helloTimeouts++
				e.r.c.helloTimeouts.Add(1)
				return "hello unanswered within the hello timeout"
			case e.ackDue(c.Accepted(), now):
				// As the edge's uplink does: ask the cloud where it is
				// with a hello; its answer says whether to wait again or
				// resend (helloAnswered).
				e.st.timeouts++
				e.r.c.timeouts.Add(1)
				e.awaitHello, e.timeoutHello = true, true
				if err := c.Hello(ctx, e.hello()); err != nil {
					return ""
				}
				helloAt = time.Now()
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
