package mqtt

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

func testSigner(name string) *protocol.Signer {
	seed := sha256.Sum256([]byte(name))
	s, _ := protocol.NewSigner(ed25519.NewKeyFromSeed(seed[:]))
	return s
}

func startTestBroker(t *testing.T, mod func(*Options)) *Broker {
	t.Helper()
	keys := map[string]protocol.Keys{
		"e1": protocol.NewKeyMap(testSigner("e1").Public()),
		"e2": protocol.NewKeyMap(testSigner("e2").Public()),
	}
	o := Options{Addr: "127.0.0.1:0", Keys: func(_ context.Context, edge string) (protocol.Keys, error) {
		if k, ok := keys[edge]; ok {
			return k, nil
		}
		return nil, errors.New("unknown edge")
	}}
	if mod != nil {
		mod(&o)
	}
	b, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
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
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			payload := []byte("forged by e1: " + c.name)
			conn, code := dialConnect(t, b.Addr(), rawConnect("outpost-edge-e1", "e1",
				testSigner("e1").BrokerToken("e1", time.Now()), c.topic, payload))
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
