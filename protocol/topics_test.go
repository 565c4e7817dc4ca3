package protocol_test

import (
	"testing"

	"github.com/outpost-edge/outpost/protocol"
)

// TestIsNATSInbox: a reply subject is an edge's inbox only under its own
// prefix, with at least one more token and no wildcards; nothing else
// (another edge's inbox, the JetStream API, an edge's seg or rcpt subject)
// is.
func TestIsNATSInbox(t *testing.T) {
	for _, tc := range []struct {
		edge, subject string
		want          bool
	}{
		{"e1", "_INBOX.edge.e1.abc", true},
		{"e1", "_INBOX.edge.e1.abc.7", true},
		{"e1", "_INBOX.edge.e1", false},
		{"e1", "_INBOX.edge.e1.", false},
		{"e1", "_INBOX.edge.e12.abc", false},
		{"e1", "_INBOX.edge.e2.abc", false},
		{"e1", "_INBOX.edge.e1.*", false},
		{"e1", "_INBOX.edge.e1.>", false},
		{"e1", "_INBOX.edge.e1.a..b", false},
		{"e1", "$JS.API.STREAM.PURGE.OUTPOST_SEGMENTS", false},
		{"e1", "outpost.v1.edge.e2.rcpt", false},
		{"e1", "outpost.v1.edge.e2.seg", false},
		{"e1", "_INBOX.abc", false},
		{"e.1", "_INBOX.edge.e.1.abc", false},
	} {
		if got := protocol.IsNATSInbox(tc.edge, tc.subject); got != tc.want {
			t.Errorf("IsNATSInbox(%q, %q) = %v, want %v", tc.edge, tc.subject, got, tc.want)
		}
	}
	if got := protocol.NATSInboxPrefix("e1"); got != "_INBOX.edge.e1" {
		t.Errorf("NATSInboxPrefix = %q", got)
	}
}
