// Package ingest turns segments that arrive from edges into ledger commits
// and signed replies. It knows no transport: transports (cloud/ingest/mqtt,
// cloud/ingest/nats) hand it Deliveries and a Replier, and ack each broker
// message only when ingest says the decision about it is made.
//
// The pipeline for each worker:
//
//  1. Gather up to MaxBatch segments (or MaxBatchBytes) from the shared
//     queue, waiting at most MaxDelay after the first.
//  2. Decode them and call Ledger.Commit once for the whole batch: one
//     transaction, stream rows locked in a fixed order, signatures and
//     chains verified, duplicates skipped, new records copied in.
//  3. After the commit, hand the batch's replies to the worker's sender
//     and go back to step 1: the sender signs one receipt per stream (the
//     highest watermark reached), publishes them and a nack for each
//     quarantined segment, all before any is waited for (AsyncReplier),
//     then acks the broker messages. The commit worker does not wait for
//     the broker: it gathers and commits the next batch meanwhile. At most
//     replyBacklog batches wait for their sender; beyond that the worker
//     waits, so a slow broker slows commits instead of growing memory.
//  4. A segment that starts beyond the stream's watermark (a gap) is most
//     often the next segment of a pipelining edge that reached this worker
//     before the previous one was committed by another. It is parked and
//     retried for up to GapWait before a gap nack is sent, so pipelining
//     does not turn into resend storms.
//
// When Commit fails (the database is down), the batch is retried with
// backoff and nothing is acked: a crash at any point means redelivery or a
// resend from the edge, never loss, and the watermark makes resends
// harmless. Meanwhile CommitError says the commit path is failing, which
// the cloud's readiness reports.
//
// Shutdown drains: it stops taking deliveries, lets each worker finish the
// batch in hand (commit, replies, acks) while the transports that carry the
// replies still run, and returns when the workers have stopped. Only then
// should the caller stop the transports and end Run's context; ending that
// context first cancels commits and replies in the middle.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// ErrDraining is what Offer returns once Shutdown has begun: the delivery
// is not taken, and the transport must not ack it (the broker redelivers
// it, or its edge resends it).
var ErrDraining = errors.New("ingest: shutting down, not taking segments")

// Replier sends a signed reply (receipt or nack) to an edge's rcpt topic.
type Replier interface {
	Reply(ctx context.Context, edge string, msg []byte) error
}

// AsyncReplier is a Replier that can publish a reply without waiting for
// the broker to confirm it: ReplyAsync publishes, and the function it
// returns waits for the confirmation. A worker publishes all of a batch's
// replies before it waits for any, so a batch costs one broker round trip,
// not one per reply.
type AsyncReplier interface {
	Replier
	ReplyAsync(edge string, msg []byte) (wait func(context.Context) error)
}

// CommandPublisher publishes a signed command to an edge's cmd topic or
// subject and returns once the broker has it. The transports implement it;
// cloud/command's Deliverer uses it.
type CommandPublisher interface {
	PublishCommand(ctx context.Context, edge string, signed []byte) error
}

// Delivery is one segment message as a transport received it.
type Delivery struct {
	TopicEdge string // the edge id in the topic or subject: the broker-authenticated sender
	Payload   []byte
	Replier   Replier // where to answer; the transport it came from
	Ack       func()  // acks the broker message; nil when the transport has none
}

