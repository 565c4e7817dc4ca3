package main

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeReleaseReproducible builds the edge twice with scripts/release.sh
// (what make release runs) into two directories and compares the bytes;
// checks the build settings and stamps, that no local path is left in the
// binary, and that cloud release sign reads the arch from the file name.
// Skipped with -short (a cold build cache compiles the tree for the
// release's settings once).
func TestMakeReleaseReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the edge twice")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go on PATH")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	build := func(out string) []byte {
		t.Helper()
		cmd := exec.Command("sh", "scripts/release.sh")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GO="+goBin, "VERSION=3.1.4", "COMMIT=0123456789abcdef", "ARCHES=linux/amd64", "OUT="+out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("release.sh: %v\n%s", err, b)
		}
		b, err := os.ReadFile(filepath.Join(out, "edge-3.1.4-linux-amd64"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	d := t.TempDir()
	a, b := build(filepath.Join(d, "a")), build(filepath.Join(d, "b"))
	if sha256.Sum256(a) != sha256.Sum256(b) {
		t.Fatal("two builds of the same commit differ")
	}
	if bytes.Contains(a, []byte(root)) {
		t.Fatalf("the binary holds the build's path %s (-trimpath missing?)", root)
	}
	for _, stamp := range []string{"3.1.4", "0123456789abcdef"} {
		if !bytes.Contains(a, []byte(stamp)) {
			t.Fatalf("the binary does not hold its stamp %q", stamp)
		}
	}
	info, err := exec.Command(goBin, "version", "-m", filepath.Join(d, "a", "edge-3.1.4-linux-amd64")).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %v\n%s", err, info)
	}
	for _, want := range []string{"-trimpath=true", "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"} {
		if !strings.Contains(string(info), want) {
			t.Errorf("build info lacks %s:\n%s", want, info)
		}
	}
	if strings.Contains(string(info), "vcs.") {
		t.Errorf("build info has VCS stamps (-buildvcs=false missing?):\n%s", info)
	}
	sums, err := os.ReadFile(filepath.Join(d, "a", "SHA256SUMS"))
	if err != nil || !strings.Contains(string(sums), "edge-3.1.4-linux-amd64") {
		t.Fatalf("SHA256SUMS: %q %v", sums, err)
	}
	if got := archFromName("edge-3.1.4-linux-arm-v7"); got != "linux/arm/v7" {
		t.Fatalf("arch of edge-3.1.4-linux-arm-v7: %q", got)
	}
}
