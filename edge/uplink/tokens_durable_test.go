package uplink_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/internal/durable/durabletest"
	"github.com/outpost-edge/outpost/protocol"
)

// TestTokenCounterSurvivesPowerCut: the broker login counter the edge
// needs to log in again is on disk after a power cut that drops what was
// not fsynced, so a restart after the clock went back never reuses one.
func TestTokenCounterSurvivesPowerCut(t *testing.T) {
	dir := t.TempDir()
	f := durabletest.New(t, dir)
	path := filepath.Join(dir, "broker-counter")
	at := time.UnixMilli(1_800_000_000_000)
	tk, err := uplink.OpenTokens(uplink.TokenOptions{Signer: key("edge"), Edge: "e1", Path: path, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Token(protocol.BrokerMQTT); err != nil {
		t.Fatal(err)
	}
	last := tk.Last()
	if err := f.PowerCut(); err != nil {
		t.Fatal(err)
	}
	back := at.Add(-time.Hour) // the clock stepped back across the restart
	tk2, err := uplink.OpenTokens(uplink.TokenOptions{Signer: key("edge"), Edge: "e1", Path: path, Now: func() time.Time { return back }})
	if err != nil {
		t.Fatal(err)
	}
	if tk2.Last() != last {
		t.Fatalf("counter after the power cut: %d, want %d", tk2.Last(), last)
	}
}
