package durable_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/internal/durable/durabletest"
)

// TestWriteFileSurvivesPowerCut: a file written by WriteFile, in a
// directory WriteFile had to create, is whole after a power cut; so is a
// replacement of it.
func TestWriteFileSurvivesPowerCut(t *testing.T) {
	root := t.TempDir()
	f := durabletest.New(t, root)
	path := filepath.Join(root, "a", "b", "identity.json")
	if err := durable.WriteFile(path, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.PowerCut(); err != nil {
		t.Fatal(err)
	}
	expect(t, path, "first\n", 0o600)
	if fi, err := os.Stat(filepath.Join(root, "a")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("created directory: %v %v, want mode 0700", fi, err)
	}
	if err := durable.WriteFile(path, []byte("second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.PowerCut(); err != nil {
		t.Fatal(err)
	}
	expect(t, path, "second\n", 0o644)
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("%d entries left in the directory, want only the file (no temp files): %v", len(ents), ents)
	}
}

// TestUnsyncedWritesAreLost checks the model: what the old identity code
// did (write a temp file, rename it, no fsync) leaves nothing after a
// power cut, and neither does a directory whose parent was not synced.
func TestUnsyncedWritesAreLost(t *testing.T) {
	root := t.TempDir()
	f := durabletest.New(t, root)
	dir := filepath.Join(root, "edge")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "identity.json.tmp"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "identity.json.tmp"), filepath.Join(dir, "identity.json")); err != nil {
		t.Fatal(err)
	}
	if err := f.PowerCut(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a directory created without syncing its parent survived the power cut: %v", err)
	}

	// A file synced but renamed into a directory that was not synced: the
	// old contents come back.
	path := filepath.Join(root, "keep")
	if err := durable.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(root, "keep.new")
	if err := os.WriteFile(tmp, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if err := f.PowerCut(); err != nil {
		t.Fatal(err)
	}
	expect(t, path, "old", 0o600)
}

func TestCreateFileRefusesExisting(t *testing.T) {
	root := t.TempDir()
	f := durabletest.New(t, root)
	path := filepath.Join(root, "edge.key")
	if err := durable.CreateFile(path, []byte("k1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := durable.CreateFile(path, []byte("k2"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second create: %v, want fs.ErrExist", err)
	}
	if err := f.PowerCut(); err != nil {
		t.Fatal(err)
	}
	expect(t, path, "k1", 0o600)
	ents, _ := os.ReadDir(root)
	if len(ents) != 1 {
		t.Fatalf("entries %v, want only the key", ents)
	}
}

func expect(t *testing.T, path, want string, mode fs.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || string(b) != want {
		t.Fatalf("%s after the power cut: %q %v, want %q", path, b, err, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != mode {
		t.Fatalf("%s has mode %04o, want %04o", path, fi.Mode().Perm(), mode)
	}
}
