package outbox

import (
	"context"
	"fmt"

	"github.com/outpost-edge/outpost/protocol"
)

// Entry is one event to append, with the device it came from (taken from
// the device's authenticated connection, never from the payload).
type Entry struct {
	Device string
	Event  protocol.Event
}

// Result is the outcome of one entry.
type Result struct {
	// Seq is the record's seq; for a duplicate, the seq the first copy got.
	Seq uint64
	// Duplicate: the (device, id) pair was seen inside the dedup window;
	// nothing was written.
	Duplicate bool
	// Err is this entry's refusal: ErrInvalid, ErrLedgerQuota,
	// ErrTelemetryQuota, or (with the call's error) ErrDiskFull, ErrClosed.
	Err error
}

// Pending is an append in progress.
type Pending struct {
	done    chan struct{}
	results []Result
	err     error
	onDone  func([]Result, error) // AppendFunc's callback
}

// Done is closed when the entries are durable or refused.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Results returns one Result per entry, in order. It is valid after Done.
// A non-nil error means the call as a whole failed (ErrClosed, ErrDiskFull,
// an I/O error) and nothing of it was stored; every Result.Err is then that
// error too.
func (p *Pending) Results() ([]Result, error) {
	<-p.done
	return p.results, p.err
}

func (p *Pending) fail(err error) {
	p.setErr(err)
	p.finish()
}

func (p *Pending) setErr(err error) {
	for i := range p.results {
		p.results[i] = Result{Err: err}
	}
	p.err = err
}

// finishNow completes p before the call that made it returns: a callback
// then runs on a goroutine of its own, so that it never runs inside its
// caller's AppendFunc (the caller may hold a lock its callback takes).
func (p *Pending) finishNow() {
	if p.onDone != nil {
		go p.finish()
		return
	}
	p.finish()
}

// finish completes p: Done is closed, then AppendFunc's callback runs.
func (p *Pending) finish() {
	close(p.done)
	if p.onDone != nil {
		p.onDone(p.results, p.err)
	}
}

// request is one AppendAsync call on its way through the commit loop.
type request struct {
	entries []Entry
	prep    []prepared
	p       *Pending
}

// call is what an AppendAsync call allocates, in one piece when it has one
// entry, as most do.
type call struct {
	p    Pending
	rq   request
	res  [1]Result
	prep [1]prepared
}

// prepared is what the caller's goroutine works out for an entry before the
// loop sees it.
type prepared struct {
	key   uint64 // dedup hash of (device, id)
	class byte
	err   error
}

// AppendAsync hands entries to the group-commit loop and returns at once.
// The Pending completes after the fsync that made them durable, or on error.
// Accepted entries of one call get consecutive seqs in order (duplicates and
// refused entries get none) in the same commit, and one call's results come
// back together. The entries are not used after AppendAsync returns.
//
// AppendAsync does not bound how much may wait for the loop: the caller
// bounds its entries in flight (the intake does, with MQTT's receive
// maximum and HTTP's concurrency).
func (o *Outbox) AppendAsync(entries []Entry) *Pending {
	return o.appendAsync(entries, nil)
}

// AppendFunc is AppendAsync with a callback instead of a Pending to wait
// on: onDone gets the Results (as Pending.Results returns them) once the
// entries are durable or refused, so that a caller with many appends in
// flight needs no goroutine per append to wait for each. onDone runs on
// the outbox's commit goroutine (or, for an empty call or one refused at
// once, on a goroutine of its own): it must not block, and must not wait
// for the outbox.
// The Results slice is the callee's; copy what is kept.
func (o *Outbox) AppendFunc(entries []Entry, onDone func(results []Result, err error)) {
	o.appendAsync(entries, onDone)
}

func (o *Outbox) appendAsync(entries []Entry, onDone func([]Result, error)) *Pending {
	c := &call{}
	p, rq := &c.p, &c.rq
	p.done, p.onDone = make(chan struct{}), onDone
	if len(entries) == 0 {
		p.finishNow()
		return p
	}
	if len(entries) == 1 {
		p.results, rq.prep = c.res[:], c.prep[:]
	} else {
		p.results, rq.prep = make([]Result, len(entries)), make([]prepared, len(entries))
	}
	rq.entries, rq.p = entries, p
	for i := range entries {
		o.prepare(&rq.prep[i], &entries[i])
	}
	o.qmu.Lock()
	if o.closing {
		o.qmu.Unlock()
		p.setErr(ErrClosed)
		p.finishNow()
		return p
	}
	o.queue = append(o.queue, rq)
	o.queued += len(entries)
	o.qmu.Unlock()
	o.poke()
	return p
}

// Append is AppendAsync waiting for the outcome. When ctx ends first it
// returns ctx's error; the entries may still be committed.
func (o *Outbox) Append(ctx context.Context, entries []Entry) ([]Result, error) {
	p := o.AppendAsync(entries)
	select {
	case <-p.done:
		return p.results, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// prepare checks an entry and hashes its dedup key. It runs in the caller's
// goroutine, so that the work spreads over the callers' cores.
func (o *Outbox) prepare(pe *prepared, e *Entry) {
	if err := checkEntry(e); err != nil {
		pe.err = fmt.Errorf("device %q event %q: %w: %w", e.Device, e.Event.ID, ErrInvalid, err)
		return
	}
	pe.class = classByte(protocol.ClassOf(e.Event.Type))
	pe.key = dedupKeyString(o.seed, e.Device, e.Event.ID)
}

// checkEntry applies the rules protocol.DecodeRecord enforces, so that no
// stored record fails to decode. It does not apply Event.Validate's schema
// checks: that is the intake's job, and the edge's own intake.rejected
// records must pass here.
func checkEntry(e *Entry) error {
	if err := protocol.ValidateName("device", e.Device); err != nil {
		return err
	}
	if err := protocol.ValidateEventID(e.Event.ID); err != nil {
		return err
	}
	if err := protocol.ValidateType(e.Event.Type); err != nil {
		return err
	}
	if err := protocol.CheckTS(e.Event.TS.UnixMilli()); err != nil {
		return err
	}
	if b := e.Event.Body; len(b) > 0 {
		if len(b) > protocol.MaxBodyBytes {
			return fmt.Errorf("body is %d bytes; the limit is %d", len(b), protocol.MaxBodyBytes)
		}
		if err := checkBody(b); err != nil {
			return err
		}
	}
	return nil
}
