package mqtt

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/protocol"
)

// DefaultMaxIngestHeld is how many segments the embedded broker lets the
// cloud's own clients hold unacknowledged (delivered or on their way to
// ingest, not yet committed) before it stops reading segments from edges:
// Options.MaxIngestHeld's default. At the edge's default segment size
// (256 KiB) that is 128 MiB of segments, which the cloud holds about twice
// (the broker's copy until ingest acks it, and ingest's own), whatever the
// size of the fleet. It is four times what two commit workers take in
// batches of 64, so the workers never wait for it.
const DefaultMaxIngestHeld = 512

// holdPoll is how often a held edge looks again for room (and whether its
// connection was closed meanwhile); acks from ingest wake it sooner.
const holdPoll = 100 * time.Millisecond

// holdHook is the broker's back-pressure. An edge's PUBACK means only that
// the broker has the segment; the edge keeps it until its receipt, so
// nothing the broker holds is the only copy, but everything it holds is
// memory. Without a bound, a fleet reconnecting with backlogs makes the
// cloud hold every edge's whole window (1,000 edges × 8 × 256 KiB is
// 2 GiB), in three copies: the edge's packet, the copy queued for ingest,
// and ingest's own. With it, a segment from an edge waits, before its
// PUBACK and on that edge's own connection, until the cloud's clients hold
// fewer than MaxIngestHeld unacknowledged segments; edges take turns in
// the order they came (a FIFO), so none is starved. Nothing is dropped: a
// held edge's connection only stops being read (TCP pushes back on the
// edge), and if it closes meanwhile, the segment was never acknowledged
// and the edge sends it again.
//
// What is held is read from mochi's own state (the in-flight QoS 1
// messages of the cloud's clients), not counted by this hook, so no lost
// event can leak room: a cloud client that disconnects takes its in-flight
// messages, and their room, with it. Hellos and statuses are not held.
//
// mochi's topic names point into the whole packet they were read from
// (an unsafe string over the read buffer), and the copy it queues for each
// subscriber keeps that name, so each queued segment also pinned the
// 256 KiB packet it came in. The hook gives a segment's topic and string
// properties their own memory before mochi copies it.
type holdHook struct {
	mochi.HookBase
	b     *Broker
	limit int

	mu       sync.Mutex
	internal map[*mochi.Client]struct{} // the cloud's clients: their in-flight is what is held
	pending  map[*mochi.Client]struct{} // edges let through whose segment mochi has not yet queued
	waiters  []*holdWaiter              // FIFO
	held     atomic.Int64               // segments held when last looked (for Held)
	waits    atomic.Uint64              // segments that waited
}

type holdWaiter struct {
	cl *mochi.Client
	ch chan struct{} // closed when let through (and the edge is pending)
}

func newHoldHook(b *Broker, limit int) *holdHook {
	return &holdHook{b: b, limit: limit, internal: map[*mochi.Client]struct{}{}, pending: map[*mochi.Client]struct{}{}}
}

func (h *holdHook) ID() string { return "outpost-hold" }

func (h *holdHook) Provides(x byte) bool {
	switch x {
	case mochi.OnSessionEstablished, mochi.OnDisconnect, mochi.OnPublish, mochi.OnPublished, mochi.OnQosComplete, mochi.OnQosDropped:
		return true
	}
	return false
}

func (h *holdHook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	if string(cl.Properties.Username) == InternalUser {
		h.mu.Lock()
		h.internal[cl] = struct{}{}
		h.mu.Unlock()
	}
}

func (h *holdHook) OnDisconnect(cl *mochi.Client, _ error, _ bool) {
	h.mu.Lock()
	delete(h.internal, cl)
	delete(h.pending, cl)
	h.mu.Unlock()
	h.wake()
}

