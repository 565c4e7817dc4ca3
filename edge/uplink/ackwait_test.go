package uplink_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/protocol"
)

// queueTransport is a broker with a queue in front of a slow cloud, in
// virtual time: a segment is taken by the broker (its PUBACK) at once, or
// when a hold ends (the embedded MQTT broker stops reading an edge while
// ingest is full), and committed by the cloud latency() after that, in
// order; receipts come back on the current session. A hello on a session
// with a segment the broker has not taken waits behind it, as an MQTT
// hello on a held connection does, and ends the session when the broker
// does not take it within helloWait. The cloud answers hellos at once with
// its watermark.
type queueTransport struct {
	ctx   context.Context
	cloud *memCloud

	mu        sync.Mutex
	onReply   func([]byte)
	lost      chan struct{}
	ended     bool // lost is closed
	sessions  int
	published uint64 // this session's publishes
	accepted  uint64 // of which the broker took, in order
	accCh     chan struct{}
	held      []queued // published, not taken: the session's, in order
	holdUntil time.Time
	latency   time.Duration
	dupWindow time.Duration // Deduplicator's (0: none); the fake drops nothing itself
	// lose, when set, is asked at commit time: true drops the segment
	// silently (the cloud lost it).
	lose   func(seg *protocol.Segment) bool
	pubs   []queuedPub
	hellos []time.Time

	commits chan queued // to the cloud's worker, in order
	wake    chan struct{}
}

type queued struct {
	raw   []byte
	seg   *protocol.Segment
	due   time.Time // when the cloud commits it
	pub   uint64
	epoch int // session
}

type queuedPub struct {
	at          time.Time
	first, last uint64
	msgID       string
}

var (
	_ uplink.Transport    = (*queueTransport)(nil)
	_ uplink.Accepter     = (*queueTransport)(nil)
	_ uplink.Deduplicator = (*queueTransport)(nil)
)

const helloWait = 10 * time.Second

func newQueueTransport(ctx context.Context, cloud *memCloud, latency time.Duration) *queueTransport {
	q := &queueTransport{ctx: ctx, cloud: cloud, latency: latency, accCh: make(chan struct{}, 1),
		commits: make(chan queued, 1024), wake: make(chan struct{}, 1)}
	go q.broker()
	go q.worker()
	return q
}

func (q *queueTransport) Connect(_ context.Context, onReply func([]byte)) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.onReply, q.lost, q.ended = onReply, make(chan struct{}), false
	q.sessions++
	q.published, q.accepted, q.held = 0, 0, nil // what was not taken is gone with the connection
	return nil
}

