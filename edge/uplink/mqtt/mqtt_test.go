package mqtt_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"strings"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/edge/uplink"
	uplinkmqtt "github.com/outpost-edge/outpost/edge/uplink/mqtt"
	"github.com/outpost-edge/outpost/protocol"
)

type denyAll struct{ mochi.HookBase }

func (*denyAll) ID() string                                               { return "deny" }
func (*denyAll) Provides(b byte) bool                                     { return b == mochi.OnConnectAuthenticate }
func (*denyAll) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return false }

// A refused broker-token login says in the edge's log what it means and
// what to check, not only "not Authorized".
func TestRefusedLoginSaysWhy(t *testing.T) {
	srv := mochi.New(&mochi.Options{InlineClient: true})
	if err := srv.AddHook(&denyAll{}, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Close() })

	seed := sha256.Sum256([]byte("e1"))
	s, _ := protocol.NewSigner(ed25519.NewKeyFromSeed(seed[:]))
	tk, err := uplink.OpenTokens(uplink.TokenOptions{Signer: s, Edge: "e1", Cluster: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := uplinkmqtt.New(uplinkmqtt.Options{Broker: "tcp://" + l.Address(), Edge: "e1", Tokens: tk})
	if err != nil {
		t.Fatal(err)
	}
	err = tr.Connect(context.Background(), func([]byte) {})
	if err == nil {
		_ = tr.Close()
		t.Fatal("connected")
	}
	for _, want := range []string{"refused the login of edge e1", "clock is not the cause", `"mqtt:c1"`, "cloud's log"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
