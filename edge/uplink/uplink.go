package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/outpost-edge/outpost/protocol"
)

// Transport is one way to reach the cloud. An implementation carries one
// session per Connect; after Lost is closed, the uplink calls Close and then
// Connect again.
type Transport interface {
	// Connect opens a session. Replies (signed receipts and nacks) that
	// arrive on it are passed to onReply, in arrival order, from a
	// transport goroutine; onReply does not block.
	Connect(ctx context.Context, onReply func(msg []byte)) error
	// Hello sends a hello; the cloud's answer arrives through onReply.
	Hello(ctx context.Context, hello []byte) error
	// Publish hands one encoded segment to the transport. It may return
	// before the broker has it: only a receipt says it arrived. An error
	// means the session is broken.
	Publish(ctx context.Context, segment []byte, msgID string) error
	// Lost is closed when the session ends.
	Lost() <-chan struct{}
	// Close ends the session.
	Close() error
}

// Accepter is what a Transport may also do: say which of the session's
// segments its broker has taken (an MQTT PUBACK, a JetStream PubAck).
// A segment the broker has not taken is held by back-pressure (the broker
// stops reading the connection while the cloud is behind) or still on its
// way: the ack timeout does not run for it, and no hello is sent behind
// it. Without Accepter a segment counts as taken when Publish returns.
type Accepter interface {
	// Accepted is how many of the current session's Publish calls, from
	// the first in order, the broker has acknowledged: the first n are
	// all taken. It starts at 0 at each Connect.
	Accepted() uint64
	// AcceptedChanged receives after Accepted moves (a channel of
	// capacity 1: a signal is dropped while one is waiting).
	AcceptedChanged() <-chan struct{}
}

// Deduplicator is what a Transport may also do: say how long its broker
// drops a publish whose message id it has seen (JetStream's duplicate
// window). A resend after an ack timeout keeps its id (only a nack changes
// it), so within that window the broker would drop it whatever became of
// the first copy: the uplink does not send it then (ackwait.go).
type Deduplicator interface {
	DuplicateWindow() time.Duration
}

// Source is what the uplink reads and trims: the outbox.
type Source interface {
	Stream() protocol.Stream
	// LastSeq is the seq of the newest durable record (0 when empty).
	LastSeq() uint64
	// AckedSeq is the watermark of the last receipt the source trimmed to.
	AckedSeq() uint64
	// Segment returns records from..k, ending on a checkpoint, in at most
	// maxBytes; nil when there is no record at from yet.
	Segment(from uint64, maxBytes int) (*protocol.Segment, error)
	// Trim forgets records up to a verified receipt's hwm. It refuses a
	// receipt whose head is not the stored hash at hwm.
	Trim(r protocol.Receipt) error
	// Changed returns a channel that is closed when LastSeq next moves; a
	// new one after each close. The uplink takes it before it reads, so it
	// never misses a commit and never polls.
	Changed() <-chan struct{}
}

// Options configure an Uplink. Zero values take the defaults noted.
type Options struct {
	Transport Transport
	Source    Source
	CloudKeys protocol.Keys // the pinned cloud key(s)

	Window          int           // segments in flight; default 8
	MaxSegmentBytes int           // default 256 KiB, at most protocol.MaxSegmentBytes
	Compress        bool          // zstd
	RateBytes       int           // bytes per second cap; 0 = no cap
	HelloTimeout    time.Duration // wait for the hello's receipt; default 10s
	AckTimeout      time.Duration // no receipt for segments the broker took; default 30s
	// AckTimeoutMax caps the ack timeout, which doubles at each ack
	// timeout until a receipt moves the watermark; default 8 × AckTimeout.
	AckTimeoutMax time.Duration
	BackoffBase   time.Duration // default 500ms
	BackoffMax    time.Duration // default 15s (edge run --reconnect-max)
	Agent         string        // software version for the hello
	// Cmd, when set, is the seq of the last cloud command the edge
	// accepted (ota.CommandGate.Last), sent in every hello (version 3) so
	// the cloud sends the commands above it. The commands themselves
	// arrive through the transport's OnCommand.
	Cmd    func() uint64
	Now    func() time.Time
	Logger *slog.Logger
}