func (q *queueTransport) Hello(ctx context.Context, b []byte) error {
	h, err := protocol.DecodeHello(b)
	if err != nil {
		return err
	}
	q.mu.Lock()
	q.hellos = append(q.hellos, time.Now())
	q.mu.Unlock()
	deadline := time.Now().Add(helloWait)
	for {
		q.mu.Lock()
		waiting := len(q.held) > 0
		reply, lost := q.onReply, q.lost
		q.mu.Unlock()
		if !waiting {
			for _, r := range q.cloud.hello(h) {
				reply(r)
			}
			return nil
		}
		if !time.Now().Before(deadline) {
			q.mu.Lock()
			if q.lost == lost && !q.ended {
				q.ended = true
				close(q.lost)
			}
			q.mu.Unlock()
			return errors.New("hello: no PUBACK: it waits behind a held segment")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (q *queueTransport) Publish(_ context.Context, b []byte, msgID string) error {
	seg, err := protocol.DecodeSegment(b)
	if err != nil {
		return err
	}
	q.mu.Lock()
	q.published++
	q.pubs = append(q.pubs, queuedPub{at: time.Now(), first: seg.First, last: seg.Last, msgID: msgID})
	q.held = append(q.held, queued{raw: b, seg: seg, pub: q.published, epoch: q.sessions})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// broker takes the held segments, in order, once no hold is in force.
func (q *queueTransport) broker() {
	for {
		q.mu.Lock()
		wait := time.Until(q.holdUntil)
		var take []queued
		latency := q.latency
		if wait <= 0 {
			take, q.held = q.held, nil
			q.accepted += uint64(len(take))
		}
		q.mu.Unlock()
		if len(take) > 0 {
			for _, it := range take {
				it.due = time.Now().Add(latency)
				q.commits <- it
			}
			select {
			case q.accCh <- struct{}{}:
			default:
			}
		}
		var timer <-chan time.Time
		if wait > 0 {
			timer = time.After(wait)
		}
		select {
		case <-q.ctx.Done():
			return
		case <-q.wake:
		case <-timer:
		}
	}
}

// worker is the cloud: it commits what the broker took, in order, each at
// its due time.
func (q *queueTransport) worker() {
	for {
		var it queued
		select {
		case <-q.ctx.Done():
			return
		case it = <-q.commits:
		}
		if d := time.Until(it.due); d > 0 { // due times only grow: latency changes only upwards in these tests
			select {
			case <-q.ctx.Done():
				return
			case <-time.After(d):
			}
		}
		q.mu.Lock()
		lose := q.lose
		q.mu.Unlock()
		if lose != nil && lose(it.seg) {
			continue
		}
		replies := q.cloud.segment(it.raw, it.seg)
		q.mu.Lock()
		reply := q.onReply
		q.mu.Unlock()
		for _, r := range replies {
			reply(r)
		}
	}
}

func (q *queueTransport) Accepted() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.accepted
}

func (q *queueTransport) AcceptedChanged() <-chan struct{} { return q.accCh }

func (q *queueTransport) DuplicateWindow() time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dupWindow
}

func (q *queueTransport) Lost() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lost
}

func (q *queueTransport) Close() error { return nil }

// resends counts the publishes that carried a record published before.
func (q *queueTransport) resends() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n, maxSent := 0, uint64(0)
	for _, p := range q.pubs {
		if p.first <= maxSent {
			n++
		}
		maxSent = max(maxSent, p.last)
	}
	return n
}

func (q *queueTransport) publishes() []queuedPub {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queuedPub(nil), q.pubs...)
}

type queueRig struct {
	src *memSource
	tr  *queueTransport
	up  *uplink.Uplink
}