// Options configure a Service. Zero values take the defaults noted.
type Options struct {
	Ledger        Ledger
	Signer        *protocol.Signer // the cloud's key, signs receipts and nacks
	Workers       int              // commit loops; default 2
	Queue         int              // deliveries waiting; default 4096 (Handle blocks when full)
	MaxBatch      int              // segments per commit; default 64
	MaxBatchBytes int              // default 16 MiB
	MaxDelay      time.Duration    // wait for more segments after the first; default 2ms
	GapWait       time.Duration    // how long a gap may wait for its fill; default 2s
	// AfterCommit, when set, runs after each successful commit and before
	// any reply is sent: the point where a crash costs a receipt but no
	// data. Fault-injection tests use it to kill the process there.
	AfterCommit func(records int)
	// Commands, when set, runs after each hello is answered (AnswerHello),
	// with the hello's cmd (the last command seq the edge accepted) and the
	// transport it came by: cloud/command's Deliverer.Hello sends the edge
	// its pending commands. A hello that ingest refuses (malformed, from a
	// revoked edge) gets none.
	Commands func(ctx context.Context, edge string, cmd uint64, pub CommandPublisher) error
	Now      func() time.Time
	Logger   *slog.Logger
}

// Stats are counters for metrics and the status page.
type Stats struct {
	Segments   uint64 `json:"segments"`
	Batches    uint64 `json:"batches"`
	Committed  uint64 `json:"segments_committed"`
	Records    uint64 `json:"records_committed"`
	Duplicates uint64 `json:"segments_duplicate"`
	Gaps       uint64 `json:"gap_nacks"`
	Refused    uint64 `json:"segments_refused"` // the database refused their records (a malformed nack); quarantines are the ledger's count
	Malformed  uint64 `json:"segments_malformed"`
	CommitErrs uint64 `json:"commit_errors"`
	ReplyErrs  uint64 `json:"reply_errors"`
	Hellos     uint64 `json:"hellos"`
	Overflow   uint64 `json:"segments_overflow"` // refused by Offer: the queue stayed full
}

// Service is the ingest pipeline.
type Service struct {
	o     Options
	log   *slog.Logger
	queue chan *item

	segments, batches, committed, records, duplicates, gaps atomic.Uint64
	refused, malformed, commitErrs, replyErrs, hellos       atomic.Uint64
	overflow                                                atomic.Uint64

	wg       sync.WaitGroup
	healthMu sync.Mutex
	health   *CommitError  // nil while commits succeed
	stop     chan struct{} // closed by Shutdown: take no more deliveries
	stopOnce sync.Once
	exited   chan struct{} // closed when Run's workers have returned
}

type item struct {
	d     Delivery
	seg   *protocol.Segment
	first time.Time // when it was first tried; for GapWait
}

// New checks opts and fills in defaults.
func New(opts Options) (*Service, error) {
	if opts.Ledger == nil || opts.Signer == nil {
		return nil, errors.New("ingest: Ledger and Signer are required")
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Queue <= 0 {
		opts.Queue = 4096
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 64
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = 16 << 20
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 2 * time.Millisecond
	}
	if opts.GapWait <= 0 {
		opts.GapWait = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Service{o: opts, log: opts.Logger.With("component", "ingest"), queue: make(chan *item, opts.Queue),
		stop: make(chan struct{}), exited: make(chan struct{})}, nil
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{
		Segments: s.segments.Load(), Batches: s.batches.Load(), Committed: s.committed.Load(),
		Records: s.records.Load(), Duplicates: s.duplicates.Load(), Gaps: s.gaps.Load(),
		Refused: s.refused.Load(), Malformed: s.malformed.Load(), CommitErrs: s.commitErrs.Load(),
		ReplyErrs: s.replyErrs.Load(), Hellos: s.hellos.Load(), Overflow: s.overflow.Load(),
	}
}

// Run runs the workers until ctx ends, or until Shutdown has let them
// finish the batches in hand, then waits for them. Deliveries still queued
// are not acked; their brokers redeliver them. Ending ctx cancels the
// commits and replies in progress: for a clean stop, call Shutdown first.
// Run is called once.
func (s *Service) Run(ctx context.Context) error {
	defer close(s.exited)
	for i := 0; i < s.o.Workers; i++ {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.worker(ctx)
		}()
	}
	s.wg.Wait()
	return nil
}

// Shutdown drains the service: Offer refuses new deliveries (ErrDraining)
// and Handle blocks until its context ends, each worker finishes the batch
// it holds (the commit, its receipts and nacks, the acks) and stops, and
// Shutdown returns once Run has returned. Gaps parked for their fill and
// deliveries still queued are left unacked. If ctx ends first, Shutdown
// returns its error; the caller then ends Run's context, which cancels
// what is still in progress.
func (s *Service) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	select {
	case <-s.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ingest: drain: %w", ctx.Err())
	}
}

