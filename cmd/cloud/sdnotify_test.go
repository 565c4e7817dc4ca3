//go:build linux

package main

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/pgtest"
)

// Under systemd (Type=notify, WatchdogSec=, as deploy/systemd's unit says)
// cloud serve says READY=1 once it serves, feeds the watchdog while it is
// live, and says STOPPING=1 when it drains.
func TestServeNotifiesSystemd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "40000") // fed every 20ms
	t.Setenv("WATCHDOG_PID", "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	_, done := startServe(t, ctx, &logs, "--database-url", pgtest.New(t), "--migrate", "--log-level", "warn")
	read := func() string {
		t.Helper()
		buf := make([]byte, 256)
		ln.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("read the notify socket: %v\n%s", err, logs.String())
		}
		return string(buf[:n])
	}
	// startServe returned after Ready, and READY=1 follows Ready.
	if got := []string{read(), read(), read()}; got[0] != "READY=1" || got[1] != "WATCHDOG=1" || got[2] != "WATCHDOG=1" {
		t.Fatalf("notifications %q, want READY=1 then WATCHDOG=1", got)
	}
	cancel()
	for {
		if s := read(); s == "STOPPING=1" {
			break
		} else if s != "WATCHDOG=1" {
			t.Fatalf("notification %q while stopping", s)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, logs.String())
	}
}