// startQueue runs an uplink over a queueTransport inside the current
// synctest bubble: window 4, one segment per group, ack timeout 30s.
func startQueue(t *testing.T, latency time.Duration, mod func(*queueTransport), groups ...int) *queueRig {
	t.Helper()
	edgeKey, cloudKey := key("edge"), key("cloud")
	r := &queueRig{src: newMemSource("e1", edgeKey)}
	for _, n := range groups {
		r.src.add(n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cloud := &memCloud{signer: cloudKey, stream: r.src.Stream()}
	r.tr = newQueueTransport(ctx, cloud, latency)
	if mod != nil {
		r.tr.mu.Lock()
		mod(r.tr)
		r.tr.mu.Unlock()
	}
	var err error
	r.up, err = uplink.New(uplink.Options{Transport: r.tr, Source: r.src, CloudKeys: protocol.NewKeyMap(cloudKey.Public()),
		Window: 4, MaxSegmentBytes: 600, BackoffBase: 500 * time.Millisecond, BackoffMax: 4 * time.Second,
		HelloTimeout: 2 * time.Second, AckTimeout: 30 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = r.up.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// The spiral: the cloud is behind but moving (every segment committed 45s
// after the broker took it, more than the ack timeout, while receipts keep
// coming). Each ack timeout used to resend the whole window, which only
// queued more behind it; now the hello shows the watermark moved since the
// last look, and the uplink waits for what the broker holds.
func TestAckTimeoutWaitsForAMovingCloud(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startQueue(t, 0, nil, 5)
		settle(time.Second)
		if got := r.src.Trimmed(); got != 5 {
			t.Fatalf("trimmed %d while the cloud is quick; want 5", got)
		}
		// Now the cloud falls behind, and stays behind, but moves.
		r.tr.mu.Lock()
		r.tr.latency = 45 * time.Second
		r.tr.mu.Unlock()
		for range 12 {
			r.src.add(5)
		}
		settle(10 * time.Minute)
		if got, want := r.src.Trimmed(), r.src.LastSeq(); got != want {
			t.Fatalf("trimmed %d of %d (stats %+v)", got, want, r.up.Stats())
		}
		s := r.up.Stats()
		if n := r.tr.resends(); n != 0 {
			t.Fatalf("%d segments resent to a cloud that was behind but moving (stats %+v); want 0", n, s)
		}
		if s.AckTimeouts == 0 || s.AckWaits != s.AckTimeouts || s.Sessions != 1 {
			t.Fatalf("stats %+v: want ack timeouts, each of them a wait, in one session", s)
		}
	})
}

// The broker holds the edge's segments (back-pressure) for longer than the
// ack timeout: the timeout does not run until the broker took them, and no
// hello waits behind a held segment, so the session does not churn and
// nothing is resent.
func TestAckTimeoutWaitsForTheBroker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startQueue(t, 0, func(q *queueTransport) { q.holdUntil = time.Now().Add(70 * time.Second) }, 5, 5, 5, 5, 5, 5)
		settle(69 * time.Second)
		if got := r.src.Trimmed(); got != 0 {
			t.Fatalf("trimmed %d while the broker holds every segment", got)
		}
		settle(10 * time.Second)
		if got := r.src.Trimmed(); got != 30 {
			t.Fatalf("trimmed %d after the hold; want 30 (stats %+v)", got, r.up.Stats())
		}
		s := r.up.Stats()
		if n := r.tr.resends(); n != 0 || s.Sessions != 1 || s.AckTimeouts != 0 {
			t.Fatalf("%d resends, stats %+v; want none, one session, no ack timeout", n, s)
		}
	})
}

// The ack timeout of a segment the broker took runs out while a later one
// is held: the hello waits until the broker has taken that one too (it
// would wait behind it on the connection), and the session goes on.
func TestAckTimeoutHelloWaitsForHeldSegment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startQueue(t, 100*time.Second, nil, 5)
		settle(time.Second)
		r.tr.mu.Lock()
		r.tr.holdUntil = time.Now().Add(60 * time.Second)
		r.tr.mu.Unlock()
		r.src.add(5)
		settle(59 * time.Second)
		r.tr.mu.Lock()
		hellos := len(r.tr.hellos)
		r.tr.mu.Unlock()
		if hellos != 1 {
			t.Fatalf("%d hellos while a segment is held (the session's first included); want 1", hellos)
		}
		settle(2 * time.Second)
		r.tr.mu.Lock()
		hellos = len(r.tr.hellos)
		r.tr.mu.Unlock()
		if s := r.up.Stats(); hellos != 2 || s.AckTimeouts != 1 || s.Sessions != 1 {
			t.Fatalf("%d hellos, stats %+v; want the ack timeout's hello once the hold ended, in the same session", hellos, s)
		}
		settle(5 * time.Minute)
		if got := r.src.Trimmed(); got != 10 {
			t.Fatalf("trimmed %d; want 10 (stats %+v)", got, r.up.Stats())
		}
	})
}

