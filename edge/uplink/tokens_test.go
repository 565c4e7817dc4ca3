package uplink_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/protocol"
)

func tokenSigner(t *testing.T) *protocol.Signer {
	seed := sha256.Sum256([]byte("tokens test"))
	s, err := protocol.NewSigner(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The counter goes up at every token, across restarts and whatever the
// clock does: 8 days back, 8 days ahead and back again, or stopped.
func TestTokensClockSteps(t *testing.T) {
	s := tokenSigner(t)
	path := filepath.Join(t.TempDir(), "broker-counter")
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	open := func() *uplink.Tokens {
		tk, err := uplink.OpenTokens(uplink.TokenOptions{Signer: s, Edge: "e1", Cluster: "c1", Path: path, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	var last uint64
	next := func(tk *uplink.Tokens, step string) {
		t.Helper()
		tok, err := tk.Token(protocol.BrokerNATS)
		if err != nil {
			t.Fatal(err)
		}
		got, err := protocol.VerifyBrokerToken(protocol.BrokerAudience(protocol.BrokerNATS, "c1"), "e1", tok, protocol.NewKeyMap(s.Public()))
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if got.Counter <= last {
			t.Fatalf("%s: counter %d after %d", step, got.Counter, last)
		}
		last = got.Counter
	}
	tk := open()
	next(tk, "first")
	if last != uint64(now.UnixMilli()) {
		t.Errorf("first counter %d, want the clock's ms %d", last, now.UnixMilli())
	}
	next(tk, "same millisecond")
	now = now.Add(-8 * 24 * time.Hour)
	next(open(), "restart with the clock 8 days behind")
	now = now.Add(16 * 24 * time.Hour)
	next(open(), "8 days ahead")
	now = now.Add(-8 * 24 * time.Hour)
	next(open(), "back to the right time")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("counter file: %v %v", fi, err)
	}
	if err := os.WriteFile(path, []byte("not a number"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := uplink.OpenTokens(uplink.TokenOptions{Signer: s, Edge: "e1", Path: path}); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("corrupt counter file: %v, want an error naming the file", err)
	}
}
