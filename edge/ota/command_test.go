package ota_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func spooled(t *testing.T, s ota.Spool) []ota.Event {
	t.Helper()
	var out []ota.Event
	if err := s.Drain(func(es []ota.Event) error { out = append(out, es...); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func signCmd(s *protocol.Signer, edge string, seq uint64, exp time.Time) []byte {
	return s.SignCommand(protocol.Command{Edge: edge, Seq: seq, Expires: exp.UnixMilli(), Kind: "ota.assign", Body: []byte(`{"target":"edge-1.2.0"}`)})
}

func countKinds(ev []ota.Event) (accepted, refused int) {
	for _, e := range ev {
		switch e.Kind {
		case "ota.command_accepted":
			accepted++
		case "ota.command_refused":
			refused++
		}
	}
	return accepted, refused
}

// TestCommandGate: a command signed by the pinned cloud key, for this
// edge, fresh and next in sequence is accepted once; a replayed, foreign,
// expired or forged one is refused with the reason; every acceptance and
// every refusal (a minute apart here) is an event in the spool, and a
// replay of an accepted command is not; the sequence survives a new gate
// (a restart).
func TestCommandGate(t *testing.T) {
	dir := t.TempDir()
	cloud := protocoltest.NewSigner(t)
	now := time.Now()
	gate := func() *ota.CommandGate {
		return &ota.CommandGate{Path: filepath.Join(dir, "commands.json"), Edge: "shop-1",
			CloudKeys: protocol.NewKeyMap(cloud.Public()), Spool: ota.Spool{Path: filepath.Join(dir, "spool")}, Now: func() time.Time { now = now.Add(time.Minute); return now }}
	}
	g := gate()
	one := signCmd(cloud, "shop-1", 1, now.Add(time.Hour))
	c, err := g.Accept(one)
	if err != nil || c.Seq != 1 || string(c.Body) != `{"target":"edge-1.2.0"}` {
		t.Fatalf("accept: %+v %v", c, err)
	}
	if last, err := g.Last(); last != 1 || err != nil {
		t.Fatalf("last %d %v", last, err)
	}
	cases := map[string]struct {
		msg    []byte
		want   string
		replay bool
	}{
		"replayed":              {one, "is a replay: the last accepted is 1", true},
		"for another edge":      {signCmd(cloud, "shop-2", 2, now.Add(time.Hour)), "is for edge shop-2, this is shop-1", false},
		"expired":               {signCmd(cloud, "shop-1", 2, now.Add(-time.Second)), "expired at", false},
		"signed by another key": {signCmd(protocoltest.NewSigner(t), "shop-1", 2, now.Add(time.Hour)), "unknown key", false},
		"garbage":               {[]byte("not cose"), "command", false},
	}
	for name, c := range cases {
		_, err := g.Accept(c.msg)
		if !errors.Is(err, ota.ErrCommandRefused) || !strings.Contains(err.Error(), c.want) || errors.Is(err, ota.ErrCommandReplay) != c.replay {
			t.Errorf("%s: %v, want a refusal saying %q (replay %v)", name, err, c.want, c.replay)
		}
	}
	// A new gate (a restart) still refuses seq 1, even once expired, and
	// takes seq 2.
	if _, err := gate().Accept(one); !errors.Is(err, ota.ErrCommandReplay) {
		t.Fatalf("replay after restart: %v", err)
	}
	if _, err := gate().Accept(signCmd(cloud, "shop-1", 2, now.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	ev := spooled(t, g.Spool)
	for _, e := range ev {
		if e.Kind == "ota.command_refused" && (e.Reason == "" || strings.Contains(e.Reason, "replay")) {
			t.Errorf("refusal event %+v: want a reason, and no event for a replay", e)
		}
	}
	if accepted, refused := countKinds(ev); accepted != 2 || refused != len(cases)-1 {
		t.Fatalf("%d accepted and %d refused events, want 2 and %d: %+v", accepted, refused, len(cases)-1, ev)
	}
	if st := g.Stats(); st.Accepted != 1 || st.Redelivered != 1 || st.Refused != 4 || st.Unrecorded != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestCommandGateRefusalsRateLimited: a flood of forged, foreign and
// expired commands (an attacker on the broker) makes at most one
// ota.command_refused per reason class per RefusalEvery; the rest are
// counted, and the next recorded refusal says how many were not. A flood
// of redeliveries of an accepted command makes no event at all. A command
// that is good is still accepted in the middle of it.
func TestCommandGateRefusalsRateLimited(t *testing.T) {
	dir := t.TempDir()
	cloud, forger := protocoltest.NewSigner(t), protocoltest.NewSigner(t)
	now := time.Now()
	g := &ota.CommandGate{Path: filepath.Join(dir, "commands.json"), Edge: "shop-1",
		CloudKeys: protocol.NewKeyMap(cloud.Public()), Spool: ota.Spool{Path: filepath.Join(dir, "spool")},
		Now: func() time.Time { return now }}
	one := signCmd(cloud, "shop-1", 1, now.Add(time.Hour))
	if _, err := g.Accept(one); err != nil {
		t.Fatal(err)
	}
	flood := func(n int) {
		for i := 0; i < n; i++ {
			for _, m := range [][]byte{
				signCmd(forger, "shop-1", uint64(10+i), now.Add(time.Hour)),
				[]byte("garbage"),
				signCmd(cloud, "shop-2", uint64(10+i), now.Add(time.Hour)),
				signCmd(cloud, "shop-1", uint64(10+i), now.Add(-time.Hour)),
				one,
			} {
				if _, err := g.Accept(m); !errors.Is(err, ota.ErrCommandRefused) {
					t.Fatalf("flood: %v", err)
				}
			}
		}
	}
	flood(100)
	now = now.Add(59 * time.Second)
	flood(1)
	if _, err := g.Accept(signCmd(cloud, "shop-1", 2, now.Add(time.Hour))); err != nil {
		t.Fatalf("a good command during the flood: %v", err)
	}
	ev := spooled(t, g.Spool)
	if accepted, refused := countKinds(ev); accepted != 2 || refused != 3 {
		t.Fatalf("%d accepted and %d refused events in the first minute, want 2 and 3 (one per class): %+v", accepted, refused, ev)
	}
	now = now.Add(time.Second)
	flood(1)
	ev = spooled(t, g.Spool)
	if _, refused := countKinds(ev); refused != 3 {
		t.Fatalf("%d refusal events a minute later, want 3: %+v", refused, ev)
	}
	// unverified: 2 per round (forged, garbage); 101 rounds, one recorded.
	want := map[string]string{"unknown key": "and 201 more unverified refusals", "is for edge shop-2": "and 100 more foreign refusals", "expired at": "and 100 more expired refusals"}
	for _, e := range ev {
		for what, counted := range want {
			if strings.Contains(e.Reason, what) || (what == "unknown key" && strings.Contains(e.Reason, "unverified")) {
				if !strings.Contains(e.Reason, counted) {
					t.Errorf("refusal %q does not say %q", e.Reason, counted)
				}
			}
		}
	}
	st := g.Stats()
	if st.Redelivered != 102 || st.Refused != 4*102 || st.Unrecorded != 4*102-6 || st.Accepted != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// FuzzCommandGate: whatever arrives on the cmd topic, the gate never
// panics, and accepts (and keeps) only a command signed by the pinned key
// for this edge, unexpired, above the last seq.
func FuzzCommandGate(f *testing.F) {
	cloud := protocoltest.Signer(f, "cloud")
	now := time.UnixMilli(1_800_000_000_000)
	f.Add(signCmd(cloud, "shop-1", 1, now.Add(time.Hour)))
	f.Add(signCmd(cloud, "shop-2", 1, now.Add(time.Hour)))
	f.Add([]byte("not cose"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		dir := t.TempDir()
		kept := 0
		g := &ota.CommandGate{Path: filepath.Join(dir, "commands.json"), Edge: "shop-1", CloudKeys: protocol.NewKeyMap(cloud.Public()),
			Spool: ota.Spool{Path: filepath.Join(dir, "spool")}, Now: func() time.Time { return now },
			Keep: func(protocol.Command, []byte) error { kept++; return nil }}
		c, err := g.Accept(msg)
		if err != nil {
			if kept != 0 {
				t.Fatalf("kept a refused command: %v", err)
			}
			return
		}
		v, verr := protocol.VerifyCommand(msg, protocol.NewKeyMap(cloud.Public()))
		if verr != nil || v.Edge != "shop-1" || !now.Before(time.UnixMilli(v.Expires)) || c.Seq != v.Seq || kept != 1 {
			t.Fatalf("accepted %+v (%v), kept %d", c, verr, kept)
		}
	})
}

// TestCommandAcceptedEventNotLost: ota.command_accepted is the edge's
// acknowledgement in its signed ledger (the rollout projection reads it).
// When it cannot be recorded (here the spool cannot be written; a crash
// between persisting the seq and spooling the event is the same), the
// command must not count as accepted: its seq stays where it was, so the
// cloud's redelivery is accepted, with its event, once the spool works.
func TestCommandAcceptedEventNotLost(t *testing.T) {
	dir := t.TempDir()
	cloud := protocoltest.NewSigner(t)
	blocker := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	good := ota.Spool{Path: filepath.Join(dir, "spool")}
	g := &ota.CommandGate{Path: filepath.Join(dir, "commands.json"), Edge: "shop-1", CloudKeys: protocol.NewKeyMap(cloud.Public()),
		Spool: ota.Spool{Path: filepath.Join(blocker, "spool")}}
	msg := signCmd(cloud, "shop-1", 1, time.Now().Add(time.Hour))
	if _, err := g.Accept(msg); err == nil || errors.Is(err, ota.ErrCommandRefused) {
		t.Fatalf("accept with a spool that cannot be written: %v, want an error that is not a refusal", err)
	}
	if last, _ := g.Last(); last != 0 {
		t.Fatalf("seq %d persisted, but its ota.command_accepted was never recorded", last)
	}
	g.Spool = good
	if _, err := g.Accept(msg); err != nil {
		t.Fatalf("the redelivery: %v", err)
	}
	if acc, _ := countKinds(spooled(t, good)); acc != 1 {
		t.Fatalf("%d ota.command_accepted spooled, want 1", acc)
	}
	if last, _ := g.Last(); last != 1 {
		t.Fatalf("seq %d after the redelivery, want 1", last)
	}
}

// TestCommandGateFreshDir: edge run --ota-repo on a data dir whose updater
// directory does not exist yet (no refusal or event has made it) accepts
// the first command; it failed on the lock file, and the cloud's next
// delivery came only at the next hello.
func TestCommandGateFreshDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ota")
	cloud := protocoltest.NewSigner(t)
	g := &ota.CommandGate{Path: filepath.Join(dir, "commands.json"), Edge: "shop-1", CloudKeys: protocol.NewKeyMap(cloud.Public()),
		Spool: ota.Spool{Path: filepath.Join(dir, "events.jsonl")}}
	if _, err := g.Accept(signCmd(cloud, "shop-1", 1, time.Now().Add(time.Hour))); err != nil {
		t.Fatalf("the first command on a fresh directory: %v", err)
	}
	if last, _ := g.Last(); last != 1 {
		t.Fatalf("last %d, want 1", last)
	}
}

// TestCommandAcceptedNamesItsCommand: an ota.command_accepted says which
// command it accepted, the SHA-256 of its signed bytes (the cloud checks it
// against the command it keeps under that seq), beside its seq (reason
// "command N", id "cmd-N-accepted") and kind (target), which say no more
// than what the seq holds now.
func TestCommandAcceptedNamesItsCommand(t *testing.T) {
	dir := t.TempDir()
	cloud := protocoltest.NewSigner(t)
	g := &ota.CommandGate{Path: filepath.Join(dir, "commands.json"), Edge: "shop-1",
		CloudKeys: protocol.NewKeyMap(cloud.Public()), Spool: ota.Spool{Path: filepath.Join(dir, "spool")}}
	msg := signCmd(cloud, "shop-1", 7, time.Now().Add(time.Hour))
	if _, err := g.Accept(msg); err != nil {
		t.Fatal(err)
	}
	ev := spooled(t, g.Spool)
	sum := sha256.Sum256(msg)
	if len(ev) != 1 || ev[0].Kind != "ota.command_accepted" || ev[0].ID != "cmd-7-accepted" || ev[0].Reason != "command 7" ||
		ev[0].Target != "ota.assign" || ev[0].Command != hex.EncodeToString(sum[:]) {
		t.Fatalf("spooled %+v; want one ota.command_accepted of command 7 (ota.assign) naming %x", ev, sum)
	}
}
