package mqtt

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// MaxIngestInflight is how many segments the broker lets the cloud's
// ingest hold unacknowledged (ingest acks a segment once it is committed).
// An edge's segment that arrives while every ingest subscriber holds this
// many waits, in that edge's own read loop, for one to be acknowledged, at
// most ingestWait: the edge's TCP connection then pushes back, so the edge
// waits with its window full, instead of the broker holding the whole
// fleet's windows (mochi would hold 8192 per client, then drop them with
// "client store quota reached"). Only that edge's reading waits; other
// edges, hellos and receipts go on.
const MaxIngestInflight = 1024

// ingestWait bounds one segment's wait for room: past it the segment is
// delivered anyway (an ingest that acknowledges nothing for so long is
// stuck; mochi's own limit then applies).
var ingestWait = 5 * time.Second

// flowHook applies MaxIngestInflight.
type flowHook struct {
	mochi.HookBase
	b *Broker

	mu      sync.Mutex
	ingest  map[*mochi.Client]bool // internal clients subscribed to segments
	room    chan struct{}          // closed (and replaced) when an ingest PUBACK may have made room
	waiting atomic.Int64
}

func newFlowHook(b *Broker) *flowHook {
	return &flowHook{b: b, ingest: map[*mochi.Client]bool{}, room: make(chan struct{})}
}

func (h *flowHook) ID() string { return "outpost-ingest-flow" }

func (h *flowHook) Provides(x byte) bool {
	return x == mochi.OnSubscribed || x == mochi.OnDisconnect || x == mochi.OnPublish || x == mochi.OnQosComplete
}

func (h *flowHook) OnSubscribed(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if string(cl.Properties.Username) != InternalUser {
		return
	}
	for _, f := range pk.Filters {
		if strings.HasSuffix(f.Filter, "/seg") {
			h.mu.Lock()
			h.ingest[cl] = true
			h.mu.Unlock()
			return
		}
	}
}

func (h *flowHook) OnDisconnect(cl *mochi.Client, _ error, _ bool) {
	h.mu.Lock()
	delete(h.ingest, cl)
	h.mu.Unlock()
	h.wake()
}

// OnQosComplete runs when a client acknowledges a QoS 1 delivery.
func (h *flowHook) OnQosComplete(cl *mochi.Client, _ packets.Packet) {
	if h.waiting.Load() > 0 && string(cl.Properties.Username) == InternalUser {
		h.wake()
	}
}

func (h *flowHook) wake() {
	h.mu.Lock()
	close(h.room)
	h.room = make(chan struct{})
	h.mu.Unlock()
}

// full reports whether every ingest subscriber holds MaxIngestInflight,
// and the channel that is closed when that may change.
func (h *flowHook) full() (bool, chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ingest) == 0 {
		return false, h.room
	}
	for cl := range h.ingest {
		if cl.State.Inflight.Len() < MaxIngestInflight {
			return false, h.room
		}
	}
	return true, h.room
}

func (h *flowHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if string(cl.Properties.Username) == InternalUser || !strings.HasSuffix(pk.TopicName, "/seg") {
		return pk, nil
	}
	full, room := h.full()
	if !full {
		return pk, nil
	}
	h.b.ingestWaits.Add(1)
	h.waiting.Add(1)
	defer h.waiting.Add(-1)
	t := time.NewTimer(ingestWait)
	defer t.Stop()
	for full {
		select {
		case <-room:
		case <-t.C:
			h.b.ingestWaitsExpired.Add(1)
			return pk, nil
		}
		if cl.Closed() {
			return pk, nil
		}
		full, room = h.full()
	}
	return pk, nil
}

// IngestWaits counts edges' segments that waited for the cloud's ingest
// to acknowledge what it held (MaxIngestInflight), and of those, the ones
// delivered after waiting ingestWait in vain.
func (b *Broker) IngestWaits() (waited, expired uint64) {
	return b.ingestWaits.Load(), b.ingestWaitsExpired.Load()
}
