package main

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/internal/keyfile"
	"github.com/outpost-edge/outpost/protocol"
)

// identity is what enrollment stores in the data dir: who this edge is to
// the cloud and which cloud key it pins.
type identity struct {
	Edge           string `json:"edge"`
	CloudPublicKey string `json:"cloud_public_key"` // hex
	CloudKID       string `json:"cloud_kid"`
	Cloud          string `json:"cloud,omitempty"` // the API URL it enrolled with
}

func identityPath(dataDir string) string { return filepath.Join(dataDir, "identity.json") }
func keyPath(dataDir string) string      { return filepath.Join(dataDir, "edge.key") }

func loadIdentity(dataDir string) (identity, error) {
	var id identity
	b, err := os.ReadFile(identityPath(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return id, nil
	}
	if err != nil {
		return id, err
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("%s: %w", identityPath(dataDir), err)
	}
	return id, nil
}

// saveIdentity stores id durably: `edge run` cannot start without it, and
// it must survive a power cut right after `edge enroll`.
func saveIdentity(dataDir string, id identity) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	return durable.WriteFile(identityPath(dataDir), append(b, '\n'), 0o600)
}

func loadSigner(dataDir string) (*protocol.Signer, bool, error) {
	k, created, err := keyfile.LoadOrCreate(keyPath(dataDir))
	if err != nil {
		return nil, false, err
	}
	s, err := protocol.NewSigner(k)
	return s, created, err
}

func parseKeyHex(what, s string) (ed25519.PublicKey, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, usagef("%s %q is not a 32-byte Ed25519 public key in hex", what, s)
	}
	if err := protocol.ValidatePublicKey(b); err != nil {
		return nil, usagef("%s: %v; pin the cloud's real key (cloud key show prints it)", what, err)
	}
	return b, nil
}