// CommitError describes a commit path that is failing: every commit attempt
// since Since has failed, the last with Err. Ingest keeps retrying.
type CommitError struct {
	Err      error
	Since    time.Time
	Attempts int
}

func (e *CommitError) Error() string {
	return fmt.Sprintf("%d commit attempts failed since %s: %v", e.Attempts, e.Since.UTC().Format(time.RFC3339), e.Err)
}

func (e *CommitError) Unwrap() error { return e.Err }

// CommitError returns nil while the latest commit attempt succeeded (or
// none was made), and otherwise how long commits have been failing: the
// database is down, full, or refusing writes. Readiness reports it, since
// a service whose every commit fails is not doing its work.
func (s *Service) CommitError() *CommitError {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	return s.health
}

// noteCommit records the outcome of a commit attempt for CommitError.
// Only the commit workers call it.
func (s *Service) noteCommit(err error) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if err == nil {
		if s.health != nil {
			s.log.Info("commits succeed again", "failed_attempts", s.health.Attempts, "since", s.health.Since)
			s.health = nil
		}
		return
	}
	ce := &CommitError{Err: err, Since: s.o.Now(), Attempts: 1}
	if s.health != nil {
		ce.Since, ce.Attempts = s.health.Since, s.health.Attempts+1
	}
	s.health = ce // a new value: what CommitError returned is not changed
}

