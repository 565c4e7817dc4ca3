package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/internal/poll"
)

// TestRunAppendsOTAEvents: `edge run` moves what the updater spooled into
// its outbox as ota.* ledger records of device _edge, once each.
func TestRunAppendsOTAEvents(t *testing.T) {
	dir := t.TempDir()
	sp := otaSpool(filepath.Join(dir, "ota"))
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if err := sp.Add(ota.Event{Kind: "ota.rolled_back", Version: "1.1.0", Release: 2, Reason: "exited before ready: exit status 2", At: at}); err != nil {
		t.Fatal(err)
	}
	m, logs, stop := startEdge(t, "--data-dir", dir, "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0",
		"--http-listen", "", "--status-listen", "127.0.0.1:0", "--log-level", "warn")
	poll.Until(t, 30*time.Second, "the spool drained", func() bool {
		_, err := os.Stat(sp.Path)
		return os.IsNotExist(err)
	})
	// /v1/status carries the updater's part once there is an ota dir.
	if st := m.Status(); st.OTA == nil || st.OTA.Trust == "ok" {
		t.Fatalf("status ota %+v, want one saying there is no trusted root", st.OTA)
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	out, code := edgeCmd(t, "outbox", "export", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("export (%d): %s", code, out)
	}
	var found int
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec["type"] == "ota.rolled_back" {
			found++
			if rec["device"] != "_edge" || rec["class"] != "ledger" || !strings.Contains(line, "exited before ready") {
				t.Fatalf("ota record %s", line)
			}
		}
	}
	if found != 1 {
		t.Fatalf("%d ota.rolled_back records, want 1:\n%s", found, out)
	}
}
