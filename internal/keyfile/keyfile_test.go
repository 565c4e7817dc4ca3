package keyfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/internal/durable/durabletest"
	"github.com/outpost-edge/outpost/internal/keyfile"
)

func TestLoadOrCreate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "edge.key")
	k1, created, err := keyfile.LoadOrCreate(p)
	if err != nil || !created {
		t.Fatal(err, created)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", fi.Mode().Perm())
	}
	k2, created, err := keyfile.LoadOrCreate(p)
	if err != nil || created || !k1.Equal(k2) {
		t.Fatal("reload differs", err, created)
	}
	if err := keyfile.Save(p, k1); err == nil {
		t.Fatal("overwrote an existing key")
	}
	_ = os.Chmod(p, 0o644)
	if _, err := keyfile.Load(p); !errors.Is(err, keyfile.ErrLoosePermissions) {
		t.Fatalf("loose permissions: %v", err)
	}
}

// TestKeySurvivesPowerCut: a key made by LoadOrCreate (the edge key, the
// cloud key) in a directory it had to create is there and whole after a
// power cut that drops everything not fsynced.
func TestKeySurvivesPowerCut(t *testing.T) {
	root := t.TempDir()
	f := durabletest.New(t, root)
	p := filepath.Join(root, "data", "cloud.key")
	k, created, err := keyfile.LoadOrCreate(p)
	if err != nil || !created {
		t.Fatal(err, created)
	}
	if err := f.PowerCut(); err != nil {
		t.Fatal(err)
	}
	k2, err := keyfile.Load(p)
	if err != nil || !k.Equal(k2) {
		t.Fatalf("key after the power cut: %v (same key: %v)", err, err == nil && k.Equal(k2))
	}
}