// Stats is a snapshot of the uplink for status pages and metrics.
type Stats struct {
	Connected       bool      `json:"connected"`
	State           string    `json:"state"`
	AckedHWM        uint64    `json:"acked_hwm"`
	NextSeq         uint64    `json:"next_seq"`
	InFlight        int       `json:"in_flight_segments"`
	LastReceipt     time.Time `json:"last_receipt,omitzero"`
	LastError       string    `json:"last_error,omitempty"`
	Sessions        uint64    `json:"sessions"`
	SegmentsSent    uint64    `json:"segments_sent"`
	BytesSent       uint64    `json:"bytes_sent"`
	Receipts        uint64    `json:"receipts"`
	Nacks           uint64    `json:"nacks"`         // nacks acted on
	IgnoredNacks    uint64    `json:"ignored_nacks"` // stale, replayed, unbound or about segments not sent in this session
	Rewinds         uint64    `json:"rewinds"`
	AckTimeouts     uint64    `json:"ack_timeouts"`    // hellos after an ack timeout
	AckWaits        uint64    `json:"ack_waits"`       // of which found the cloud moving: nothing resent, waited again
	DuplicateWaits  uint64    `json:"duplicate_waits"` // of which found it stuck, but the broker would drop a resend as a duplicate yet
	ResentSegments  uint64    `json:"resent_segments"` // segments published again (every cause)
	ForgedReplies   uint64    `json:"forged_replies"`
	ReplayedReplies uint64    `json:"replayed_replies"`
	WrongStream     uint64    `json:"wrong_stream_replies"`
	DroppedReplies  uint64    `json:"dropped_replies"`
	NewStreams      uint64    `json:"new_streams,omitempty"`  // streams left because the cloud was past them (diverged.go)
	CloudBehind     uint64    `json:"cloud_behind,omitempty"` // nacks showing the cloud behind what it acknowledged before (behind.go)
}

// Uplink sends an outbox's records to the cloud. Run it with Run; read its
// state with Stats from any goroutine.
type Uplink struct {
	o       Options
	log     *slog.Logger
	limiter *rate.Limiter

	mu    sync.Mutex // guards stats
	stats Stats

	dropped atomic.Uint64

	// nackAt is the cloud time (at) of the last nack acted on, by the hash
	// of the segment it refused: a replayed nack carries the same at and is
	// ignored. Only Run's goroutine (the current session) touches it.
	nackAt map[protocol.Hash]int64

	// resendGen counts the rewinds a nack caused: it is the last part of
	// every segment's message id (protocol.Segment.MsgID), so a resend
	// the cloud asked for gets a new id, and any other resend (after an
	// ack timeout, or a reconnect) keeps the id of the copy the broker may
	// still hold. Only Run's goroutine touches it.
	resendGen uint64
	// maxSent is the last seq this uplink published, to count resends.
	maxSent uint64
}

// maxNackMemory bounds Uplink.nackAt. Forgetting is safe: a replay must
// still name a segment sent in the current session to be acted on.
const maxNackMemory = 4096

// RefusedHold is how long the uplink holds its backlog after a nack saying
// the cloud does not know or has revoked the edge's key. Only a nack bound
// to a segment this session sent (and so signed by the edge's own key)
// holds it; see session.bound.
const RefusedHold = 10 * time.Minute

// errLost ends a session whose transport went away.
var errLost = errors.New("uplink session lost")

// New checks opts and fills in defaults.
func New(opts Options) (*Uplink, error) {
	if opts.Transport == nil || opts.Source == nil || opts.CloudKeys == nil {
		return nil, errors.New("uplink: Transport, Source and CloudKeys are required")
	}
	if opts.Window <= 0 {
		opts.Window = 8
	}
	if opts.MaxSegmentBytes <= 0 {
		opts.MaxSegmentBytes = 256 << 10
	}
	opts.MaxSegmentBytes = min(opts.MaxSegmentBytes, protocol.MaxSegmentBytes)
	if opts.HelloTimeout <= 0 {
		opts.HelloTimeout = 10 * time.Second
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 30 * time.Second
	}
	if opts.AckTimeoutMax <= 0 {
		opts.AckTimeoutMax = 8 * opts.AckTimeout
	}
	opts.AckTimeoutMax = max(opts.AckTimeoutMax, opts.AckTimeout)
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = 500 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 15 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	u := &Uplink{o: opts, log: opts.Logger.With("component", "uplink"), nackAt: map[protocol.Hash]int64{}}
	if opts.RateBytes > 0 {
		// The burst must hold the largest segment, or WaitN could never pass.
		u.limiter = rate.NewLimiter(rate.Limit(opts.RateBytes), protocol.MaxSegmentBytes)
	}
	u.stats.State = "starting"
	return u, nil
}

