package mqtt

import (
	"errors"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// MaxEdgeInflight is how many QoS 1 messages (receipts, nacks, commands)
// the broker holds for one edge that has not acknowledged them. An edge
// whose window stays full (a stalled process, a link that takes nothing)
// is disconnected when one more would be held, instead of the broker
// holding up to mochi's MaximumInflight (8192) messages for each such
// edge. Nothing is lost by it: receipts carry the stream's whole
// watermark, so any later receipt replaces a dropped one, and an edge says
// hello whenever it connects (and after its ack timeout), and the hello's
// answer is a fresh receipt (edge/uplink). A healthy edge acknowledges each
// receipt within a round trip; 256 outstanding is far past that. The
// cloud's own clients are not limited here: what they hold is what ingest
// has not committed yet, bounded by mochi's MaximumInflight.
const MaxEdgeInflight = 256

// errSlowEdge ends the session of an edge over MaxEdgeInflight.
var errSlowEdge = errors.New("mqtt: the edge left too many receipts unacknowledged")

// slowHook disconnects edges over MaxEdgeInflight. mochi calls
// OnQosPublish on the goroutine publishing to the edge (for receipts, the
// cloud's reply connection's), so it must not block: cl.Stop closes the
// connection and returns, where a DISCONNECT packet would be a write to
// the very connection that takes nothing.
type slowHook struct {
	mochi.HookBase
	b      *Broker
	kicked sync.Map // *mochi.Client -> struct{}: disconnected once, logged once
}

func (h *slowHook) ID() string { return "outpost-slow-edges" }

func (h *slowHook) Provides(x byte) bool { return x == mochi.OnQosPublish || x == mochi.OnDisconnect }

func (h *slowHook) OnQosPublish(cl *mochi.Client, _ packets.Packet, _ int64, _ int) {
	if string(cl.Properties.Username) == InternalUser || cl.Closed() {
		return // mochi still publishes to a stopped client until it is gone
	}
	n := cl.State.Inflight.Len()
	if n <= MaxEdgeInflight {
		return
	}
	if _, dup := h.kicked.LoadOrStore(cl, struct{}{}); dup {
		return
	}
	h.b.slowEdges.Add(1)
	h.b.log.Warn("disconnected an edge that leaves its receipts unacknowledged; it says hello when it reconnects and gets its watermark again",
		"edge", string(cl.Properties.Username), "client", cl.ID, "remote", cl.Net.Remote, "unacknowledged", n, "limit", MaxEdgeInflight)
	cl.Stop(errSlowEdge)
}

func (h *slowHook) OnDisconnect(cl *mochi.Client, _ error, _ bool) { h.kicked.Delete(cl) }

// SlowEdgeDisconnects counts the edges disconnected for leaving more than
// MaxEdgeInflight receipts unacknowledged.
func (b *Broker) SlowEdgeDisconnects() uint64 { return b.slowEdges.Load() }
