// Package fleet runs Outpost's programs for the simulator, from outside:
// the cloud (`cloud serve`) and one edge (`edge run`, or `edge supervise`
// running it as an OTA release) per store, each a
// child process in its own process group, configured only through their
// command lines, and reached only over the network (the cloud's HTTP API,
// each edge's status endpoint). It enrolls edges with one-time tokens,
// adds device credentials, kills (SIGKILL) and restarts the programs, and
// reads their state for progress and drain checks.
//
// Ports are picked free on 127.0.0.1 and kept across restarts, so devices
// and edges reconnect to the same addresses.
package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// FreeAddr returns a free TCP address on 127.0.0.1.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Binaries are the programs the fleet runs.
type Binaries struct {
	Edge, Cloud string
}

// FindBinaries returns the edge and cloud programs: those in dir when it is
// given; else those next to the running executable (bin/ after make
// build); else it builds them from the module source around the working
// directory into buildDir with `go build`.
func FindBinaries(ctx context.Context, dir, buildDir string) (Binaries, string, error) {
	look := func(d string) (Binaries, bool) {
		b := Binaries{Edge: filepath.Join(d, "edge"), Cloud: filepath.Join(d, "cloud")}
		return b, isExec(b.Edge) && isExec(b.Cloud)
	}
	if dir != "" {
		b, ok := look(dir)
		if !ok {
			return b, "", fmt.Errorf("no edge and cloud programs in %s (make build puts them in bin/)", dir)
		}
		return b, "given with --bin-dir", nil
	}
	if exe, err := os.Executable(); err == nil {
		if b, ok := look(filepath.Dir(exe)); ok {
			return b, "next to " + exe, nil
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return Binaries{}, "", fmt.Errorf("no edge and cloud programs next to this one, and no source to build them from: %w (run make build, or give --bin-dir)", err)
	}
	if err := os.MkdirAll(buildDir, 0o755); err != nil {
		return Binaries{}, "", err
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if !isExec(goTool) {
		goTool = "go"
	}
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", buildDir+string(filepath.Separator), "./cmd/edge", "./cmd/cloud")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, "", fmt.Errorf("go build ./cmd/edge ./cmd/cloud in %s: %w\n%s", root, err, out)
	}
	b, _ := look(buildDir)
	return b, "built from " + root, nil
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// moduleRoot finds the Outpost module's directory at or above the working
// directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/outpost-edge/outpost\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("the working directory is not inside the Outpost source")
		}
		dir = parent
	}
}

// runTool runs a short command (enroll, tokens, devices) and returns its
// standard output, trimmed.
func runTool(ctx context.Context, env []string, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", filepath.Base(path), args[0], err, strings.TrimSpace(errb.String()+out.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// getJSON GETs url into v; token, when given, is sent as a bearer token.
func getJSON(ctx context.Context, url, token string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	if v == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// waitFor polls cond every 50ms until it holds, ctx ends, or timeout
// passes; then it returns an error naming what.
func waitFor(ctx context.Context, what string, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// ModuleRoot finds the Outpost module's source directory at or above the
// working directory (to build programs from).
func ModuleRoot() (string, error) { return moduleRoot() }

// GoTool returns the go command of the toolchain this program was built
// with when it is there, else "go" from PATH.
func GoTool() string {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if !isExec(goTool) {
		goTool = "go"
	}
	return goTool
}

// RunTool runs a short command of a program (edge or cloud) with env
// added to the environment, and returns its standard output, trimmed; the
// error carries its standard error.
func RunTool(ctx context.Context, env []string, path string, args ...string) (string, error) {
	return runTool(ctx, env, path, args...)
}
