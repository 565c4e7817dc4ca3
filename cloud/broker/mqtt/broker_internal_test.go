package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func testSigner(name string) *protocol.Signer {
	s, _ := protocol.NewSigner(protocoltest.Key(name))
	return s
}

// endings counts the connections mochi has finished with: its listener
// logs a warning with the error each one ended on, after it is done with
// the connection. A test waits for its connections to end before the
// broker is closed, because mochi's Close races with a connection still
// being set up (a WaitGroup Add during Wait; mochi-mqtt/server#488).
type endings struct {
	slog.Handler
	mu *sync.Mutex
	n  *int
}

func (e endings) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" && r.Level == slog.LevelWarn {
		e.mu.Lock()
		*e.n++
		e.mu.Unlock()
	}
	return e.Handler.Handle(ctx, r)
}

func (e endings) WithAttrs(a []slog.Attr) slog.Handler {
	return endings{e.Handler.WithAttrs(a), e.mu, e.n}
}

func (e endings) WithGroup(g string) slog.Handler { return endings{e.Handler.WithGroup(g), e.mu, e.n} }

var (
	endedMu sync.Mutex
	ended   = map[*Broker]*int{}
)

// waitEnded waits until n connections to b have ended.
func waitEnded(t *testing.T, b *Broker, n int) {
	t.Helper()
	poll.Until(t, 10*time.Second, fmt.Sprintf("%d connections to end", n), func() bool {
		endedMu.Lock()
		defer endedMu.Unlock()
		return *ended[b] >= n
	})
}

func startTestBroker(t *testing.T, mod func(*Options)) *Broker {
	t.Helper()
	count := new(int)
	h := endings{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), &endedMu, count}
	keys := map[string]protocol.Keys{
		"e1": protocol.NewKeyMap(testSigner("e1").Public()),
		"e2": protocol.NewKeyMap(testSigner("e2").Public()),
	}
	o := Options{Addr: "127.0.0.1:0", Keys: func(_ context.Context, edge string) (protocol.Keys, error) {
		if k, ok := keys[edge]; ok {
			return k, nil
		}
		return nil, errors.New("unknown edge")
	}, Logger: slog.New(h)}
	if mod != nil {
		mod(&o)
	}
	b, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	endedMu.Lock()
	ended[b] = count
	endedMu.Unlock()
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// mqttString is an MQTT UTF-8 string or binary field: a 2-byte length, then
// the bytes.
func mqttString(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

// varint is MQTT's variable byte integer.
func varint(n int) []byte {
	var b []byte
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// rawConnect is an MQTT 3.1.1 CONNECT, written by hand so that nothing
// between the test and the broker checks the will.
func rawConnect(clientID, user, pass, willTopic string, willPayload []byte) []byte {
	flags := byte(0x02 | 0x80 | 0x40) // clean session, user name, password
	if willTopic != "" {
		flags |= 0x04 | 1<<3 // will, at QoS 1
	}
	body := append(mqttString("MQTT"), 4, flags, 0, 60)
	body = append(body, mqttString(clientID)...)
	if willTopic != "" {
		body = append(body, mqttString(willTopic)...)
		body = append(body, mqttString(string(willPayload))...)
	}
	body = append(body, mqttString(user)...)
	body = append(body, mqttString(pass)...)
	return append(append([]byte{0x10}, varint(len(body))...), body...)
}

// dialConnect sends pkt on a fresh connection and returns the connection
// and the CONNACK's return code.
func dialConnect(t *testing.T, addr string, pkt []byte) (net.Conn, byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	if ack[0] != 0x20 {
		t.Fatalf("got packet %#x, want a CONNACK", ack[0])
	}
	return c, ack[3]
}

// An edge that connects with a will on another edge's topics, then drops
// its TCP connection, gets nothing delivered there; a will on its own
// status topic still is.
func TestWillOutsideACLNotDelivered(t *testing.T) {
	b := startTestBroker(t, nil)
	var mu sync.Mutex
	got := map[string][]byte{}
	err := b.srv.Subscribe("outpost/v1/edge/#", 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		mu.Lock()
		got[pk.TopicName] = append([]byte(nil), pk.Payload...)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, topic string
		delivered   bool
	}{
		{"another edge's segments", "outpost/v1/edge/e2/seg", false},
		{"another edge's receipts", "outpost/v1/edge/e2/rcpt", false},
		{"another edge's commands", "outpost/v1/edge/e2/cmd", false},
		{"its own receipts", "outpost/v1/edge/e1/rcpt", false},
		{"a device topic", "outpost/v1/dev/d1/ev", false},
		{"its own status", "outpost/v1/edge/e1/status", true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			payload := []byte("forged by e1: " + c.name)
			conn, code := dialConnect(t, b.Addr(), rawConnect("outpost-edge-e1", "e1",
				testSigner("e1").BrokerToken(protocol.BrokerMQTT, "e1", uint64(time.Now().UnixNano())), c.topic, payload))
			if code != 0 {
				t.Fatalf("login refused with %#x", code)
			}
			poll.Until(t, 5*time.Second, "the broker to register the client", func() bool {
				_, ok := b.srv.Clients.Get("outpost-edge-e1")
				return ok
			})
			_ = conn.Close() // an unclean end: this is what publishes a will
			// The will, if any, is published before the broker forgets
			// the client of a clean session.
			poll.Until(t, 5*time.Second, "the broker to drop the client", func() bool {
				_, ok := b.srv.Clients.Get("outpost-edge-e1")
				return !ok
			})
			waitEnded(t, b, i+1)
			mu.Lock()
			p, ok := got[c.topic]
			delete(got, c.topic)
			mu.Unlock()
			if ok != c.delivered || (ok && !bytes.Equal(p, payload)) {
				t.Fatalf("will on %s delivered=%v (%q), want delivered=%v", c.topic, ok, p, c.delivered)
			}
		})
	}
}

// waitClosed reads from c until the broker closes it; it fails the test
// when the broker keeps the connection open for 10 seconds.
func waitClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the broker kept the connection open", what)
	}
}

