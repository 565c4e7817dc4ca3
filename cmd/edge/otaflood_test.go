package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// TestCommandFloodLosesNothing: a forger on the broker floods the edge's
// cmd topic (forged commands, and old commands of its own replayed) faster
// than the gate takes them. The cloud's commands that come meanwhile must
// not be dropped with the flood: a dropped seq 1 followed by an accepted
// seq 2 is lost for good (the hello then says cmd 2, and the cloud never
// sends 1 again).
func TestCommandFloodLosesNothing(t *testing.T) {
	data := t.TempDir()
	if err := os.MkdirAll(otaDirFor(data), 0o755); err != nil {
		t.Fatal(err)
	}
	cloud, forger := protocoltest.NewSigner(t), protocoltest.NewSigner(t)
	c := newCommander(data, "shop-1", protocol.NewKeyMap(cloud.Public()), slog.New(slog.DiscardHandler))
	cmd := func(s *protocol.Signer, seq uint64) []byte {
		return s.SignCommand(protocol.Command{Edge: "shop-1", Seq: seq, Expires: time.Now().Add(time.Hour).UnixMilli(), Kind: protocol.CommandCancel,
			Body: protocol.EncodeCancel(protocol.Cancel{Rollout: "r-1"})})
	}
	// The flood arrives before the gate runs (it is busy, or slow).
	for i := range 10 * commandQueue {
		c.offer(cmd(forger, uint64(i+1)))
	}
	c.offer(cmd(cloud, 1))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	poll.For(t, 60*time.Second, func() error {
		if st := c.gate.Stats(); st.Refused < commandQueue {
			return fmt.Errorf("gate %+v: the flood is not through yet", st)
		}
		return nil
	})
	c.offer(cmd(cloud, 2))
	poll.For(t, 60*time.Second, func() error {
		if n, _ := c.gate.Last(); n != 2 {
			return fmt.Errorf("last accepted %d, want 2", n)
		}
		return nil
	})
	var accepted []string
	if err := otaSpool(otaDirFor(data)).Drain(func(evs []ota.Event) error {
		for _, e := range evs {
			if e.Kind == "ota.command_accepted" {
				accepted = append(accepted, e.Reason)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(accepted, ", "); got != "command 1, command 2" {
		t.Fatalf("accepted %q, want command 1, command 2 (dropped %d in the flood)", got, c.dropped.Load())
	}
}
