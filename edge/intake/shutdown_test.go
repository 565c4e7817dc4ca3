package intake_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/edge/intake/intaketest"
	"github.com/outpost-edge/outpost/internal/poll"
)

func connectBytes(tb testing.TB, version byte, clientID, user, pass string) []byte {
	tb.Helper()
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: clientID,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(pass),
		},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// Devices in the middle of CONNECT when the edge shuts down cannot hold
// Close: it stops accepting, closes connections that have not finished
// their CONNECT, refuses CONNECTs that complete after it began, disconnects
// the connected devices, and returns.
func TestCloseWithDevicesMidConnect(t *testing.T) {
	h := intaketest.MustStart(t, newFake(t), nil)
	const half, silent = 16, 4
	type dev struct {
		c    net.Conn
		rest []byte
	}
	var devs []dev
	for i := range half + silent {
		c, err := net.Dial("tcp", h.MQTTAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		d := dev{c: c}
		if i < half {
			b := connectBytes(t, byte(4+i%2), "mid-"+string(rune('a'+i)), "dev-1", h.Secret("dev-1"))
			if _, err := c.Write(b[:len(b)/2]); err != nil {
				t.Fatal(err)
			}
			d.rest = b[len(b)/2:]
		}
		devs = append(devs, d)
	}
	// And devices fully connected, MQTT 3.1.1 and 5.
	v4, _ := dialRaw(t, h.MQTTAddr(), 4, "full-4", "dev-2", h.Secret("dev-2"))
	v5, _ := dialRaw(t, h.MQTTAddr(), 5, "full-5", "dev-3", h.Secret("dev-3"))
	poll.Until(t, waitLimit, "every connection accepted", func() bool { return h.Server.OpenConnections() == half+silent+2 })

	closed := make(chan error, 1)
	go func() { closed <- h.Server.Close() }()
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func() { // the rest of the CONNECT arrives while Close runs
			defer wg.Done()
			if d.rest != nil {
				d.c.Write(d.rest)
			}
		}()
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(time.Minute): // a hang guard, not a measurement
		t.Fatal("Close did not return with devices in the middle of CONNECT")
	}
	wg.Wait()

	// Every connection is closed by the edge, and none got a session.
	for i, d := range devs {
		d.c.SetReadDeadline(time.Now().Add(waitLimit))
		b, err := io.ReadAll(d.c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection %d still open after Close", i)
		}
		if len(b) >= 4 && b[0] == 0x20 && b[3] == 0x00 {
			t.Fatalf("connection %d got a successful CONNACK after Close began: % x", i, b)
		}
	}
	if pk, err := v5.read(waitLimit); err == nil && (pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != packets.ErrServerShuttingDown.Code) {
		t.Fatalf("MQTT 5 device got %v %#x, want DISCONNECT 0x8B", pk.FixedHeader.Type, pk.ReasonCode)
	}
	if _, err := v4.read(waitLimit); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("MQTT 3.1.1 device still connected after Close")
	}
	if n := h.Server.OpenConnections(); n != 0 {
		t.Fatalf("%d connections open after Close", n)
	}
}
