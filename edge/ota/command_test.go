package ota_test

import (
	"errors"
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

// TestCommandGate: a command signed by the pinned cloud key, for this
// edge, fresh and next in sequence is accepted once; a replayed, foreign,
// expired or forged one is refused with the reason; every decision is an
// event in the spool; the sequence survives a new gate (a restart).
func TestCommandGate(t *testing.T) {
	dir := t.TempDir()
	cloud := protocoltest.NewSigner(t)
	now := time.Now()
	gate := func() *ota.CommandGate {
		return &ota.CommandGate{Path: filepath.Join(dir, "commands.json"), Edge: "shop-1",
			CloudKeys: protocol.NewKeyMap(cloud.Public()), Spool: ota.Spool{Path: filepath.Join(dir, "spool")}, Now: func() time.Time { now = now.Add(time.Millisecond); return now }}
	}
	g := gate()
	cmd := func(s *protocol.Signer, edge string, seq uint64, exp time.Time) []byte {
		return s.SignCommand(protocol.Command{Edge: edge, Seq: seq, Expires: exp.UnixMilli(), Kind: "ota.assign", Body: []byte(`{"target":"edge-1.2.0"}`)})
	}
	one := cmd(cloud, "shop-1", 1, now.Add(time.Hour))
	c, err := g.Accept(one)
	if err != nil || c.Seq != 1 || string(c.Body) != `{"target":"edge-1.2.0"}` {
		t.Fatalf("accept: %+v %v", c, err)
	}
	cases := map[string]struct {
		msg  []byte
		want string
	}{
		"replayed":              {one, "is a replay: the last accepted is 1"},
		"for another edge":      {cmd(cloud, "shop-2", 2, now.Add(time.Hour)), "is for edge shop-2, this is shop-1"},
		"expired":               {cmd(cloud, "shop-1", 2, now.Add(-time.Second)), "expired at"},
		"signed by another key": {cmd(protocoltest.NewSigner(t), "shop-1", 2, now.Add(time.Hour)), "unknown key"},
		"garbage":               {[]byte("not cose"), "command"},
	}
	for name, c := range cases {
		_, err := gate().Accept(c.msg)
		if !errors.Is(err, ota.ErrCommandRefused) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a refusal saying %q", name, err, c.want)
		}
	}
	// A new gate (a restart) still refuses seq 1 and takes seq 2.
	if _, err := gate().Accept(one); !errors.Is(err, ota.ErrCommandRefused) {
		t.Fatalf("replay after restart: %v", err)
	}
	if _, err := gate().Accept(cmd(cloud, "shop-1", 2, now.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	ev := spooled(t, g.Spool)
	var accepted, refused int
	for _, e := range ev {
		switch e.Kind {
		case "ota.command_accepted":
			accepted++
		case "ota.command_refused":
			refused++
			if e.Reason == "" {
				t.Errorf("refusal without a reason: %+v", e)
			}
		}
	}
	if accepted != 2 || refused != len(cases)+1 {
		t.Fatalf("%d accepted and %d refused events, want 2 and %d: %+v", accepted, refused, len(cases)+1, ev)
	}
}