// An unauthenticated CONNECT that declares 256 MiB is refused from its
// fixed header: the broker closes the connection without allocating the
// declared length (mochi allocates it, twice, as soon as it has the header).
func TestHugeConnectRefusedUnallocated(t *testing.T) {
	b := startTestBroker(t, nil)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		hdr := append([]byte{0x10}, varint(256<<20-1)...)
		if _, err := c.Write(append(hdr, mqttString("MQTT")...)); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c, "a CONNECT declaring 256 MiB")
	}
	waitEnded(t, b, 2)
	runtime.ReadMemStats(&after)
	// TotalAlloc only grows, so a collection cannot hide an allocation.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("two CONNECTs declaring 256 MiB made the process allocate %d MiB", grew>>20)
	}
}

// The size cap holds after authentication too: a PUBLISH declaring more
// than MaxPacketBytes ends the connection.
func TestOversizePublishRefused(t *testing.T) {
	b := startTestBroker(t, nil)
	c, code := dialConnect(t, b.Addr(), rawConnect("outpost-edge-e1", "e1", testSigner("e1").BrokerToken(protocol.BrokerMQTT, "e1", uint64(time.Now().UnixNano())), "", nil))
	if code != 0 {
		t.Fatalf("login refused with %#x", code)
	}
	hdr := append([]byte{0x32}, varint(MaxPacketBytes+1)...) // PUBLISH at QoS 1
	if _, err := c.Write(append(hdr, mqttString("outpost/v1/edge/e1/seg")...)); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, c, "a PUBLISH over MaxPacketBytes")
	waitEnded(t, b, 1)
}

// A connection that sends no CONNECT is closed after ConnectTimeout.
func TestSilentConnectionClosed(t *testing.T) {
	b := startTestBroker(t, func(o *Options) { o.ConnectTimeout = 50 * time.Millisecond })
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitClosed(t, c, "a connection that never sends CONNECT")
	waitEnded(t, b, 1)
}

// The MQTT 5 CONNACK tells the edge the largest packet it may send.
func TestConnackAdvertisesMaxPacketSize(t *testing.T) {
	b := startTestBroker(t, nil)
	user, pass := "e1", testSigner("e1").BrokerToken(protocol.BrokerMQTT, "e1", uint64(time.Now().UnixNano()))
	body := append(mqttString("MQTT"), 5, 0x02|0x80|0x40, 0, 60, 0) // v5, no properties
	body = append(body, mqttString("outpost-edge-e1")...)
	body = append(body, mqttString(user)...)
	body = append(body, mqttString(pass)...)
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(append(append([]byte{0x10}, varint(len(body))...), body...)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	var fh packets.FixedHeader
	first, err := r.ReadByte()
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Decode(first); err != nil || fh.Type != packets.Connack {
		t.Fatalf("got packet type %d (%v), want a CONNACK", fh.Type, err)
	}
	if fh.Remaining, _, err = packets.DecodeLength(r); err != nil {
		t.Fatal(err)
	}
	rest := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(r, rest); err != nil {
		t.Fatal(err)
	}
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
	if err := pk.ConnackDecode(rest); err != nil {
		t.Fatal(err)
	}
	if pk.ReasonCode != 0 {
		t.Fatalf("login refused with %#x", pk.ReasonCode)
	}
	if got := pk.Properties.MaximumPacketSize; got != MaxPacketBytes {
		t.Fatalf("CONNACK Maximum Packet Size %d, want %d", got, MaxPacketBytes)
	}
	_ = c.Close()
	waitEnded(t, b, 1)
}