// Draining reports whether Shutdown has begun.
func (s *Service) Draining() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// Handle queues a delivery. It blocks while the queue is full, which is how
// backpressure reaches a pull-based transport (and through it the edges).
//
// Once Shutdown has begun it takes nothing more and blocks until ctx ends,
// as a full queue would, so a pull loop neither acks nor spins.
func (s *Service) Handle(ctx context.Context, d Delivery) error {
	s.segments.Add(1)
	select {
	case <-s.stop:
	case s.queue <- &item{d: d}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	<-ctx.Done()
	return ctx.Err()
}

// Offer queues a delivery, waiting at most wait for room. It is for push
// transports whose receive loop must not block for long (an MQTT client
// that stops reading also stops answering pings). When the queue stays
// full it returns false: the caller acks the message to free the broker's
// in-flight slot, and the edge, which has no receipt for it, resends it
// after its ack timeout. Nothing is lost; the edge still holds the records.
// Once Shutdown has begun it returns ErrDraining: the caller does not ack.
func (s *Service) Offer(ctx context.Context, d Delivery, wait time.Duration) (bool, error) {
	s.segments.Add(1)
	if s.Draining() {
		return false, ErrDraining
	}
	select {
	case s.queue <- &item{d: d}:
		return true, nil
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-s.stop:
		return false, ErrDraining
	case s.queue <- &item{d: d}:
		return true, nil
	case <-t.C:
		s.overflow.Add(1)
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// Hello answers an edge's hello with the signed receipt of its stream.
func (s *Service) Hello(ctx context.Context, topicEdge string, payload []byte) ([]byte, error) {
	rc, _, err := s.AnswerHello(ctx, topicEdge, payload, nil)
	return rc, err
}

// AnswerHello is Hello for a transport that can carry commands: besides
// the receipt it returns deliver, which the transport calls once the
// receipt is sent, to send the edge its pending commands through pub
// (Options.Commands; deliver is nil when there is nothing to do). deliver
// logs what fails: the edge's next hello tries again.
func (s *Service) AnswerHello(ctx context.Context, topicEdge string, payload []byte, pub CommandPublisher) (receipt []byte, deliver func(context.Context), err error) {
	rc, h, err := s.hello(ctx, topicEdge, payload)
	if err != nil || pub == nil || s.o.Commands == nil {
		return rc, nil, err
	}
	deliver = func(ctx context.Context) {
		if err := s.o.Commands(ctx, h.Edge, h.Cmd, pub); err != nil && ctx.Err() == nil {
			s.log.Warn("could not send an edge its commands; its next hello tries again", "edge", h.Edge, "cmd", h.Cmd, "err", err)
		}
	}
	return rc, deliver, nil
}

func (s *Service) hello(ctx context.Context, topicEdge string, payload []byte) ([]byte, *protocol.Hello, error) {
	s.hellos.Add(1)
	h, err := protocol.DecodeHello(payload)
	if err != nil {
		return nil, nil, fmt.Errorf("hello from %s: %w", topicEdge, err)
	}
	if h.Edge != topicEdge {
		return nil, nil, fmt.Errorf("hello names edge %q but came from %q: %w", h.Edge, topicEdge, protocol.ErrMalformed)
	}
	w, err := s.o.Ledger.NoteHello(ctx, h)
	if err != nil {
		return nil, nil, err
	}
	return s.receipt(w), &h, nil
}

func (s *Service) receipt(w Watermark) []byte {
	var at int64
	if !w.CommittedAt.IsZero() {
		at = w.CommittedAt.UnixMilli()
	}
	return s.o.Signer.SignReceipt(protocol.Receipt{Edge: w.Stream.Edge, Epoch: w.Stream.Epoch, HWM: w.HWM, Head: w.Head, CommittedAt: at})
}

// nack signs a refusal of its segment, bound to that segment as it arrived
// (protocol.SegmentRef): the edge acts only on nacks about segments it sent.
func (s *Service) nack(it *item, w Watermark, code protocol.NackCode, reason string) []byte {
	ref := protocol.RefOf(it.d.Payload, it.seg)
	return s.o.Signer.SignNack(protocol.Nack{Edge: w.Stream.Edge, Epoch: w.Stream.Epoch, HWM: w.HWM, Head: w.Head,
		Code: code, Reason: reason, At: s.o.Now().UnixMilli(),
		First: ref.First, Last: ref.Last, SegKID: ref.KID, SegHash: ref.Hash})
}

// replyBacklog is how many committed batches' replies may wait for a
// worker's sender while the worker commits the next one.
const replyBacklog = 2

// replyJob is what a committed batch still owes: its receipts (signed by
// the sender), its nacks (signed) and, after those are sent, its acks.
type replyJob struct {
	receipts []streamReceipt
	out      []reply
	acks     []*item
}

type streamReceipt struct {
	r Replier
	w Watermark
}

// worker gathers and commits batches; its sender (a goroutine the worker
// owns and waits for) sends their replies and acks, in batch order.
func (s *Service) worker(ctx context.Context) {
	jobs := make(chan replyJob, replyBacklog)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for j := range jobs {
			s.finish(ctx, j)
		}
	}()
	defer func() {
		close(jobs)
		<-sent // the batches in hand are replied to and acked before the worker stops
	}()
	var parked []*item // gaps waiting for their fill
	for {
		batch, ok := s.gather(ctx, parked)
		if !ok {
			return
		}
		parked = s.process(ctx, batch, jobs)
		if s.Draining() {
			return // parked gaps stay unacked: redelivered or resent
		}
	}
}

// finish sends a committed batch's replies, then acks its messages.
func (s *Service) finish(ctx context.Context, j replyJob) {
	for _, rc := range j.receipts {
		j.out = append(j.out, reply{r: rc.r, edge: rc.w.Stream.Edge, msg: s.receipt(rc.w), receipt: true})
	}
	s.send(ctx, j.out)
	for _, it := range j.acks {
		ack(it)
	}
}

// gather returns the next batch: parked gaps first, then queued items. It
// returns false when ctx ends, or when Shutdown has begun and there is
// nothing new in hand; what it has gathered when Shutdown begins is
// returned to be processed.
func (s *Service) gather(ctx context.Context, parked []*item) ([]*item, bool) {
	if s.Draining() {
		return nil, false
	}
	batch := parked
	size := 0
	for _, it := range batch {
		size += len(it.d.Payload)
	}
	if len(batch) == 0 {
		select {
		case it := <-s.queue:
			batch = append(batch, it)
			size += len(it.d.Payload)
		case <-s.stop:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
	// A parked gap waits a little before it is tried again, unless new
	// segments arrive to try it with.
	delay := s.o.MaxDelay
	if len(parked) > 0 {
		// Each retry verifies and runs a commit transaction: a few per
		// second are enough for a gap that another worker is filling.
		delay = max(delay, 100*time.Millisecond)
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	for len(batch) < s.o.MaxBatch && size < s.o.MaxBatchBytes {
		select {
		case it := <-s.queue:
			batch = append(batch, it)
			size += len(it.d.Payload)
		case <-t.C:
			return batch, true
		case <-s.stop:
			return batch, true
		case <-ctx.Done():
			return nil, false
		}
	}
	return batch, true
}

// process commits a batch and hands its replies to jobs. It returns the
// gaps to retry.
func (s *Service) process(ctx context.Context, batch []*item, jobs chan<- replyJob) (parked []*item) {
	now := s.o.Now()
	var inputs []Input
	var its []*item
	for _, it := range batch {
		if it.first.IsZero() {
			it.first = now
		}
		problem := ""
		if it.seg == nil {
			seg, err := protocol.DecodeSegment(it.d.Payload)
			if err != nil {
				// Quarantined (bounded) under the sender the broker
				// authenticated, and nacked to it: the nack names the
				// bytes by their hash only.
				s.malformed.Add(1)
				s.log.Warn("a segment does not decode; quarantining it", "edge", it.d.TopicEdge, "bytes", len(it.d.Payload), "err", err)
				problem = err.Error()
			}
			it.seg = seg
		}
		inputs = append(inputs, Input{TopicEdge: it.d.TopicEdge, Segment: it.seg, Raw: it.d.Payload, Problem: problem})
		its = append(its, it)
	}
	if len(inputs) == 0 {
		return nil
	}
	outs, ok := s.commit(ctx, inputs)
	if !ok {
		return nil // shutting down: not acked, the broker redelivers
	}
	s.batches.Add(1)
	if s.o.AfterCommit != nil {
		n := 0
		for _, o := range outs {
			n += o.Records
		}
		s.o.AfterCommit(n)
	}

	// One receipt per stream and replier: the highest watermark reached.
	type key struct {
		stream protocol.Stream
		r      Replier
	}
	receipts := map[key]Watermark{}
	var acks []*item
	var out []reply
	for i, o := range outs {
		it := its[i]
		switch o.Kind {
		case KindCommitted, KindDuplicate:
			if o.Kind == KindCommitted {
				s.committed.Add(1)
				s.records.Add(uint64(o.Records))
			} else {
				s.duplicates.Add(1)
			}
			k := key{o.Stream, it.d.Replier}
			if w, ok := receipts[k]; !ok || o.HWM > w.HWM {
				receipts[k] = o.Watermark
			}
			acks = append(acks, it)
		case KindGap:
			if now.Sub(it.first) < s.o.GapWait {
				parked = append(parked, it)
				continue
			}
			s.gaps.Add(1)
			out = append(out, nackTo(it, s.nack(it, o.Watermark, protocol.NackGap, o.Reason))...)
			acks = append(acks, it)
		case KindQuarantined:
			// The ledger logged and counted it, where it wrote the
			// quarantine row (or commit logged the refusal).
			out = append(out, nackTo(it, s.nack(it, o.Watermark, o.Code, o.Reason))...)
			acks = append(acks, it)
		}
	}
	j := replyJob{out: out, acks: acks}
	for k, w := range receipts {
		if k.r != nil {
			j.receipts = append(j.receipts, streamReceipt{k.r, w})
		}
	}
	jobs <- j // waits only while replyBacklog batches are unsent
	return parked
}

// commit commits inputs, retrying with backoff while the database is
// unavailable. When the database refuses the data itself (a permanent
// error), running the batch again would fail forever and hold up every
// edge in it: the inputs are then committed one by one, and the one that
// fails is refused with a malformed nack. ok is false only when ctx ends.
func (s *Service) commit(ctx context.Context, inputs []Input) (outs []Outcome, ok bool) {
	for attempt := 0; ; attempt++ {
		var err error
		outs, err = s.o.Ledger.Commit(ctx, inputs)
		if err == nil {
			s.noteCommit(nil)
			return outs, true
		}
		s.commitErrs.Add(1)
		if ctx.Err() != nil {
			return nil, false
		}
		if !refused(err) {
			// A permanent error is one batch's data, not the commit path:
			// the inputs are tried one by one below.
			s.noteCommit(err)
		}
		if refused(err) {
			if len(inputs) == 1 {
				in := inputs[0]
				s.refused.Add(1)
				ref := protocol.RefOf(in.Raw, in.Segment)
				st := protocol.Stream{Edge: in.TopicEdge}
				if in.Segment != nil {
					st = in.Segment.Stream()
				}
				s.log.Error("the database refused a segment's records; refusing the segment", "edge", in.TopicEdge,
					"first", ref.First, "last", ref.Last, "err", err)
				return []Outcome{{Kind: KindQuarantined, Watermark: Watermark{Stream: st},
					Code: protocol.NackMalformed, Reason: "the ledger refused the records: " + err.Error()}}, true
			}
			s.log.Error("the database refused a batch; committing its segments one by one", "segments", len(inputs), "err", err)
			outs = make([]Outcome, 0, len(inputs))
			for i := range inputs {
				o, ok := s.commit(ctx, inputs[i:i+1])
				if !ok {
					return nil, false
				}
				outs = append(outs, o...)
			}
			return outs, true
		}
		d := min(5*time.Second, 50*time.Millisecond<<min(attempt, 7))
		s.log.Error("commit failed; retrying the batch", "segments", len(inputs), "err", err, "retry_in", d)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, false
		}
	}
}

// reply is a receipt or nack to send once a batch is committed.
type reply struct {
	r       Replier
	edge    string
	msg     []byte
	receipt bool // else a nack
}

// nackTo addresses a nack for it. Nacks go to the sender the broker
// authenticated, which is not always the edge a forged segment names.
func nackTo(it *item, msg []byte) []reply {
	if it.d.Replier == nil {
		return nil
	}
	return []reply{{r: it.d.Replier, edge: it.d.TopicEdge, msg: msg}}
}

// send publishes a batch's replies: every AsyncReplier's first, then it
// waits for them all, so the commit worker waits for one round trip to
// the broker per batch, not one per reply. A reply that fails costs the
// edge a resend or a repeated hello, never a record: it is sent only after
// the commit, and the edge keeps everything until a receipt.
func (s *Service) send(ctx context.Context, out []reply) {
	waits := make([]func(context.Context) error, len(out))
	for i, r := range out {
		if a, ok := r.r.(AsyncReplier); ok {
			waits[i] = a.ReplyAsync(r.edge, r.msg)
		}
	}
	for i, r := range out {
		var err error
		if waits[i] != nil {
			err = waits[i](ctx)
		} else {
			err = r.r.Reply(ctx, r.edge, r.msg)
		}
		if err == nil {
			continue
		}
		s.replyErrs.Add(1)
		if r.receipt {
			s.log.Warn("could not send a receipt; the edge will ask again", "edge", r.edge, "err", err)
		} else {
			s.log.Warn("could not send a nack", "edge", r.edge, "err", err)
		}
	}
}

func ack(it *item) {
	if it.d.Ack != nil {
		it.d.Ack()
	}
}
