package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestServeInProcess drives `cloud serve` in-process: it starts on free
// ports, becomes ready, and stops cleanly when its context ends.
func TestServeInProcess(t *testing.T) {
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	m, done := startServe(t, ctx, logs, "--database-url", pgtest.New(t), "--migrate", "--log-level", "warn")
	poll.For(t, 15*time.Second, func() error {
		resp, err := http.Get("http://" + m.APIAddr() + "/readyz")
		if err != nil {
			return fmt.Errorf("/readyz: %v\n%s", err, logs.String())
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("/readyz %s\n%s", resp.Status, logs.String())
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run([]string{"serve", "--log-level", "loud", "--database-url", "postgres://x"}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2: %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "--log-level") {
		t.Fatalf("message %q does not name the flag", errb.String())
	}
	if code := Run([]string{"serve", "--data-dir", t.TempDir()}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--database-url") {
		t.Fatalf("no database: exit %d, %q", code, errb.String())
	}
	if code := Run([]string{"nope"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
}

// `cloud migrate` and `cloud serve` say how the ledger is partitioned and
// why (here, with no TimescaleDB preloaded, native and the reason).
func TestPartitioningSaid(t *testing.T) {
	url := pgtest.New(t)
	var out, errb bytes.Buffer
	if code := Run([]string{"migrate", "--database-url", url, "--data-dir", t.TempDir()}, &out, &errb); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "(ledger partitioning: native: ") && !strings.Contains(out.String(), "(ledger partitioning: timescaledb: ") {
		t.Fatalf("migrate says %q; want the partitioning and its reason", out.String())
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	_, done := startServe(t, ctx, logs, "--database-url", url, "--log-level", "info")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `msg="ledger partitioning" mode=`) || !strings.Contains(logs.String(), "why=") {
		t.Fatalf("serve's start-up log does not say the partitioning and why:\n%s", logs.String())
	}
}
