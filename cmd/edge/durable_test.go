package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/internal/durable/durabletest"
	"github.com/outpost-edge/outpost/protocol"
)

// TestEnrollSurvivesPowerCut: on a fresh gateway, `edge enroll` and `edge
// devices add`, then a power cut that drops everything not fsynced; the
// edge key, the identity and the device credentials are all there and
// whole, so `edge run` can start. (Before, identity.json was renamed into
// place with no fsync and came back empty: "unexpected end of JSON input".)
func TestEnrollSurvivesPowerCut(t *testing.T) {
	root := t.TempDir()
	dataDir := filepath.Join(root, "var", "edge") // does not exist yet
	cloudSigner := testSigner(t)
	var enrolledKey string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			PublicKey string `json:"public_key"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		enrolledKey = req.PublicKey
		_ = json.NewEncoder(w).Encode(map[string]string{"edge": "shop-9",
			"cloud_public_key": hex.EncodeToString(cloudSigner.Public()), "cloud_kid": string(cloudSigner.KeyID())})
	}))
	defer api.Close()

	f := durabletest.New(t, root)
	var out, errb bytes.Buffer
	if code := Run([]string{"enroll", "--data-dir", dataDir, "--cloud", api.URL, "--token", "t"}, &out, &errb); code != 0 {
		t.Fatalf("enroll: exit %d: %s", code, errb.String())
	}
	if code := Run([]string{"devices", "add", "--data-dir", dataDir, "--id", "till-1"}, &out, &errb); code != 0 {
		t.Fatalf("devices add: exit %d: %s", code, errb.String())
	}
	if err := f.PowerCut(); err != nil {
		t.Fatal(err)
	}

	id, err := loadIdentity(dataDir)
	if err != nil || id.Edge != "shop-9" || id.CloudPublicKey != hex.EncodeToString(cloudSigner.Public()) {
		t.Fatalf("identity after the power cut: %+v %v", id, err)
	}
	s, created, err := loadSigner(dataDir)
	if err != nil || created || hex.EncodeToString(s.Public()) != enrolledKey {
		t.Fatalf("edge key after the power cut: created %v, %v; the cloud has %s", created, err, enrolledKey)
	}
	devs, err := intake.ListDevices(filepath.Join(dataDir, "devices.json"))
	if err != nil || len(devs) != 1 || devs[0].ID != "till-1" {
		t.Fatalf("devices after the power cut: %+v %v", devs, err)
	}
	if fi, err := os.Stat(dataDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v, want mode 0700", fi, err)
	}
	ents, _ := os.ReadDir(dataDir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Fatalf("temp file left: %s", e.Name())
		}
	}
}

// TestDevicesAddFreshGateway: `edge devices add` before anything else made
// the data dir creates it (0700) instead of failing.
func TestDevicesAddFreshGateway(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "new", "edge")
	var out, errb bytes.Buffer
	if code := Run([]string{"devices", "add", "--data-dir", dataDir, "--id", "till-1"}, &out, &errb); code != 0 {
		t.Fatalf("devices add on a fresh gateway: exit %d: %s", code, errb.String())
	}
	if fi, err := os.Stat(dataDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v, want mode 0700", fi, err)
	}
}

func testSigner(t *testing.T) *protocol.Signer {
	t.Helper()
	_, k, err := protocol.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := protocol.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
