package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/outpost-edge/outpost/cloud/release"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/keyfile"
	"github.com/outpost-edge/outpost/protocol"
)

// edgeKeys is the cloud's view of the edges for the repository server.
type edgeKeys struct {
	mu      sync.Mutex
	keys    map[string]ed25519.PublicKey
	revoked map[string]bool
}

func (k *edgeKeys) EdgeKeys(_ context.Context, edge string) (protocol.Keys, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.revoked[edge] {
		return nil, fmt.Errorf("edge %s: %w", edge, release.ErrRevokedEdge)
	}
	p, ok := k.keys[edge]
	if !ok {
		return nil, fmt.Errorf("edge %s: %w", edge, release.ErrUnknownEdge)
	}
	return protocol.NewKeyMap(p), nil
}

// TestOTACheckAndInstallFromCloudRepository: an enrolled edge's `edge ota
// check` and `edge ota install --repo URL` sign their requests with the
// edge key for the cloud it pinned, and the cloud's repository server
// (cloud/release) lets it in; an unenrolled data dir and a revoked edge
// are refused with the server's reason.
func TestOTACheckAndInstallFromCloudRepository(t *testing.T) {
	d := t.TempDir()
	offline, online := filepath.Join(d, "offline"), filepath.Join(d, "online")
	if _, err := release.KeysInit(offline, online, release.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	art := filepath.Join(d, "art")
	os.WriteFile(art, []byte("#!/bin/sh\necho 1.1.0\n"), 0o755)
	arch := runtime.GOOS + "/" + runtime.GOARCH
	s, err := release.Sign(offline, art, release.SignOptions{Custom: firmware.Custom{Version: "1.1.0", Channel: "stable", Arch: arch}})
	if err != nil {
		t.Fatal(err)
	}
	repo := &release.Repo{Dir: filepath.Join(d, "repo"), Online: online}
	if err := repo.Open(); err != nil {
		t.Fatal(err)
	}
	p, _ := release.PublicationFrom(offline, map[string]string{s.Name: art})
	if _, err := repo.Publish(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	_, k, _ := ed25519.GenerateKey(nil)
	ks := &edgeKeys{keys: map[string]ed25519.PublicKey{"shop-1": k.Public().(ed25519.PublicKey)}, revoked: map[string]bool{}}
	srv := httptest.NewServer(&release.Server{Repo: repo, Keys: ks, Cluster: "cloud-kid", Prefix: "/v1/ota/repo/"})
	defer srv.Close()
	url := srv.URL + "/v1/ota/repo/"

	data := filepath.Join(d, "data")
	if err := keyfile.Save(keyPath(data), k); err != nil {
		t.Fatal(err)
	}
	if err := saveIdentity(data, identity{Edge: "shop-1", CloudKID: "cloud-kid"}); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(offline, "1.root.json")
	bin := filepath.Join(d, "edge-1.0.0")
	os.WriteFile(bin, []byte("#!/bin/sh\necho 1.0.0\n"), 0o755)
	for _, args := range [][]string{{"init", "--root", root}, {"adopt", "--binary", bin, "--version", "1.0.0"}} {
		if out, code := edgeCmd(t, append(append([]string{"ota"}, args...), "--data-dir", data)...); code != 0 {
			t.Fatalf("%v (%d): %s", args, code, out)
		}
	}
	out, code := edgeCmd(t, "ota", "check", "--data-dir", data, "--repo", url)
	if code != 0 || !strings.Contains(out, s.Name) || !strings.Contains(out, "yes") {
		t.Fatalf("check (%d): %s", code, out)
	}

	// A data dir that never enrolled sends no signature.
	stranger := filepath.Join(d, "stranger")
	edgeCmd(t, "ota", "init", "--root", root, "--data-dir", stranger)
	if out, code := edgeCmd(t, "ota", "check", "--data-dir", stranger, "--repo", url); code == 0 || !strings.Contains(out, "401") || !strings.Contains(out, "Outpost-Edge") {
		t.Fatalf("unenrolled check (%d): %s", code, out)
	}

	out, code = edgeCmd(t, "ota", "install", "--data-dir", data, "--repo", url, "--target", s.Name, "--without-assignment")
	if code != 0 {
		t.Fatalf("install (%d): %s", code, out)
	}
	if out, _ := edgeCmd(t, "ota", "status", "--data-dir", data); !strings.Contains(out, "1.1.0") {
		t.Fatalf("status after install: %s", out)
	}

	ks.mu.Lock()
	ks.revoked["shop-1"] = true
	ks.mu.Unlock()
	if out, code := edgeCmd(t, "ota", "check", "--data-dir", data, "--repo", url); code == 0 || !strings.Contains(out, "shop-1 is revoked") {
		t.Fatalf("revoked check (%d): %s", code, out)
	}
}

func TestHelloAgentNamesArch(t *testing.T) {
	want := "outpost-edge/" + Version + " (" + runtime.GOOS + "/" + runtime.GOARCH
	if a := helloAgent(); !strings.HasPrefix(a, want) || !strings.HasSuffix(a, ")") || len(a) > 128 {
		t.Fatalf("agent %q, want %s...)", a, want)
	}
}
