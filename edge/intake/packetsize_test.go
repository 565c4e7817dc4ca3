package intake_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/edge/intake/intaketest"
	"github.com/outpost-edge/outpost/internal/poll"
)

// oversizePublish is the start of a QoS 1 PUBLISH whose remaining length
// announces a packet over intake.MaxPacketSize, and some of its payload.
func oversizePublish(topic string) []byte {
	remaining := intake.MaxPacketSize // +1 for the type byte: one byte over
	b := []byte{0x32}
	for n := remaining; ; {
		d := byte(n & 0x7f)
		if n >>= 7; n > 0 {
			b = append(b, d|0x80)
			continue
		}
		b = append(b, d)
		break
	}
	b = append(b, byte(len(topic)>>8), byte(len(topic)))
	b = append(b, topic...)
	b = append(b, 0x00, 0x01) // packet id
	return append(b, make([]byte, 8192)...)
}

// A packet over the maximum packet size: MQTT 5 devices are told the limit
// in the CONNACK and get DISCONNECT 0x95; 3.1.1 devices have the connection
// closed. A device resending such a packet forever costs the edge one
// connection per try and nothing more: other devices are served, and no
// connection is left behind.
func TestOversizePacket(t *testing.T) {
	f := newFake(t)
	h := intaketest.MustStart(t, f, nil)
	good := mustPaho(t, h, "dev-2", "good")
	base := h.Server.OpenConnections()

	_, ack := dialRaw(t, h.MQTTAddr(), 5, "probe", "dev-1", h.Secret("dev-1"))
	if ack.Properties.MaximumPacketSize != intake.MaxPacketSize {
		t.Fatalf("MQTT 5 CONNACK announces Maximum Packet Size %d, want %d", ack.Properties.MaximumPacketSize, intake.MaxPacketSize)
	}
	const tries = 20
	for i := range tries {
		for _, v := range []byte{5, 4} {
			rc, _ := dialRaw(t, h.MQTTAddr(), v, fmt.Sprintf("big-%d-%d", v, i), "dev-1", h.Secret("dev-1"))
			rc.write(oversizePublish(evTopic("dev-1")))
			pk, err := rc.read(waitLimit)
			if v == 5 {
				if err != nil || pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != packets.ErrPacketTooLarge.Code {
					t.Fatalf("MQTT 5 try %d: got type %d code %#x (%v), want DISCONNECT 0x95", i, pk.FixedHeader.Type, pk.ReasonCode, err)
				}
				pk, err = rc.read(waitLimit)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) || (err == nil && pk.FixedHeader.Type == packets.Puback) {
				t.Fatalf("MQTT %d try %d: connection not closed (%v, packet type %d)", v, i, err, pk.FixedHeader.Type)
			}
			if v == 5 && !errors.Is(err, io.EOF) {
				t.Fatalf("MQTT 5 try %d: the DISCONNECT is not followed by a clean close: %v", i, err)
			}
			rc.conn.Close() // as a device does once disconnected
		}
		// The edge keeps serving everyone else meanwhile.
		waitToken(t, good.Publish(evTopic("dev-2"), 1, false, eventJSON(fmt.Sprintf("g%d", i), "sale.note")))
	}
	if n := len(f.RecordsOfType("sale.note")); n != tries {
		t.Fatalf("%d events of the good device stored, want %d", n, tries)
	}
	if n := len(f.Records()); n != tries {
		t.Fatalf("%d records, want only the good device's %d (an oversize packet is not read, so nothing is kept)", n, tries)
	}
	poll.Until(t, waitLimit, "the oversize connections closed", func() bool { return h.Server.OpenConnections() == base+1 }) // +1: the probe
	// The last refusal may be counted just after its connection closed.
	poll.For(t, waitLimit, func() error {
		if got := h.Server.Metrics().Refused(intake.ReasonTooLarge); got < 2*tries {
			return fmt.Errorf("refused too_large %d, want at least %d", got, 2*tries)
		}
		return nil
	})
}
