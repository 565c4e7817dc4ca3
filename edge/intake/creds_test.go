package intake_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/protocol"
)

func TestDevicesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "devices.json")

	secret, err := intake.AddDevice(path, "till-1", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) < 40 {
		t.Fatalf("generated secret %d characters", len(secret))
	}
	if _, err := intake.AddDevice(path, "scale-2", "an-operator-chosen-secret"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), secret) || strings.Contains(string(raw), "an-operator-chosen-secret") {
		t.Fatal("secret stored in clear")
	}
	if !strings.Contains(string(raw), "$argon2id$") {
		t.Fatalf("want argon2id hashes: %s", raw)
	}

	for _, c := range []struct {
		id, secret string
		want       error
	}{
		{"till-1", "", intake.ErrDeviceExists},
		{"bad/id", "", nil},
		{"till-3", "short", nil},
	} {
		_, err := intake.AddDevice(path, c.id, c.secret)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("AddDevice(%q, %q) = %v, want an error (%v)", c.id, c.secret, err, c.want)
		}
	}

	list, err := intake.ListDevices(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "scale-2" || list[1].ID != "till-1" || list[1].Algo != "argon2id" || list[0].Created.IsZero() {
		t.Fatalf("list %+v", list)
	}

	creds, err := intake.OpenCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := creds.Verify("till-1", secret); err != nil {
		t.Fatal(err)
	}
	if err := creds.Verify("till-1", secret); err != nil { // from the cache
		t.Fatal(err)
	}
	if err := creds.Verify("till-1", "an-operator-chosen-secret"); !errors.Is(err, intake.ErrBadSecret) {
		t.Fatalf("wrong secret: %v", err)
	}
	if err := creds.Verify("nobody", secret); !errors.Is(err, intake.ErrUnknownDevice) {
		t.Fatalf("unknown device: %v", err)
	}

	// Remove and re-add with a new secret: the cached old secret must not
	// be accepted any more.
	if err := intake.RemoveDevice(path, "till-1"); err != nil {
		t.Fatal(err)
	}
	if err := creds.Verify("till-1", secret); !errors.Is(err, intake.ErrUnknownDevice) {
		t.Fatalf("removed device: %v", err)
	}
	secret2, err := intake.AddDevice(path, "till-1", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := creds.Verify("till-1", secret); !errors.Is(err, intake.ErrBadSecret) {
		t.Fatalf("old secret after re-add: %v", err)
	}
	if err := creds.Verify("till-1", secret2); err != nil {
		t.Fatal(err)
	}
	if err := intake.RemoveDevice(path, "till-1"); err != nil {
		t.Fatal(err)
	}
	if err := intake.RemoveDevice(path, "till-1"); !errors.Is(err, intake.ErrUnknownDevice) {
		t.Fatalf("remove twice: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Dir(path)); len(left) != 1 {
		t.Fatalf("temp files left behind: %v", left)
	}

	// A file others can read is refused.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := intake.OpenCredentials(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("mode 0644: %v", err)
	}
	if err := creds.Verify("scale-2", "an-operator-chosen-secret"); err == nil {
		t.Fatal("a running edge kept accepting a file that became world-readable")
	}
}

func TestCredentialsMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "devices.json")
	creds, err := intake.OpenCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := creds.Verify("dev", "x"); !errors.Is(err, intake.ErrUnknownDevice) {
		t.Fatal(err)
	}
	secret, err := intake.AddDevice(path, "dev", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := creds.Verify("dev", secret); err != nil {
		t.Fatalf("device added after start: %v", err)
	}
}

// The edge records its own events (ota.*) under protocol.EdgeDevice; no
// device credential may take that name, or a device could forge them.
func TestEdgeDeviceNameRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "devices.json")
	if _, err := intake.AddDevice(path, protocol.EdgeDevice, ""); err == nil || !strings.Contains(err.Error(), "edge's own name") {
		t.Fatalf("add device %s: %v, want a refusal naming why", protocol.EdgeDevice, err)
	}
}
