package e2e_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEdgeShutdownAndOfflineTools stops an edge gracefully (SIGTERM) while a
// backlog waits for an unreachable cloud, and then checks its outbox with the
// offline tools: verify, inspect and export.
func TestEdgeShutdownAndOfflineTools(t *testing.T) {
	s := newSite(t)
	e := s.addEdge("e1", "till-1")
	o := newOracle()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := httpDevice(ctx, e, "till-1", 40, o, 0); err != nil {
		t.Fatal(err)
	}
	s.drained(30 * time.Second)
	s.cloud.kill() // the uplink goes down; the shop keeps selling
	if err := httpDevice(ctx, e, "till-1", 25, o, 40); err != nil {
		t.Fatal(err)
	}
	e.stop()
	if code := e.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("edge exited with %d after SIGTERM:\n%s", code, e.tail())
	}
	dir := filepath.Join(s.dir, "e1")
	out := run(t, bin.edge, "outbox", "verify", "--data-dir", dir)
	if !strings.Contains(out, "ok: chain and checkpoints verify") {
		t.Fatalf("verify: %s", out)
	}
	var info struct {
		Head, HWM uint64
		Backlog   uint64
	}
	if err := json.Unmarshal([]byte(run(t, bin.edge, "outbox", "inspect", "--json", "--data-dir", dir)), &info); err != nil {
		t.Fatal(err)
	}
	if info.Head != 65 || info.HWM != 40 || info.Backlog != 25 {
		t.Fatalf("inspect: %+v; want head 65, acknowledged 40, backlog 25", info)
	}
	lines := strings.Split(run(t, bin.edge, "outbox", "export", "--from", "41", "--to", "65", "--data-dir", dir), "\n")
	if len(lines) != 25 {
		t.Fatalf("export printed %d lines, want 25", len(lines))
	}
	var rec struct {
		Seq    uint64 `json:"seq"`
		Device string `json:"device"`
		ID     string `json:"id"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec.Seq != 41 || rec.Device != "till-1" || rec.ID != "till-1-00040" {
		t.Fatalf("first exported record %s (%v)", lines[0], err)
	}
}