// Stats returns a snapshot.
func (u *Uplink) Stats() Stats {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.stats
	s.DroppedReplies = u.dropped.Load()
	return s
}

func (u *Uplink) update(f func(s *Stats)) {
	u.mu.Lock()
	f(&u.stats)
	u.mu.Unlock()
}

// Run keeps sessions going until ctx ends. It returns nil on cancellation.
func (u *Uplink) Run(ctx context.Context) error {
	attempt := 0
	for {
		progressed, err := u.session(ctx)
		if ctx.Err() != nil {
			u.update(func(s *Stats) { s.Connected = false; s.State = "stopped" })
			return nil
		}
		if progressed {
			attempt = 0
		}
		attempt++
		d := u.backoff(attempt)
		u.log.Warn("uplink session ended; reconnecting", "err", err, "retry_in", d.Round(time.Millisecond))
		u.update(func(s *Stats) {
			s.Connected = false
			s.State = "backoff"
			if err != nil {
				s.LastError = err.Error()
			}
		})
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			u.update(func(s *Stats) { s.State = "stopped" })
			return nil
		case <-t.C:
		}
	}
}

// backoff is exponential with full jitter: uniform in [0, min(max, base·2^n)).
func (u *Uplink) backoff(attempt int) time.Duration {
	ceil := u.o.BackoffMax
	if attempt < 30 {
		ceil = min(u.o.BackoffMax, u.o.BackoffBase<<attempt)
	}
	return time.Duration(rand.Int64N(int64(ceil)) + 1)
}

// inflight is a segment sent and not yet covered by a receipt. pub is its
// place among the session's publishes (from 1), to match the transport's
// Accepter count; accepted is when the session saw the broker take it
// (zero: not yet).
type inflight struct {
	first, last uint64
	pub         uint64
	accepted    time.Time
}

// sentSegment is what a session remembers of a segment it published, to
// bind nacks to it: its ref, and the source's acknowledged watermark when
// it was published (the lowest, when the same bytes went out more than
// once), which says what a gap nack for it can show (cloudBehind).
type sentSegment struct {
	ref   protocol.SegmentRef
	acked uint64
}

// session is one connection's state machine. Run makes one per Connect;
// its loop (run) waits for an event and hands it to one step: fill sends
// segments while the window has room, onReceipt and onNack act on verified
// replies, onAckTimeout asks the cloud where to resume when nothing moved.
// Only the session's own goroutine touches its fields.
type session struct {
	u       *Uplink
	replies chan []byte
	stream  protocol.Stream

	acked        uint64     // the cloud's watermark as this session knows it
	next         uint64     // the next seq to send
	flight       []inflight // sent and not yet covered by a receipt, oldest first
	lastProgress time.Time  // the last receipt that moved acked, or the last ack timeout
	progressed   bool       // acked moved during the session: resets the reconnect backoff
	// The ack timeout (ackwait.go): acc is the transport's Accepter (nil
	// when it has none), published how many segments this session has
	// published; ackTimeout the current timeout (it grows while the cloud
	// is slower than it), and looked the watermark at the last ack
	// timeout's hello (or the session's start).
	acc        Accepter
	published  uint64
	ackTimeout time.Duration
	looked     uint64
	// dupWindow is the transport's Deduplicator window (0: none), and
	// notBefore the end of it for the oldest segment in flight, when an
	// ack timeout found the watermark stuck before it: the next look is
	// then no earlier.
	dupWindow   time.Duration
	notBefore   time.Time
	nackBackoff time.Duration
	holdUntil   time.Time // no sending before this (after a refusing nack)
	// The cloud nacks a gap only after waiting for it to fill, so a gap
	// nack means the fill was lost: resend from its hwm. Every segment that
	// was waiting behind the gap brings its own nack with the same hwm;
	// rewind once for them, not once each.
	gapRewind struct {
		hwm uint64
		at  time.Time
	}
	// sent holds the refs of the segments published in this session that no
	// receipt has covered yet, by hash: a nack is acted on only when it
	// names one of them (bound).
	sent map[protocol.Hash]sentSegment
}

