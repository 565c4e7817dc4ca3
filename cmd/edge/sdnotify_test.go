//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/poll"
)

// Under systemd (Type=notify, WatchdogSec=) edge run says READY=1 once it
// listens, then feeds the watchdog.
func TestRunNotifiesSystemd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "40000") // fed every 20ms
	t.Setenv("WATCHDOG_PID", "")

	dir := t.TempDir()
	var logs bytes.Buffer
	m := NewMain(&logs, &logs)
	if err := m.ParseFlags([]string{"--data-dir", dir, "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0",
		"--http-listen", "", "--status-listen", "127.0.0.1:0", "--log-level", "warn"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v\n%s", err, logs.String())
		}
		m.Close()
	}()
	var got []string
	buf := make([]byte, 256)
	for len(got) < 3 {
		ln.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("after %q: %v\n%s", got, err, logs.String())
		}
		got = append(got, string(buf[:n]))
	}
	if got[0] != "READY=1" || got[1] != "WATCHDOG=1" || got[2] != "WATCHDOG=1" {
		t.Fatalf("notifications %q, want READY=1 then WATCHDOG=1", got)
	}
	select {
	case <-m.Ready:
	default:
		t.Fatal("READY=1 before the edge was ready")
	}
}

// lockedBuffer is a bytes.Buffer a child process writes while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWatchdogFedOnlyWhileHealthy: a real edge process under a systemd
// notify socket with WatchdogSec= feeds the watchdog only from the full
// local health check (an outbox write round-trips, the intake listens). A
// build whose outbox stops committing after healthyProbes checks
// (otaFault=unhealthy-late) sends exactly that many WATCHDOG=1 and then
// none, however many checks fail after, so systemd kills and restarts it.
func TestWatchdogFedOnlyWhileHealthy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an edge binary and runs it")
	}
	bin := buildEdge(t, "1.0.0", "unhealthy-late")
	sock := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	cmd := exec.Command(bin, "run", "--data-dir", t.TempDir(), "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0", "--log-level", "warn")
	// WATCHDOG_USEC of 100ms: a check every 50ms. WATCHDOG_PID is left
	// empty (the child's pid is not known before it starts).
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=100000", "WATCHDOG_PID=", "OUTPOST_OTA_PROBATION=")
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()

	// Three failed checks after the healthy ones, as the child logs them.
	poll.Until(t, 60*time.Second, "the child logging three checks that did not feed the watchdog", func() bool {
		return strings.Count(logs.String(), "not feeding the systemd watchdog") >= 3
	})
	// Every datagram the child sent before that log line is already queued
	// on the socket: read them all.
	var got []string
	buf := make([]byte, 256)
	for {
		ln.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := ln.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(buf[:n]))
	}
	want := []string{"READY=1"}
	for range healthyProbes {
		want = append(want, "WATCHDOG=1")
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("notifications %q, want %q (fed only by the healthy checks)\n%s", got, want, logs.String())
	}
	if !strings.Contains(logs.String(), "outbox") {
		t.Errorf("the refusal to feed does not name the outbox:\n%s", logs.String())
	}
}
