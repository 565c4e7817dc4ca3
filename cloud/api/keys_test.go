package api_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/protocol"
)

// smallOrderKeys are public keys under which signatures can be forged
// without a private key; the first is the one the attack registered.
var smallOrderKeys = map[string]string{
	"identity 01 00…00": "01" + strings.Repeat("00", 31),
	"all zeros":         strings.Repeat("00", 32),
	"order 2":           "ec" + strings.Repeat("ff", 30) + "7f",
	"non-canonical":     "ee" + strings.Repeat("ff", 30) + "7f",
}

// Every way a key enters through the API refuses a small-order or
// non-canonical key with a 400 that says why.
func TestSmallOrderKeysRefused(t *testing.T) {
	e := MustEnv(t, envOptions{})
	good := MustSigner(t)
	e.MustDo(t, 201, "POST", "/v1/edges", e.Admin, map[string]any{"id": "gw-1", "public_key": hexKey(good.Public())}, nil)
	for name, k := range smallOrderKeys {
		t.Run(name, func(t *testing.T) {
			wantError(t, e.Do(t, "POST", "/v1/edges", e.Admin, map[string]any{"id": "gw-bad", "public_key": k}), 400, "public_key", "Ed25519 public key")
			wantError(t, e.Do(t, "POST", "/v1/edges/gw-1/keys", e.Admin, map[string]any{"public_key": k}), 400, "public_key", "Ed25519 public key")
			var tok struct{ Token string }
			e.MustDo(t, 201, "POST", "/v1/tokens", e.Admin, map[string]any{"edge": "gw-enroll"}, &tok)
			wantError(t, e.Do(t, "POST", "/v1/enroll", "", map[string]any{"token": tok.Token, "public_key": k}), 400, "public_key", "Ed25519 public key")
		})
	}
	// The ledger refuses them too, for callers that skip the API.
	ident := make([]byte, 32)
	ident[0] = 1
	if _, err := e.Ledger.AddEdge(context.Background(), "gw-direct", ident); !errors.Is(err, protocol.ErrBadKey) {
		t.Fatalf("ledger AddEdge with the identity key: %v; want ErrBadKey", err)
	}
	if _, err := e.Ledger.GetEdge(context.Background(), "gw-bad"); err == nil {
		t.Fatal("gw-bad was registered")
	}
}