// session runs one connection. progressed says whether the cloud's
// watermark moved during it, which resets the reconnect backoff.
func (u *Uplink) session(ctx context.Context) (progressed bool, err error) {
	s := &session{u: u, replies: make(chan []byte, 256), stream: u.o.Source.Stream(), sent: map[protocol.Hash]sentSegment{}}
	onReply := func(m []byte) {
		select {
		case s.replies <- m:
		default:
			// A later receipt supersedes a dropped one, and the ack
			// timeout recovers from a dropped nack.
			u.dropped.Add(1)
		}
	}
	u.update(func(s *Stats) { s.State = "connecting"; s.Sessions++ })
	if err := u.o.Transport.Connect(ctx, onReply); err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer u.o.Transport.Close()
	u.update(func(s *Stats) { s.Connected = true; s.State = "hello" })

	acked, err := u.hello(ctx, s.replies)
	if err != nil {
		return false, err
	}
	u.log.Info("uplink session started", "stream", s.stream.String(), "cloud_hwm", acked, "local_last", u.o.Source.LastSeq())
	u.update(func(s *Stats) { s.State = "streaming"; s.AckedHWM = acked; s.LastError = "" })
	s.acked, s.next, s.lastProgress = acked, acked+1, u.o.Now()
	s.looked, s.ackTimeout = acked, u.o.AckTimeout
	s.acc, _ = u.o.Transport.(Accepter)
	if d, ok := u.o.Transport.(Deduplicator); ok {
		s.dupWindow = d.DuplicateWindow()
	}
	err = s.run(ctx)
	return s.progressed, err
}

// run is the session's loop: fill the window, then wait for one event: a
// reply, new records in the outbox (Source.Changed), or the next deadline
// (the ack timeout of the segments in flight, or the end of a hold).
func (s *session) run(ctx context.Context) error {
	u := s.u
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		changed := u.o.Source.Changed() // before fill reads, so no commit goes unseen
		if err := s.fill(ctx); err != nil {
			return err
		}
		s.noteAccepted()
		if len(s.flight) >= u.o.Window || u.o.Now().Before(s.holdUntil) {
			// New records cannot be sent now anyway: a reply or the
			// deadline wakes the loop. (And a closed outbox's Changed,
			// closed for good, cannot spin it.)
			changed = nil
		}
		var deadline <-chan time.Time
		if d, ok := s.nextDeadline(); ok {
			timer.Reset(d)
			deadline = timer.C
		}
		var accepted <-chan struct{}
		if s.acc != nil && !s.allAccepted() {
			accepted = s.acc.AcceptedChanged()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-u.o.Transport.Lost():
			return errLost
		case <-changed:
		case <-accepted: // noted at the top of the loop
		case <-deadline:
			if s.ackDue() {
				if err := s.onAckTimeout(ctx); err != nil {
					return err
				}
			}
		case m := <-s.replies:
			r, ok := u.verify(m, s.stream)
			if !ok {
				continue
			}
			switch {
			case r.Receipt != nil:
				if err := s.onReceipt(*r.Receipt); err != nil {
					return err
				}
			case r.Nack != nil:
				sent, ok := s.bound(*r.Nack)
				if !ok {
					continue
				}
				if handled, err := s.cloudBehind(*r.Nack, sent); err != nil {
					return err
				} else if !handled {
					s.onNack(*r.Nack)
				}
			}
		}
	}
}

// nextDeadline is how long until the session must act without an event:
// the ack timeout while segments the broker took are in flight
// (ackDeadline), or the end of a hold that keeps the window from filling.
// ok is false when there is none.
func (s *session) nextDeadline() (d time.Duration, ok bool) {
	now := s.u.o.Now()
	// Past its end with a segment still held by the broker, the ack
	// timeout waits for AcceptedChanged instead (ackDue).
	if at, armed := s.ackDeadline(); armed && (at.After(now) || s.allAccepted()) {
		d, ok = max(0, at.Sub(now)), true
	}
	if s.holdUntil.After(now) && len(s.flight) < s.u.o.Window {
		if h := s.holdUntil.Sub(now); !ok || h < d {
			d, ok = h, true
		}
	}
	return d, ok
}

