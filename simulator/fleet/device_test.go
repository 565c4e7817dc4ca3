package fleet_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/simulator/fleet"
)

// dropFirst is a broker hook that drops the connection, without a PUBACK,
// on every publish while dropping is set, and acknowledges the rest.
type dropFirst struct {
	mqtt.HookBase
	dropping atomic.Bool
	drops    atomic.Int64
}

func (h *dropFirst) ID() string { return "drop-first" }
func (h *dropFirst) Provides(b byte) bool {
	return b == mqtt.OnPublish
}

func (h *dropFirst) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !cl.Net.Inline && pk.FixedHeader.Qos > 0 && h.dropping.Load() {
		h.drops.Add(1)
		cl.Stop(errors.New("dropped before the PUBACK"))
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// The oracle counts an event as acknowledged only on a real PUBACK. paho
// completes the token of a publish it resends after a reconnect without an
// error, though no PUBACK came for it; such a send is no answer.
func TestMQTTSenderCountsOnlyRealPubacks(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	h := &dropFirst{}
	h.dropping.Store(true)
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("t", ln)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	s, err := fleet.DialMQTT(ln.Addr().String(), "till-1", "secret")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if out := s.Send(ctx, []byte(`{"id":"a","type":"a.b","ts":1}`), 1, 10*time.Second); out == fleet.Acked {
		t.Fatalf("a publish whose connection was dropped before any PUBACK counted as %v", out)
	}
	if h.drops.Load() < 1 {
		t.Fatal("the broker dropped nothing")
	}
	// Once the broker acknowledges again, real PUBACKs count.
	h.dropping.Store(false)
	// (a device resends what got no answer, as the simulator does)
	poll.Until(t, 30*time.Second, "a real PUBACK counted", func() bool {
		return s.Send(ctx, []byte(`{"id":"b","type":"a.b","ts":1}`), 1, 10*time.Second) == fleet.Acked
	})
}
