package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/poll"
)

func fakeTarget(t *testing.T, version string, release uint64) (string, firmware.Target) {
	t.Helper()
	body := []byte("#!/bin/sh\necho " + version + "\n")
	p := filepath.Join(t.TempDir(), "edge")
	os.WriteFile(p, body, 0o755)
	sum := sha256.Sum256(body)
	return p, firmware.Target{Name: "edge-" + version, Length: int64(len(body)), Hashes: map[string][]byte{"sha256": sum[:]},
		Custom: firmware.Custom{Version: version, Release: release, Channel: "stable"}}
}

// TestRunSelfProbation: under systemd (OUTPOST_OTA_PROBATION set) the
// release on probation decides its own commit from its local health, or
// rolls itself back and exits so that systemd starts the previous one.
func TestRunSelfProbation(t *testing.T) {
	old := Version
	Version = "1.1.0"
	t.Cleanup(func() { Version = old })
	t.Setenv("OUTPOST_OTA_PROBATION", "200ms")
	t.Setenv("OUTPOST_OTA_DIR", "")

	for _, tc := range []struct {
		name     string
		deadline time.Duration
		current  string
	}{
		{"healthy commits", time.Hour, "1.1.0"},
		{"deadline rolls back", -time.Minute, "1.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := &ota.Layout{Dir: filepath.Join(dir, "ota")}
			os.MkdirAll(filepath.Join(l.Dir, "trust"), 0o755)
			st, err := ota.OpenState(filepath.Join(l.Dir, "trust", "state.json"))
			if err != nil {
				t.Fatal(err)
			}
			src, tg := fakeTarget(t, "1.0.0", 1)
			if err := l.Install(src, tg, ota.InstallOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Commit(st); err != nil {
				t.Fatal(err)
			}
			src, tg = fakeTarget(t, "1.1.0", 2)
			if err := l.Install(src, tg, ota.InstallOptions{Probation: tc.deadline}); err != nil {
				t.Fatal(err)
			}

			var logs bytes.Buffer
			m := NewMain(&logs, &logs)
			if err := m.ParseFlags([]string{"--data-dir", dir, "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0",
				"--http-listen", "", "--status-listen", "127.0.0.1:0", "--log-level", "warn"}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			poll.Until(t, 30*time.Second, "the probation decided", func() bool {
				p, _ := l.Pending()
				return p == nil
			})
			cur, _ := l.Current()
			if cur != tc.current {
				t.Fatalf("current %s, want %s\n%s", cur, tc.current, logs.String())
			}
			if tc.current == "1.1.0" {
				if st.Floor() != 2 {
					t.Fatalf("floor %d after the commit", st.Floor())
				}
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("run: %v", err)
				}
			} else if err := <-done; !errors.Is(err, ota.ErrRolledBack) {
				t.Fatalf("run after a rollback: %v, want ErrRolledBack (so systemd restarts into 1.0.0)", err)
			}
			m.Close()
		})
	}
}