// fill sends segments from next while the window has room and no hold is
// in force.
func (s *session) fill(ctx context.Context) error {
	u := s.u
	for len(s.flight) < u.o.Window && !u.o.Now().Before(s.holdUntil) {
		seg, err := u.o.Source.Segment(s.next, u.o.MaxSegmentBytes)
		if err != nil {
			return fmt.Errorf("read outbox at seq %d: %w", s.next, err)
		}
		if seg == nil {
			return nil
		}
		b, err := protocol.EncodeSegment(seg, u.o.Compress)
		if err != nil {
			return fmt.Errorf("encode segment %d-%d: %w", seg.First, seg.Last, err)
		}
		if u.limiter != nil {
			if err := u.limiter.WaitN(ctx, len(b)); err != nil {
				return err
			}
		}
		if err := u.o.Transport.Publish(ctx, b, seg.MsgID(u.resendGen)); err != nil {
			return fmt.Errorf("publish segment %d-%d: %w", seg.First, seg.Last, err)
		}
		s.published++
		f := inflight{first: seg.First, last: seg.Last, pub: s.published}
		if s.acc == nil {
			f.accepted = u.o.Now()
		}
		s.flight = append(s.flight, f)
		resent := seg.First <= u.maxSent
		u.maxSent = max(u.maxSent, seg.Last)
		ref := protocol.RefOf(b, seg)
		sent := sentSegment{ref: ref, acked: u.o.Source.AckedSeq()}
		if prev, ok := s.sent[ref.Hash]; ok {
			sent.acked = min(sent.acked, prev.acked)
		}
		s.sent[ref.Hash] = sent
		s.next = seg.Last + 1
		next, n := s.next, len(s.flight)
		u.update(func(s *Stats) {
			s.SegmentsSent++
			if resent {
				s.ResentSegments++
			}
			s.BytesSent += uint64(len(b))
			s.NextSeq = next
			s.InFlight = n
		})
	}
	return nil
}

// onReceipt trims to a verified receipt that moves the watermark, and
// drops the segments it covers from the window. Its error is
// ErrNewStream when the receipt showed the cloud past or apart from the
// source and the source left the stream (diverged.go).
func (s *session) onReceipt(r protocol.Receipt) error {
	u := s.u
	if ok, err := u.accept(r, s.acked); !ok {
		return err
	}
	s.nackBackoff, s.ackTimeout, s.notBefore = 0, u.o.AckTimeout, time.Time{}
	s.lastProgress = u.o.Now()
	s.advance(r.HWM)
	return nil
}

// advance moves the session's watermark to hwm (above it), dropping what
// it covers from the window and from the segments nacks may name.
func (s *session) advance(hwm uint64) {
	s.acked, s.progressed = hwm, true
	for len(s.flight) > 0 && s.flight[0].last <= s.acked {
		s.flight = s.flight[1:]
	}
	for h, sent := range s.sent {
		if sent.ref.Last <= s.acked {
			delete(s.sent, h)
		}
	}
	if s.next <= s.acked {
		s.next, s.flight = s.acked+1, nil
	}
	n, next := len(s.flight), s.next
	s.u.update(func(s *Stats) { s.InFlight = n; s.NextSeq = next })
}

// bound reports whether a verified nack (of this session's stream) is one
// to act on: version 2, about a segment this session published and no
// receipt has covered (so its seg_kid is the key the edge signed it with),
// and not a replay of a nack already acted on. Anything else is counted
// and ignored: a stale or replayed nack, or one about a forged segment on
// the edge's topic, must not rewind or hold the uplink. A nack acted on
// uses up its segment until that segment is sent again; bound returns
// what the session remembered of it.
func (s *session) bound(n protocol.Nack) (sentSegment, bool) {
	u := s.u
	ref := n.Refused()
	why := ""
	if n.V != protocol.NackVersion {
		why = fmt.Sprintf("nack version %d names no segment", n.V)
	} else if got, ok := s.sent[ref.Hash]; !ok || got.ref != ref {
		why = "it is not about a segment sent in this session"
	} else if at, seen := u.nackAt[ref.Hash]; seen && n.At <= at {
		why = "a replay of a nack already acted on"
	}
	if why != "" {
		u.update(func(s *Stats) { s.IgnoredNacks++ })
		u.log.Info("ignored a nack", "why", why, "code", n.Code.String(), "first", n.First, "last", n.Last, "seg_kid", string(n.SegKID), "at", n.At)
		return sentSegment{}, false
	}
	sent := s.sent[ref.Hash]
	delete(s.sent, ref.Hash)
	if len(u.nackAt) >= maxNackMemory {
		clear(u.nackAt)
	}
	u.nackAt[ref.Hash] = n.At
	return sent, true
}

