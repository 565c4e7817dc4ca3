//go:build linux

package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"
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
