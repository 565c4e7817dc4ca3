package nats_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/outpost-edge/outpost/edge/uplink"
	uplinknats "github.com/outpost-edge/outpost/edge/uplink/nats"
)

// A refused broker-token login says in the edge's log what it means and
// what to check, not only "authorization violation".
func TestRefusedLoginSaysWhy(t *testing.T) {
	s := MustServer(t, func(o *server.Options) { o.Username, o.Password = "someone", "else" })
	tk, err := uplink.OpenTokens(uplink.TokenOptions{Signer: signer("e1"), Edge: "e1", Cluster: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := uplinknats.New(uplinknats.Options{URL: s.ClientURL(), Edge: "e1", Tokens: tk})
	if err != nil {
		t.Fatal(err)
	}
	err = tr.Connect(context.Background(), func([]byte) {})
	if err == nil {
		_ = tr.Close()
		t.Fatal("connected")
	}
	for _, want := range []string{"authorization violation", "refused the login of edge e1", "clock is not the cause", `"nats:c1"`, "cloud's log"} {
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