// onNack acts on a verified, bound nack: rewind to the cloud's watermark, and
// hold the backlog for a while unless it was a gap.
func (s *session) onNack(n protocol.Nack) {
	u := s.u
	u.update(func(s *Stats) { s.Nacks++; s.LastError = fmt.Sprintf("nack %s at hwm %d: %s", n.Code, n.HWM, n.Reason) })
	if n.Code == protocol.NackGap {
		if s.gapRewind.hwm == n.HWM && !s.gapRewind.at.IsZero() && u.o.Now().Sub(s.gapRewind.at) < u.o.AckTimeout {
			return // already resending from there
		}
		s.gapRewind.hwm, s.gapRewind.at = n.HWM, u.o.Now()
	}
	if n.HWM+1 < s.next {
		u.log.Warn("cloud refused a segment; resending from its watermark", "code", n.Code.String(), "reason", n.Reason, "cloud_hwm", n.HWM)
		s.next, s.flight, s.notBefore = max(n.HWM, s.acked)+1, nil, time.Time{}
		u.resendGen++ // the cloud consumed and refused what it holds: the resend needs new ids
		next := s.next
		u.update(func(s *Stats) { s.Rewinds++; s.NextSeq = next; s.InFlight = 0 })
	}
	switch n.Code {
	case protocol.NackGap:
	case protocol.NackRevoked, protocol.NackUnknown:
		// Only an operator can change this (register or re-enroll the
		// edge). Ask again rarely: each refused segment is kept in the
		// cloud's quarantine.
		u.log.Error("the cloud does not accept this edge's key; holding the backlog", "code", n.Code.String(), "reason", n.Reason, "retry_in", RefusedHold)
		s.holdUntil = u.o.Now().Add(RefusedHold)
	default:
		s.nackBackoff = min(u.o.BackoffMax, max(u.o.BackoffBase, 2*s.nackBackoff))
		s.holdUntil = u.o.Now().Add(s.nackBackoff)
	}
}

// hello sends a hello and waits for the cloud's receipt for this stream,
// trims to it, and returns its hwm.
func (u *Uplink) hello(ctx context.Context, replies <-chan []byte) (uint64, error) {
	src := u.o.Source
	st := src.Stream()
	if err := u.o.Transport.Hello(ctx, protocol.EncodeHello(u.helloMessage())); err != nil {
		return 0, fmt.Errorf("hello: %w", err)
	}
	t := time.NewTimer(u.o.HelloTimeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-u.o.Transport.Lost():
			return 0, errLost
		case <-t.C:
			return 0, fmt.Errorf("hello: no receipt from the cloud within %s", u.o.HelloTimeout)
		case m := <-replies:
			r, ok := u.verify(m, st)
			if !ok || r.Receipt == nil {
				continue // a nack from the previous session, or noise
			}
			rc := *r.Receipt
			if rc.HWM < src.AckedSeq() {
				// A receipt from before this hello (several cloud workers
				// answer independently, and the hello's own answer
				// follows), or the answer of a cloud restored to an older
				// point. Either way resume from the outbox's watermark:
				// the real answer then arrives as a receipt, and a cloud
				// that is behind nacks the gap for a segment this session
				// sends, which cloudBehind acts on (behind.go).
				if err := u.checkDiverged(rc); err != nil {
					return 0, err
				}
				return src.AckedSeq(), nil
			}
			if err := u.checkDiverged(rc); err != nil {
				return 0, err // the outbox left a stream the cloud is past (diverged.go)
			}
			if rc.HWM > src.LastSeq() {
				u.countForged("receipt hwm %d is beyond the local head %d", rc.HWM, src.LastSeq())
				continue
			}
			if rc.HWM > 0 {
				if err := src.Trim(rc); err != nil {
					u.countForged("receipt at hwm %d does not match the outbox: %v", rc.HWM, err)
					continue
				}
			}
			u.update(func(s *Stats) { s.Receipts++; s.LastReceipt = u.o.Now() })
			return rc.HWM, nil
		}
	}
}

