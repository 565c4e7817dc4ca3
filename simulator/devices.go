package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/simulator/fleet"
	"github.com/outpost-edge/outpost/simulator/traffic"
)

// device is one simulated device: its traffic, its connection to its
// edge, and its own random choices (retransmits, duplicates, batches).
type device struct {
	id     string
	edge   *fleet.Edge
	gen    *traffic.Device
	sender fleet.Sender
	cbor   bool // payloads in CBOR rather than JSON
	batch  int  // events per payload, at most
	rng    *rand.Rand
	// hold makes the device a till that holds its events (Config.LateTills)
	// until the traffic ends; held are those events.
	hold bool
	held []protocol.Event
}

// layout returns the kinds of a store's n devices: a till, a scale, a
// sensor, another till, then tills and sensors in turn.
func layout(n int) []traffic.Kind {
	kinds := []traffic.Kind{traffic.Till, traffic.Scale, traffic.Sensor, traffic.Till}
	out := make([]traffic.Kind, n)
	for i := range out {
		if i < len(kinds) {
			out[i] = kinds[i]
		} else if i%2 == 0 {
			out[i] = traffic.Till
		} else {
			out[i] = traffic.Sensor
		}
	}
	return out
}

// Traffic counters, shared by every device.
type counters struct {
	generated   atomic.Int64 // events made
	payloads    atomic.Int64 // payloads acknowledged
	sends       atomic.Int64 // publishes and requests, every copy
	retransmits atomic.Int64 // payloads sent again (after no answer, or on purpose after an ack)
	duplicates  atomic.Int64 // payloads published twice at once
	dropped     atomic.Int64 // readings a sensor gave up on (refused under the quota)
	invalid     atomic.Int64 // payloads refused as bad input (a bug)
	zReports    atomic.Int64 // till.closed acknowledged
	late        atomic.Int64 // events a holding till sent after the traffic
}

// take reserves n events under the run's event limit.
func (r *run) take(n int) bool {
	if r.cfg.Events == 0 {
		r.c.generated.Add(int64(n))
		return true
	}
	for {
		g := r.c.generated.Load()
		if g+int64(n) > int64(r.cfg.Events) {
			return false
		}
		if r.c.generated.CompareAndSwap(g, g+int64(n)) {
			return true
		}
	}
}

// runDevice sends the device's traffic until stop is closed, then its
// end-of-day report. It returns when everything it sent was acknowledged
// (or ctx ends).
func (r *run) runDevice(ctx context.Context, d *device, stop <-chan struct{}) {
	next := time.Now().Add(time.Duration(d.rng.Float64() * float64(time.Second) / r.cfg.Rate))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			r.release(ctx, d)
			r.closeDay(ctx, d)
			return
		case <-timer.C:
		}
		n := 1
		if d.batch > 1 {
			n = 1 + d.rng.IntN(d.batch)
		}
		if !r.take(n) {
			r.release(ctx, d)
			r.closeDay(ctx, d)
			r.noteLimit()
			return
		}
		now := time.Now()
		evs := make([]protocol.Event, n)
		for i := range evs {
			evs[i] = d.gen.Next(now)
		}
		if d.hold {
			d.held = append(d.held, evs...)
		} else {
			r.deliver(ctx, d, evs, true)
		}
		// Poisson arrivals at the device's rate; no burst to catch up after
		// a stall (a till waits for its customer, not the other way round).
		next = next.Add(time.Duration(d.rng.ExpFloat64() * float64(time.Second) / r.cfg.Rate))
		if now := time.Now(); next.Before(now) {
			next = now
		}
		timer.Reset(time.Until(next))
	}
}

// release sends what a holding till held, in order, a few events a
// payload, as a till back online after days would.
func (r *run) release(ctx context.Context, d *device) {
	if len(d.held) > 0 {
		r.printf("device %s: sending %d events it held for business day %s", d.id, len(d.held), d.gen.Totals().BusinessDay)
	}
	for len(d.held) > 0 {
		n := min(len(d.held), max(1, d.batch))
		r.c.late.Add(int64(n))
		r.deliver(ctx, d, d.held[:n], true)
		d.held = d.held[n:]
	}
}

// closeDay sends a till's Z report.
func (r *run) closeDay(ctx context.Context, d *device) {
	if z, ok := d.gen.Close(time.Now()); ok {
		if r.deliver(ctx, d, []protocol.Event{z}, false) {
			r.c.zReports.Add(1)
		}
	}
}

func encode(evs []protocol.Event, asCBOR bool) ([]byte, error) {
	var v any = evs
	if len(evs) == 1 {
		v = evs[0]
	}
	if asCBOR {
		return cbor.Marshal(v)
	}
	return json.Marshal(v)
}

// deliver sends evs as one payload until the edge acknowledges it, and
// notes every send and the acknowledgement in the oracle. Readings are
// given up after a few refusals (a sensor has the next one to send);
// everything else is sent until acknowledged or ctx ends. With chaos, the
// device may publish twice at once, or send again after the ack.
func (r *run) deliver(ctx context.Context, d *device, evs []protocol.Event, chaos bool) bool {
	payload, err := encode(evs, d.cbor)
	if err != nil {
		panic(fmt.Sprintf("simulator: encode %d events: %v", len(evs), err)) // our own events always encode
	}
	reading := true
	for _, ev := range evs {
		reading = reading && protocol.ClassOf(ev.Type) == protocol.ClassTelemetry
	}
	copies := 1
	if chaos && d.rng.Float64() < r.cfg.Duplicate {
		copies = 2
		r.c.duplicates.Add(1)
	}
	backoff := 100 * time.Millisecond
	acked := false
	for attempt := 1; ; attempt++ {
		now := time.Now()
		for _, ev := range evs {
			r.oracle.Sent(d.edge.ID(), d.id, ev, now)
		}
		r.c.sends.Add(int64(copies))
		if attempt > 1 {
			r.c.retransmits.Add(1)
		}
		out := d.sender.Send(ctx, payload, copies, r.cfg.AckTimeout)
		if out == fleet.Acked {
			at := time.Now()
			for _, ev := range evs {
				r.oracle.Acked(d.id, ev.ID, at)
			}
			r.c.payloads.Add(1)
			acked = true
			break
		}
		if out == fleet.Invalid {
			r.c.invalid.Add(1)
			r.printf("device %s: the edge refused %s as invalid (a bug: the simulator sends only valid events)", d.id, evs[0].ID)
			return false
		}
		if reading && attempt >= 4 {
			r.c.dropped.Add(int64(len(evs)))
			return false
		}
		copies = 1
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	if chaos && d.rng.Float64() < r.cfg.Retransmit {
		// The device missed the acknowledgement, it thinks, and sends the
		// same events again: the edge must not store them twice.
		for _, ev := range evs {
			r.oracle.Sent(d.edge.ID(), d.id, ev, time.Now())
		}
		r.c.sends.Add(1)
		r.c.retransmits.Add(1)
		d.sender.Send(ctx, payload, 1, r.cfg.AckTimeout)
	}
	return acked
}