// OnPublish holds an edge's segment until there is room (see holdHook).
// mochi calls it on the edge's read goroutine, after the ACL check and
// before the PUBACK.
func (h *holdHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || string(cl.Properties.Username) == InternalUser {
		return pk, nil
	}
	if t, err := protocol.ParseTopic(pk.TopicName); err != nil || t.Kind != protocol.KindSegment {
		return pk, nil
	}
	detach(&pk)
	if !h.admit(cl) {
		// The connection closed while the segment waited: no PUBACK, the
		// edge sends it again on its next connection.
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// OnPublished: mochi has queued the segment for the cloud's clients (or
// found none); it now counts in their in-flight messages.
func (h *holdHook) OnPublished(cl *mochi.Client, _ packets.Packet) {
	h.mu.Lock()
	_, was := h.pending[cl]
	delete(h.pending, cl)
	h.mu.Unlock()
	if was {
		h.wake()
	}
}

func (h *holdHook) OnQosComplete(cl *mochi.Client, _ packets.Packet) {
	if string(cl.Properties.Username) == InternalUser {
		h.wake()
	}
}

func (h *holdHook) OnQosDropped(cl *mochi.Client, _ packets.Packet) {
	if string(cl.Properties.Username) == InternalUser {
		h.wake()
	}
}

// admit returns once cl may publish a segment (true), or once cl's
// connection is closed (false).
func (h *holdHook) admit(cl *mochi.Client) bool {
	h.mu.Lock()
	if len(h.waiters) == 0 && h.heldLocked() < h.limit {
		h.pending[cl] = struct{}{}
		h.mu.Unlock()
		return true
	}
	w := &holdWaiter{cl: cl, ch: make(chan struct{})}
	h.waiters = append(h.waiters, w)
	h.mu.Unlock()
	h.waits.Add(1)
	t := time.NewTicker(holdPoll)
	defer t.Stop()
	for {
		select {
		case <-w.ch:
			return true
		case <-t.C:
		}
		if cl.Closed() {
			h.mu.Lock()
			defer h.mu.Unlock()
			select {
			case <-w.ch: // let through just now: give the room back
				delete(h.pending, cl)
			default:
				for i, o := range h.waiters {
					if o == w {
						h.waiters = append(h.waiters[:i], h.waiters[i+1:]...)
						break
					}
				}
			}
			go h.wake()
			return false
		}
		h.wake() // room may have come without an event (a cloud client gone)
	}
}

// wake lets waiting edges through, first come first, while there is room.
func (h *holdHook) wake() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.waiters) > 0 && h.heldLocked() < h.limit {
		w := h.waiters[0]
		h.waiters[0] = nil
		h.waiters = h.waiters[1:]
		h.pending[w.cl] = struct{}{}
		close(w.ch)
	}
}

// heldLocked is what the cloud's clients hold: their in-flight QoS 1
// messages, and the segments let through that mochi is still queueing.
func (h *holdHook) heldLocked() int {
	n := len(h.pending)
	for cl := range h.internal {
		n += cl.State.Inflight.Len()
	}
	h.held.Store(int64(n))
	return n
}

// detach gives a segment's topic name and string properties memory of
// their own, instead of the read buffer of the whole packet (see holdHook).
func detach(pk *packets.Packet) {
	pk.TopicName = strings.Clone(pk.TopicName)
	p := &pk.Properties
	p.ContentType = strings.Clone(p.ContentType)
	p.ResponseTopic = strings.Clone(p.ResponseTopic)
	if len(p.User) > 0 {
		u := make([]packets.UserProperty, len(p.User))
		for i, kv := range p.User {
			u[i] = packets.UserProperty{Key: strings.Clone(kv.Key), Val: strings.Clone(kv.Val)}
		}
		p.User = u
	}
}

// IngestHeld is how many segments the cloud's clients held unacknowledged
// when the broker last looked, and HeldSegments how many segments from
// edges have waited for room since the start.
func (b *Broker) IngestHeld() int64 { return b.hold.held.Load() }

// HeldSegments counts the segments from edges that waited for room
// (Options.MaxIngestHeld) before the broker took them.
func (b *Broker) HeldSegments() uint64 { return b.hold.waits.Load() }
