package ledger_test

import (
	"context"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// TestHelloRecordsAgent: a hello's agent is stored on its edge, cleaned,
// and served by GetEdge and ListEdges; a hello without one keeps the last.
func TestHelloRecordsAgent(t *testing.T) {
	ctx := context.Background()
	l := MustLedger(t, MustMigratedDB(t), ledger.Options{})
	e := MustAddEdge(t, l, "edge-agent")
	if got, err := l.GetEdge(ctx, e.ID); err != nil || got.Agent != "" || !got.AgentAt.IsZero() {
		t.Fatalf("before any hello: agent %q at %v (%v), want none", got.Agent, got.AgentAt, err)
	}
	ep := newEpoch(t)
	const v1 = "outpost-edge/0.4.0 (linux/arm64)"
	if _, err := l.NoteHello(ctx, protocol.Hello{V: 2, Edge: e.ID, Epoch: ep, Seq: 0, Agent: v1}); err != nil {
		t.Fatal(err)
	}
	got, err := l.GetEdge(ctx, e.ID)
	if err != nil || got.Agent != v1 || got.AgentAt.IsZero() {
		t.Fatalf("after a hello: agent %q at %v (%v), want %q", got.Agent, got.AgentAt, err, v1)
	}
	// No agent: the last one stays.
	if _, err := l.NoteHello(ctx, protocol.Hello{V: 2, Edge: e.ID, Epoch: ep}); err != nil {
		t.Fatal(err)
	}
	// Hostile text: control characters and a bidi override are replaced.
	if _, err := l.NoteHello(ctx, protocol.Hello{V: 2, Edge: e.ID, Epoch: ep, Agent: "outpost-edge/9\x1b[31m\u202e<b>\n"}); err != nil {
		t.Fatal(err)
	}
	es, err := l.ListEdges(ctx)
	if err != nil || len(es) != 1 {
		t.Fatalf("list: %v %v", es, err)
	}
	if want := "outpost-edge/9?[31m?<b>?"; es[0].Agent != want {
		t.Fatalf("agent %q, want %q", es[0].Agent, want)
	}
}

func TestCleanAgent(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"outpost-edge/1.2.3 (linux/amd64/v3)", "outpost-edge/1.2.3 (linux/amd64/v3)"},
		{"  padded  ", "padded"},
		{"a\tb\x00c\xffd", "a?b?c?d"},
		{"\u200bzero-width", "?zero-width"},
		{strings.Repeat("é", 100), strings.Repeat("é", 64)},
	} {
		if got := ledger.CleanAgent(tc.in); got != tc.want {
			t.Errorf("CleanAgent(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzCleanAgent(f *testing.F) {
	f.Add("outpost-edge/0.1.0 (linux/arm64)")
	f.Add("\x1b]0;title\x07\u202e")
	f.Fuzz(func(t *testing.T, s string) {
		got := ledger.CleanAgent(s)
		if len(got) > ledger.MaxAgentBytes || !utf8.ValidString(got) {
			t.Fatalf("CleanAgent(%q) = %q: too long or not UTF-8", s, got)
		}
		for _, r := range got {
			if !unicode.IsPrint(r) {
				t.Fatalf("CleanAgent(%q) = %q keeps %U", s, got, r)
			}
		}
		if ledger.CleanAgent(got) != got {
			t.Fatalf("CleanAgent is not idempotent on %q", got)
		}
	})
}
