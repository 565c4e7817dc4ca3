package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/pgtest"
)

// TestDebugListenLoopbackOnly: --debug-listen takes a loopback address
// only, and says how to reach it from elsewhere.
func TestDebugListenLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:6060", "[::1]:6060", "localhost:0"} {
		m := NewMain(&bytes.Buffer{}, &bytes.Buffer{})
		if err := m.ParseFlags([]string{"--debug-listen", addr}); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
	for _, addr := range []string{":6060", "0.0.0.0:6060", "10.1.2.3:6060", "example.com:6060", "6060"} {
		var errb bytes.Buffer
		if code := Run([]string{"serve", "--debug-listen", addr}, &bytes.Buffer{}, &errb); code != 2 {
			t.Errorf("%s: exit %d, want 2\n%s", addr, code, errb.String())
			continue
		}
		if msg := errb.String(); !strings.Contains(msg, "--debug-listen") || !strings.Contains(msg, addr) {
			t.Errorf("%s: %q does not name the flag and the value", addr, msg)
		}
	}
}

// TestDebugListenServesProfiles: with --debug-listen the cloud serves a
// heap profile there, not on the API's listener, and not its command line
// (which may hold the database password); without it, nothing listens.
func TestDebugListenServesProfiles(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	m, done := startServe(t, ctx, logs, "--database-url", pgtest.New(t), "--migrate", "--log-level", "warn", "--debug-listen", "127.0.0.1:0")
	get := func(url string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	if m.debugAddr == "" {
		t.Fatal("no debug listener")
	}
	code, body := get("http://" + m.debugAddr + "/debug/pprof/heap?debug=1")
	if code != http.StatusOK || !bytes.Contains(body, []byte("heap profile")) {
		t.Fatalf("heap profile: %d %.200s", code, body)
	}
	if code, _ := get("http://" + m.debugAddr + "/debug/pprof/cmdline"); code == http.StatusOK {
		t.Error("/debug/pprof/cmdline is served: it would show --database-url")
	}
	if code, _ := get("http://" + m.APIAddr() + "/debug/pprof/heap"); code == http.StatusOK {
		t.Error("the API's listener serves profiles")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + m.debugAddr + "/debug/pprof/"); err == nil {
		t.Error("the debug listener still answers after Run returned")
	}
	m2 := NewMain(&bytes.Buffer{}, &bytes.Buffer{})
	if err := m2.ParseFlags(nil); err != nil || m2.Config.DebugListen != "" {
		t.Errorf("default --debug-listen %q (%v), want off", m2.Config.DebugListen, err)
	}
}
