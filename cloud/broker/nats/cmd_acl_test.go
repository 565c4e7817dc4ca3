package nats_test

import (
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/internal/poll"
)

// The command channel's permissions: an edge may subscribe to its own cmd
// subject only, and no edge may publish to any edge's cmd subject (its
// own included): only the cloud's own user does. A foreign edge tries
// both.
func TestCommandSubjectPermissions(t *testing.T) {
	e1, e2 := signer("e1"), signer("e2")
	s := MustServer(t, fleet{"e1": e1, "e2": e2})
	cloud, _ := MustInternal(t, s)
	n1, _ := MustEdge(t, s, "e1", e1)
	n2, perr := MustEdge(t, s, "e2", e2)

	mine, err := n1.SubscribeSync("outpost.v1.edge.e1.cmd")
	if err != nil {
		t.Fatal(err)
	}
	if err := n1.Flush(); err != nil {
		t.Fatal(err)
	}
	// e2 subscribes to e1's commands, by name and by wildcard: refused.
	var stolen []*natsgo.Subscription
	for _, subj := range []string{"outpost.v1.edge.e1.cmd", "outpost.v1.edge.*.cmd", "outpost.v1.edge.>", ">"} {
		sub, err := n2.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		stolen = append(stolen, sub)
		_ = n2.Flush()
		poll.Until(t, 15*time.Second, "subscribe violation for "+subj, func() bool {
			return perr.has("subscription to \"" + strings.ToLower(subj) + "\"")
		})
	}
	// e2 publishes to e1's cmd subject, and e1 to its own: refused.
	for _, nc := range []*natsgo.Conn{n2, n1} {
		if err := nc.Publish("outpost.v1.edge.e1.cmd", []byte("forged")); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 15*time.Second, "e2's publish violation", func() bool {
		return perr.has(`permissions violation for publish to "outpost.v1.edge.e1.cmd"`)
	})
	// The cloud's user reaches e1, after the forgeries; nobody else got it.
	if err := cloud.Publish("outpost.v1.edge.e1.cmd", []byte("from the cloud")); err != nil {
		t.Fatal(err)
	}
	if err := cloud.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := mine.NextMsg(10 * time.Second)
	if err != nil || string(m.Data) != "from the cloud" {
		t.Fatalf("e1's first command: %v, %v; want the cloud's (a forged one came first?)", m, err)
	}
	for _, sub := range stolen {
		if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
			t.Errorf("e2 got %q on %s", m.Data, sub.Subject)
		}
	}
}
