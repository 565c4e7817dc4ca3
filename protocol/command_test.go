package protocol_test

import (
	"errors"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func TestCommandRoundTrip(t *testing.T) {
	s := protocoltest.NewSigner(t)
	keys := protocol.NewKeyMap(s.Public())
	want := protocol.Command{Edge: "shop-1", Seq: 7, Expires: time.Now().Add(time.Hour).UnixMilli(), Kind: "ota.assign", Body: []byte("{}")}
	got, err := protocol.VerifyCommand(s.SignCommand(want), keys)
	if err != nil {
		t.Fatal(err)
	}
	want.KID = s.KeyID()
	if got.Edge != want.Edge || got.Seq != want.Seq || got.Expires != want.Expires || got.Kind != want.Kind || string(got.Body) != "{}" || got.KID != want.KID {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	// A receipt is not a command, and a command is not a checkpoint.
	if _, err := protocol.VerifyCommand(s.SignReceipt(protocol.Receipt{Edge: "shop-1", HWM: 1}), keys); !errors.Is(err, protocol.ErrBadSignature) {
		t.Fatalf("receipt as command: %v", err)
	}
	if _, err := protocol.VerifyCheckpoint(s.SignCommand(want), keys); !errors.Is(err, protocol.ErrBadSignature) {
		t.Fatalf("command as checkpoint: %v", err)
	}
	for name, c := range map[string]protocol.Command{
		"seq 0":    {Edge: "shop-1", Expires: 1, Kind: "k"},
		"no kind":  {Edge: "shop-1", Seq: 1, Expires: 1},
		"bad kind": {Edge: "shop-1", Seq: 1, Expires: 1, Kind: "Run Me"},
		"bad edge": {Edge: "../x", Seq: 1, Expires: 1, Kind: "k"},
		"big body": {Edge: "shop-1", Seq: 1, Expires: 1, Kind: "k", Body: make([]byte, protocol.MaxCommandBodyBytes+1)},
	} {
		if _, err := protocol.VerifyCommand(s.SignCommand(c), keys); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzVerifyCommand(f *testing.F) {
	s := protocoltest.NewSigner(f)
	keys := protocol.NewKeyMap(s.Public())
	f.Add(s.SignCommand(protocol.Command{Edge: "shop-1", Seq: 1, Expires: 1, Kind: "ota.assign", Body: []byte("x")}))
	f.Add([]byte{0xd2, 0x84})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := protocol.VerifyCommand(b, keys)
		if err == nil && (c.Seq == 0 || c.Kind == "" || c.KID != s.KeyID()) {
			t.Fatalf("accepted %+v", c)
		}
	})
}
