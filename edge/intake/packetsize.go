package intake

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/protocol"
)

// MaxPacketSize is the largest MQTT packet the intake reads: a publish
// carrying a whole batch (protocol.MaxBatchBytes) with room to spare. It is
// announced to MQTT 5 devices in the CONNACK (Maximum Packet Size). A
// publish of up to this size whose payload is over the batch limit is read
// and refused as too_large like any bad input (acknowledged, kept as an
// intake.rejected record); a packet over it is not read at all: an MQTT 5
// device gets DISCONNECT 0x95 (packet too large) and an MQTT 3.1.1 device
// has its connection closed, with nothing acknowledged or kept.
const MaxPacketSize = 2 * protocol.MaxBatchBytes

// oversizeDrain bounds what the intake reads of an oversize packet after
// answering it, so that closing the connection with the device's bytes
// unread does not reset it before the DISCONNECT arrives.
const (
	oversizeDrainBytes = 2 * MaxPacketSize
	oversizeDrainTime  = 2 * time.Second
)

var oversizeReason = fmt.Sprintf("packet too large: the edge reads MQTT packets of at most %d bytes (Maximum Packet Size in the CONNACK); split the batch", MaxPacketSize)

// sizeListener wraps each connection in a sizeConn.
type sizeListener struct {
	net.Listener
}

func (l sizeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sizeConn{Conn: c, first: true}, nil
}

// sizeConn follows the MQTT framing of what a device sends (it never
// changes a byte) to see a packet over MaxPacketSize before mochi does.
// mochi refuses such a packet by closing the connection without a word;
// MQTT 5 requires a DISCONNECT with reason code 0x95, which Close sends
// when the packet was over the limit.
type sizeConn struct {
	net.Conn

	// Framing state, used only by the reading goroutine (mochi's read loop).
	state     int // 0: type byte; 1: remaining length; 2: body; 3: stopped
	length    int // the remaining length read so far, then what is left of the body
	shift     uint
	lenBytes  int
	first     bool // reading the first packet (the CONNECT)
	connect   [9]byte
	connectAt int

	version atomic.Uint32 // the protocol level of the CONNECT
	over    atomic.Bool   // a packet over MaxPacketSize was announced
	once    sync.Once

	// Write coalescing (cork): while corked, writes gather in wbuf, and
	// uncork sends them in one write. wmu is held across every write to
	// the connection, so that bytes leave in the order they were written.
	wmu    sync.Mutex
	corked bool
	wbuf   []byte
}

// Write writes p, or while the connection is corked, adds it to what
// uncork sends.
func (c *sizeConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.corked {
		c.wbuf = append(c.wbuf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// cork makes the writes that follow wait for uncork. The ack writer corks
// the connection around a round of PUBACKs, which then cost one write (one
// system call, one TCP segment) instead of one each.
func (c *sizeConn) cork() {
	c.wmu.Lock()
	c.corked = true
	c.wmu.Unlock()
}

// uncork sends what was written since cork, in one write.
func (c *sizeConn) uncork() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.corked = false
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.wbuf)
	if cap(c.wbuf) > maxCorkBuf {
		c.wbuf = nil // a rare large round does not keep its buffer
	} else {
		c.wbuf = c.wbuf[:0]
	}
	return err
}

// maxCorkBuf is the largest write buffer a connection keeps between rounds.
const maxCorkBuf = 64 << 10

func (c *sizeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.scan(p[:n])
	return n, err
}

func (c *sizeConn) scan(b []byte) {
	for len(b) > 0 {
		switch c.state {
		case 0:
			c.state, c.length, c.shift, c.lenBytes = 1, 0, 0, 0
			b = b[1:]
		case 1:
			x := b[0]
			b = b[1:]
			c.length |= int(x&0x7f) << c.shift
			c.shift += 7
			c.lenBytes++
			switch {
			case x&0x80 != 0 && c.lenBytes == 4:
				c.state = 3 // malformed: mochi refuses it
			case x&0x80 != 0:
			case c.length+1 > MaxPacketSize: // mochi's own test of the limit
				c.over.Store(true)
				c.state = 3
			case c.length == 0:
				c.endPacket()
			default:
				c.state = 2
			}
		case 2:
			k := min(len(b), c.length)
			if c.first && c.connectAt < len(c.connect) {
				c.connectAt += copy(c.connect[c.connectAt:], b[:k])
			}
			c.length -= k
			b = b[k:]
			if c.length == 0 {
				c.endPacket()
			}
		default:
			return
		}
	}
}

func (c *sizeConn) endPacket() {
	if c.first {
		c.first = false
		// protocol name (2-byte length, "MQTT" or "MQIsdp"), then the level
		if name := int(c.connect[0])<<8 | int(c.connect[1]); 2+name < c.connectAt {
			c.version.Store(uint32(c.connect[2+name]))
		}
	}
	c.state = 0
}

// Close answers an oversize packet, then closes the connection.
func (c *sizeConn) Close() error {
	c.once.Do(func() {
		if !c.over.Load() || c.version.Load() < 5 {
			return
		}
		pk := packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Disconnect},
			ProtocolVersion: 5,
			ReasonCode:      packets.ErrPacketTooLarge.Code,
			Properties:      packets.Properties{ReasonString: oversizeReason},
		}
		var buf bytes.Buffer
		if pk.DisconnectEncode(&buf) != nil {
			return
		}
		c.Conn.SetDeadline(time.Now().Add(oversizeDrainTime))
		if _, err := c.Conn.Write(buf.Bytes()); err != nil {
			return
		}
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		io.CopyN(io.Discard, c.Conn, oversizeDrainBytes)
	})
	return c.Conn.Close()
}

// netConn returns the connection under the intake's own wrapper.
func netConn(c net.Conn) net.Conn {
	if sc, ok := c.(*sizeConn); ok {
		return sc.Conn
	}
	return c
}
