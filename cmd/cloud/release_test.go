package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
)

func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(args, &out, &errb)
	return out.String() + errb.String(), code
}

func TestReleaseCLI(t *testing.T) {
	d := t.TempDir()
	keys, online, repo := filepath.Join(d, "keys"), filepath.Join(d, "online"), filepath.Join(d, "repo")
	out, code := runCLI(t, "release", "keys", "init", "--keys", keys, "--release-online-keys", online, "--root-keys", "3", "--root-threshold", "2")
	if code != 0 {
		t.Fatalf("keys init: %d %s", code, out)
	}
	if n := strings.Count(out, "/root-"); n != 3 {
		t.Fatalf("keys init printed %d root fingerprints:\n%s", n, out)
	}
	art := filepath.Join(d, "edge-linux-arm64")
	if err := os.WriteFile(art, []byte("an edge binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "release", "sign", art, "--keys", keys, "--version", "1.2.0", "--channel", "stable")
	if code != 0 || !strings.Contains(out, "signed edge-1.2.0-linux-arm64: version 1.2.0, release 1, channel stable, arch linux/arm64") {
		t.Fatalf("sign: %d %s", code, out)
	}
	if out, code = runCLI(t, "release", "publish", "--keys", keys, "--release-online-keys", online, "--release-dir", repo); code == 0 {
		t.Fatalf("publish without the artifact succeeded: %s", out)
	} else if !strings.Contains(out, "neither in the repository nor given") {
		t.Fatalf("publish without the artifact: %s", out)
	}
	wrong := filepath.Join(d, "other")
	os.WriteFile(wrong, []byte("not it"), 0o644)
	if out, code = runCLI(t, "release", "publish", "--keys", keys, "--release-online-keys", online, "--release-dir", repo, wrong); code == 0 || !strings.Contains(out, "is not a signed target") {
		t.Fatalf("publish of an unsigned file: %d %s", code, out)
	}
	out, code = runCLI(t, "release", "publish", "--keys", keys, "--release-online-keys", online, "--release-dir", repo, art)
	if code != 0 || !strings.Contains(out, "new artifact edge-1.2.0-linux-arm64") {
		t.Fatalf("publish: %d %s", code, out)
	}
	out, code = runCLI(t, "release", "status", "--release-online-keys", online, "--release-dir", repo)
	if code != 0 || !strings.Contains(out, "target edge-1.2.0-linux-arm64: version 1.2.0, release 1") {
		t.Fatalf("status: %d %s", code, out)
	}
	// Rotate the root through the CLI; an edge provisioned with root 1
	// follows it.
	out, code = runCLI(t, "release", "keys", "rotate", "--keys", keys, "--release-online-keys", online, "--role", "root", "--new-keys", "2", "--threshold", "2")
	if code != 0 || !strings.Contains(out, "root version 2 signed by the old and the new root threshold") {
		t.Fatalf("rotate: %d %s", code, out)
	}
	if out, code = runCLI(t, "release", "publish", "--keys", keys, "--release-online-keys", online, "--release-dir", repo); code != 0 || !strings.Contains(out, "new root version 2") {
		t.Fatalf("publish root 2: %d %s", code, out)
	}
	root1, err := os.ReadFile(filepath.Join(keys, "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	tdir := filepath.Join(d, "trust")
	if err := firmware.Init(tdir, root1, durable.WriteFile); err != nil {
		t.Fatal(err)
	}
	tr, err := firmware.Open(tdir, &firmware.Options{WriteFile: durable.WriteFile})
	if err != nil {
		t.Fatal(err)
	}
	v, err := tr.Refresh(context.Background(), firmware.DirSource(repo))
	if err != nil {
		t.Fatal(err)
	}
	if v.Root.Version != 2 {
		t.Fatalf("edge on root %d", v.Root.Version)
	}
	if _, err := tr.Installable(v, "edge-1.2.0-linux-arm64", firmware.Running{Version: "1.0.0", Arch: "linux/arm64"}); err != nil {
		t.Fatal(err)
	}
	if out, code = runCLI(t, "release", "sign", art, "--keys", keys); code != 2 {
		t.Fatalf("sign without --version: %d %s", code, out)
	}
}