// helloMessage is the hello for the outbox as it is now: its head, and the
// signed checkpoint of that head while the outbox still holds the record
// (the cloud believes the head, for lag, only from the signature).
func (u *Uplink) helloMessage() protocol.Hello {
	src := u.o.Source
	st := src.Stream()
	h := protocol.Hello{Edge: st.Edge, Epoch: st.Epoch, Seq: src.LastSeq(), SentAt: u.o.Now().UnixMilli(), Agent: u.o.Agent}
	if u.o.Cmd != nil {
		h.Cmd = u.o.Cmd()
	}
	if h.Seq > src.AckedSeq() {
		if seg, err := src.Segment(h.Seq, 0); err == nil && seg != nil && seg.Last == h.Seq {
			h.Checkpoint = seg.Checkpoint
		}
	}
	return h
}

// verify checks a reply's signature and stream, counting what it ignores.
func (u *Uplink) verify(m []byte, st protocol.Stream) (protocol.Reply, bool) {
	r, err := protocol.VerifyReply(m, u.o.CloudKeys)
	if err != nil {
		u.countForged("reply does not verify against the pinned cloud key: %v", err)
		return r, false
	}
	var got protocol.Stream
	if r.Receipt != nil {
		got = r.Receipt.Stream()
	} else {
		got = r.Nack.Stream()
	}
	if got != st {
		u.update(func(s *Stats) { s.WrongStream++ })
		u.log.Warn("ignored a reply for another stream", "reply_stream", got.String(), "stream", st.String())
		return r, false
	}
	return r, true
}

// accept trims to a verified receipt that moves the watermark forward.
// A receipt that does not match the source (beyond its head, or another
// hash at its hwm) is checked as the hello checks it (checkDiverged): it
// may be the cloud's real answer to a hello that resumed on a stale
// receipt, showing a restored outbox the cloud is past; err is then
// ErrNewStream (or why the source could not leave the stream).
func (u *Uplink) accept(r protocol.Receipt, acked uint64) (ok bool, err error) {
	switch {
	case r.HWM < acked:
		// A replay, or a receipt overtaken by a later one (several cloud
		// workers reply independently): either way it trims nothing.
		u.update(func(s *Stats) { s.ReplayedReplies++ })
		u.log.Info("ignored an older receipt (replayed or overtaken)", "hwm", r.HWM, "acked", acked)
		return false, nil
	case r.HWM == acked:
		return false, nil // a redelivered receipt
	case r.HWM > u.o.Source.LastSeq():
		if err := u.checkDiverged(r); err != nil {
			return false, err
		}
		u.countForged("receipt hwm %d is beyond the local head %d", r.HWM, u.o.Source.LastSeq())
		return false, nil
	case r.HWM <= u.o.Source.AckedSeq():
		// Resending to a cloud that was behind (behind.go): the outbox
		// trimmed to a later receipt already, so this one only moves
		// the session on, once it matches what the outbox still holds.
		if d, ok := u.o.Source.(Diverger); ok {
			if div, err := d.Diverges(r); err == nil && div {
				if err := u.checkDiverged(r); err != nil {
					return false, err
				}
				u.countForged("receipt at hwm %d does not match the outbox", r.HWM)
				return false, nil
			}
		}
		u.update(func(s *Stats) { s.Receipts++; s.AckedHWM = r.HWM; s.LastReceipt = u.o.Now() })
		return true, nil
	}
	if err := u.o.Source.Trim(r); err != nil {
		if derr := u.checkDiverged(r); derr != nil {
			return false, derr
		}
		u.countForged("receipt at hwm %d does not match the outbox: %v", r.HWM, err)
		return false, nil
	}
	u.update(func(s *Stats) { s.Receipts++; s.AckedHWM = r.HWM; s.LastReceipt = u.o.Now() })
	return true, nil
}

func (u *Uplink) countForged(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	u.update(func(s *Stats) { s.ForgedReplies++ })
	u.log.Warn("ignored a reply that trims nothing", "why", msg)
}
