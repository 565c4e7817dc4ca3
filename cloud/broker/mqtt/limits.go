package mqtt

import (
	"errors"
	"fmt"
	"net"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/protocol"
)

// Limits on what a connection can make the broker hold. mochi allocates a
// packet's whole declared length as soon as it has read the fixed header,
// so without them one unauthenticated CONNECT declaring 256 MiB costs
// 256 MiB (twice: it copies the bytes).
const (
	// MaxPacketBytes is the largest packet the broker reads from anyone
	// (mochi's Capabilities.MaximumPacketSize, advertised in the MQTT 5
	// CONNACK): a segment and its PUBLISH headers.
	MaxPacketBytes = protocol.MaxEdgePacketBytes
	// MaxConnectBytes is the largest CONNECT, the only packet read before
	// a client is authenticated. An edge's CONNECT holds its client id, edge
	// id and a broker token: a few hundred bytes.
	MaxConnectBytes = 16 << 10
)

// errConnectTooLarge ends a connection whose first packet is over MaxConnectBytes.
var errConnectTooLarge = errors.New("mqtt: the first packet is not a CONNECT of at most 16 KiB")

// limitListener sets each accepted connection's CONNECT deadline and size cap.
type limitListener struct {
	net.Listener
	timeout time.Duration // Options.ConnectTimeout
}

func (l limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(l.timeout))
	return &connectLimitConn{Conn: c}, nil
}

// connectLimitConn watches the first packet's fixed header as mochi reads
// it (the bytes pass through unchanged) and fails the read when it
// declares more than MaxConnectBytes, before mochi allocates anything for
// it. After the first header it is a plain connection.
type connectLimitConn struct {
	net.Conn
	done      bool
	seen      int // header bytes seen: the type byte, then the length's
	remaining int
	mult      int
}

func (c *connectLimitConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.done {
		return n, err
	}
	for _, b := range p[:n] {
		if c.seen == 0 {
			c.seen, c.mult = 1, 1
			continue
		}
		c.seen++
		c.remaining += int(b&0x7f) * c.mult
		c.mult *= 128
		if c.remaining > MaxConnectBytes || (b&0x80 != 0 && c.seen >= 5) {
			_ = c.Conn.Close()
			return 0, fmt.Errorf("%w (declared %d bytes or more)", errConnectTooLarge, c.remaining)
		}
		if b&0x80 == 0 {
			c.done = true
			break
		}
	}
	return n, err
}

// limitHook advertises MaxPacketBytes in the MQTT 5 CONNACK: mochi
// enforces Capabilities.MaximumPacketSize but does not send it.
type limitHook struct {
	mochi.HookBase
}

func (h *limitHook) ID() string { return "outpost-limits" }

func (h *limitHook) Provides(b byte) bool { return b == mochi.OnPacketEncode }

func (h *limitHook) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode == packets.CodeSuccess.Code && cl.Properties.ProtocolVersion == 5 {
		pk.Properties.MaximumPacketSize = MaxPacketBytes
	}
	return pk
}