// A segment the cloud lost for good (no nack: it was the last one sent) is
// still resent by the ack timeout, with its first message id (JetStream
// drops the copy while it holds the first), and trimmed. When the cloud
// moved before the loss, the first timeout waits, and the next one, twice
// as long, finds the watermark stuck and resends.
func TestAckTimeoutResendsALostSegment(t *testing.T) {
	for _, tc := range []struct {
		name      string
		groups    []int
		lost      uint64 // first seq of the lost segment
		resendBy  time.Duration
		timeouts  uint64
		waitFirst bool
	}{
		{name: "nothing moved", groups: []int{5}, lost: 1, resendBy: 31 * time.Second, timeouts: 1},
		{name: "after progress", groups: []int{5, 5, 5}, lost: 11, resendBy: 91 * time.Second, timeouts: 2, waitFirst: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var mu sync.Mutex
				lose := true
				r := startQueue(t, 0, func(q *queueTransport) {
					q.lose = func(seg *protocol.Segment) bool {
						mu.Lock()
						defer mu.Unlock()
						if seg.First == tc.lost && lose {
							lose = false
							return true
						}
						return false
					}
				}, tc.groups...)
				settle(tc.resendBy)
				want := uint64(5 * len(tc.groups))
				if got := r.src.Trimmed(); got != want {
					t.Fatalf("trimmed %d by %s; want %d (stats %+v)", got, tc.resendBy, want, r.up.Stats())
				}
				s := r.up.Stats()
				if s.AckTimeouts != tc.timeouts || (s.AckWaits > 0) != tc.waitFirst || r.tr.resends() != 1 {
					t.Fatalf("stats %+v, %d resends; want %d ack timeouts, a wait first: %v, 1 resend", s, r.tr.resends(), tc.timeouts, tc.waitFirst)
				}
				var ids []string
				for _, p := range r.tr.publishes() {
					if p.first == tc.lost {
						ids = append(ids, p.msgID)
					}
				}
				if len(ids) != 2 || ids[0] != ids[1] {
					t.Fatalf("message ids of the lost segment and its resend: %q; want the same twice", ids)
				}
			})
		})
	}
}

// A resend a nack asked for gets a new message id: the cloud consumed and
// refused the first copy, and a broker's duplicate window must not drop
// the one it asked for.
func TestNackResendGetsANewMsgID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		refused := false
		r := startMem(t, func(seg *protocol.Segment) int {
			mu.Lock()
			defer mu.Unlock()
			if seg.First == 1 && !refused {
				refused = true
				return int(protocol.NackChain)
			}
			return 0
		}, nil, 5)
		settle(5 * time.Second)
		if got := r.src.Trimmed(); got != 5 {
			t.Fatalf("trimmed %d; want 5", got)
		}
		ids := r.tr.msgIDs()
		if len(ids) != 2 || ids[0] == ids[1] {
			t.Fatalf("message ids %q: want two different ones", ids)
		}
	})
}

// Over a broker with a duplicate window (JetStream), a resend with the
// same message id inside it would be dropped whatever became of the first
// copy: a stuck watermark waits out the window of the oldest segment in
// flight, and the look after it resends.
func TestAckTimeoutStuckWaitsOutTheDuplicateWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		lose := true
		start := time.Now()
		r := startQueue(t, 0, func(q *queueTransport) {
			q.dupWindow = 2 * time.Minute
			q.lose = func(seg *protocol.Segment) bool {
				mu.Lock()
				defer mu.Unlock()
				l := lose
				lose = false
				return l
			}
		}, 5)
		settle(119 * time.Second)
		if n := r.tr.resends(); n != 0 {
			t.Fatalf("%d resends inside the duplicate window; want 0 (stats %+v)", n, r.up.Stats())
		}
		settle(2 * time.Second)
		p := r.tr.publishes()
		if got := r.src.Trimmed(); got != 5 || len(p) != 2 || p[1].at.Sub(start) != 2*time.Minute || p[0].msgID != p[1].msgID {
			t.Fatalf("trimmed %d, publishes %+v; want the resend, same id, at 2m", got, p)
		}
		if s := r.up.Stats(); s.AckTimeouts != 2 || s.DuplicateWaits != 1 {
			t.Fatalf("stats %+v; want 2 ack timeouts, 1 waiting out the window", s)
		}
	})
}
