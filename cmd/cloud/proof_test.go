package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/cloud/api"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/keyfile"
)

// TestProofEndToEnd: an edge's segments are committed by a real `cloud
// serve` (embedded broker, ingest, ledger on a private Postgres); a proof is
// downloaded from its API and checked offline by the outpost-verify binary
// and by `cloud verify-proof`, which accept it and refuse it with any one
// byte changed. It also reads GET /openapi.yaml and the live tail.
func TestProofEndToEnd(t *testing.T) {
	ctx := context.Background()
	url, conn, stream := mustEdgeDB(t, 30)
	token, err := ledger.New(conn, ledger.Options{}).CreateAPIToken(ctx, "auditor", api.RoleReader, "")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m, done := startServe(t, sctx, logs, "--database-url", url, "--log-level", "warn")
	edge := mustMQTTEdge(t, m, stream)
	edge.publish(1, 10)
	edge.publish(11, 30)
	edge.waitReceipted(30, logs)

	get := func(path string, header ...string) *http.Response {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+m.APIAddr()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := get(fmt.Sprintf("/v1/events/shop-1/%s/7/proof", stream.Stream.Epoch))
	file, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("proof: %d %v: %s", resp.StatusCode, err, file)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "proof.outpost-proof")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	cloudKey, err := keyfile.Load(filepath.Join(m.Config.DataDir, "cloud.key"))
	if err != nil {
		t.Fatal(err)
	}
	pin := hex.EncodeToString(cloudKey.Public().(ed25519.PublicKey))

	bin := buildVerifier(t)
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errb.String()
	}
	code, out, errs := run("--cloud-key", pin, path)
	if code != 0 || !strings.Contains(out, "OK: record seq 7 of edge shop-1 epoch "+stream.Stream.Epoch.String()) ||
		!strings.Contains(out, "in the checkpoint at seq 10") || !strings.Contains(out, "is the pinned key") {
		t.Fatalf("outpost-verify: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	var cout, cerr bytes.Buffer
	if code := Run([]string{"verify-proof", "--cloud-key", pin, path}, &cout, &cerr); code != 0 || cout.String() != out {
		t.Fatalf("cloud verify-proof: exit %d, output differs from outpost-verify's\n%s\nstderr: %s", code, cout.String(), cerr.String())
	}

	// Any one byte changed: refused, exit 1, naming the proof. (Every byte
	// of every bit is flipped in protocol/proof's tests; here a sample
	// through the binary: the first, the middle, the last.)
	for _, i := range []int{0, len(file) / 2, len(file) - 1} {
		bad := bytes.Clone(file)
		bad[i] ^= 0x01
		badPath := filepath.Join(dir, fmt.Sprintf("bad-%d", i))
		if err := os.WriteFile(badPath, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if code, out, errs := run("--cloud-key", pin, badPath); code != 1 || out != "" || !strings.Contains(errs, "the proof does not verify") {
			t.Fatalf("byte %d flipped: exit %d\nstdout: %s\nstderr: %s", i, code, out, errs)
		}
	}
	// Another cloud's key pinned: refused.
	other, _, _ := ed25519.GenerateKey(nil)
	if code, _, errs := run("--cloud-key", hex.EncodeToString(other), path); code != 1 || !strings.Contains(errs, "not made by the cloud you trust") {
		t.Fatalf("wrong pin: exit %d: %s", code, errs)
	}
	if code, _, errs := run(); code != 2 || !strings.Contains(errs, "give the proof file") {
		t.Fatalf("no file: exit %d: %s", code, errs)
	}

	// The spec served is the one in docs/.
	resp = get("/openapi.yaml")
	spec, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want, err := os.ReadFile(filepath.Join("..", "..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(spec, want) {
		t.Fatalf("GET /openapi.yaml: %d, %d bytes; want docs/openapi.yaml (%d bytes)", resp.StatusCode, len(spec), len(want))
	}

	// The live tail resumes after Last-Event-ID 25 with pos 26, and
	// shutting serve down ends it with a close event.
	resp = get("/v1/events/stream?edge=shop-1", "Last-Event-ID", "25")
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var lines []string
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "data: ") {
		lines = append(lines, sc.Text())
	}
	if !strings.HasPrefix(sc.Text(), `data: {"pos":26,`) {
		t.Fatalf("stream after pos 25 starts with %q (after %q)", sc.Text(), lines)
	}
	cancel()
	sawClose := false
	for sc.Scan() {
		if sc.Text() == "event: close" {
			sawClose = true
		}
	}
	if !sawClose {
		t.Error("shutting serve down did not send the stream a close event")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// buildVerifier builds cmd/outpost-verify into a temporary directory.
func buildVerifier(t *testing.T) string {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	out := filepath.Join(t.TempDir(), "outpost-verify")
	cmd := exec.Command(goTool, "build", "-o", out, "./cmd/outpost-verify")
	cmd.Dir = filepath.Join("..", "..")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build outpost-verify: %v\n%s", err, b)
	}
	return out
}
