package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// TestRolloutsCLI drives a rollout through `cloud rollouts` and `cloud
// edges tag` against a `cloud serve` whose controller (--rollout-tick)
// reads a published release: the tagged edge of the release's arch is
// assigned its arch's target, the others are not, and pause, resume and
// abort act on it.
func TestRolloutsCLI(t *testing.T) {
	url, conn, _ := mustEdgeDB(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := t.TempDir()
	repo, online := publishTestRelease(t, d, "2.0.0")
	db := []string{"--database-url", url}
	ok := func(args ...string) string {
		t.Helper()
		code, out, errs := cloudRun(t, append(args, db...)...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		return out
	}
	fails := func(wantCode int, want string, args ...string) {
		t.Helper()
		code, _, errs := cloudRun(t, append(args, db...)...)
		if code != wantCode || !strings.Contains(errs, want) {
			t.Errorf("%s: exit %d, %q; want exit %d saying %q", strings.Join(args, " "), code, errs, wantCode, want)
		}
	}
	for _, id := range []string{"shop-2", "shop-3"} {
		ok("edges", "add", "--id", id, "--public-key", hex.EncodeToString(protocoltest.NewSigner(t).Public()))
	}
	for id, agent := range map[string]string{"shop-1": "outpost-edge/1.0.0 (linux/amd64)", "shop-2": "outpost-edge/1.0.0 (linux/arm64)", "shop-3": "outpost-edge/1.0.0 (linux/amd64)"} {
		if _, err := conn.Exec(ctx, `UPDATE edges SET agent = $2 WHERE id = $1`, id, agent); err != nil {
			t.Fatal(err)
		}
	}
	if out := ok("edges", "tag", "shop-1", "pilot", "east"); !strings.Contains(out, "east pilot") {
		t.Fatalf("edges tag: %q", out)
	}
	ok("edges", "tag", "shop-2", "pilot")
	ok("edges", "tag", "shop-1", "east", "--remove")
	fails(2, "an edge and at least one tag", "edges", "tag", "shop-1")
	fails(1, "not found", "edges", "tag", "shop-9", "pilot")
	fails(2, "--release 9.9.9", "rollouts", "create", "--release", "9.9.9", "--to", "all", "--release-dir", repo)
	fails(2, "--to", "rollouts", "create", "--release", "2.0.0")
	fails(2, "--stages", "rollouts", "create", "--release", "2.0.0", "--to", "all", "--stages", "0")
	fails(2, "needs the rollout's id", "rollouts", "status")

	logs := &syncBuffer{}
	m, _ := startServe(t, ctx, logs, "--database-url", url, "--log-level", "warn", "--release-dir", repo, "--release-online-keys", online,
		"--rollout-tick", "100ms")
	id := strings.TrimSpace(ok("rollouts", "create", "--release", "2.0.0", "--to", "tag:pilot", "--stages", "100%", "--max-failures", "1",
		"--silence", "1h", "--window", "00:00-23:59", "--release-dir", repo))
	var s rollout.Status
	poll.For(t, time.Minute, func() error {
		if err := json.Unmarshal([]byte(ok("rollouts", "status", id, "--json")), &s); err != nil {
			return err
		}
		if len(s.Edges) != 1 || s.Edges[0].State != rollout.EdgeAssigned {
			return fmt.Errorf("rollout %s: %+v", id, s)
		}
		return nil
	})
	if e := s.Edges[0]; e.Edge != "shop-1" || e.Target != "edge-2.0.0-linux-amd64" || s.Skipped != 1 || !strings.Contains(s.SkippedWhy, "no target for linux/arm64") {
		t.Fatalf("rollout %+v", s)
	}
	cs, err := command.List(ctx, conn, "shop-1")
	if err != nil || len(cs) != 1 || cs[0].Kind != protocol.CommandAssign || cs[0].Ref != id {
		t.Fatalf("shop-1's commands: %+v (%v)", cs, err)
	}
	if out := ok("rollouts", "status", id); !strings.Contains(out, "shop-1") || !strings.Contains(out, "STAGE") {
		t.Fatalf("status: %q", out)
	}
	if out := ok("rollouts", "list"); !strings.Contains(out, id) || !strings.Contains(out, "running") {
		t.Fatalf("list: %q", out)
	}

	fails(2, "no cloud key", "rollouts", "pause", id, "--data-dir", filepath.Join(d, "nowhere"))
	if out := ok("rollouts", "pause", "--data-dir", m.Config.DataDir, id, "--json"); !strings.Contains(out, `"state":"paused"`) {
		t.Fatalf("pause: %q", out)
	}
	if cs, _ := command.List(ctx, conn, "shop-1"); cs[0].CancelledAt == nil {
		t.Fatalf("shop-1's assignment not cancelled by the pause: %+v", cs)
	}
	if out := ok("rollouts", "resume", id); !strings.Contains(out, "running") {
		t.Fatalf("resume: %q", out)
	}
	poll.For(t, time.Minute, func() error {
		cs, err := command.List(ctx, conn, "shop-1")
		if err != nil || len(cs) != 2 || cs[1].Kind != protocol.CommandAssign || cs[1].CancelledAt != nil {
			return fmt.Errorf("shop-1's commands after the resume: %+v (%v)", cs, err)
		}
		return nil
	})
	if out := ok("rollouts", "abort", id, "--data-dir", m.Config.DataDir); !strings.Contains(out, "aborted by cli") {
		t.Fatalf("abort: %q", out)
	}
	fails(1, "finished", "rollouts", "resume", id)
	var list struct {
		Rollouts []rollout.Status `json:"rollouts"`
	}
	if err := json.Unmarshal([]byte(ok("rollouts", "list", "--json")), &list); err != nil || len(list.Rollouts) != 1 {
		t.Fatalf("list --json: %+v (%v)", list, err)
	}
	if out := ok("rollouts", "check"); !strings.Contains(out, "equal to the live rows") {
		t.Fatalf("check: %q", out)
	}
	if !slices.Contains(strings.Fields(ok("rollouts", "--help")), "rebuild") {
		t.Fatal("rollouts --help does not list rebuild")
	}
}

// TestRolloutTickFlag: --rollout-tick takes 0 (no controller) and refuses
// what is too fast.
func TestRolloutTickFlag(t *testing.T) {
	code, _, errs := cloudRun(t, "serve", "--rollout-tick", "1ms")
	if code != 2 || !strings.Contains(errs, "-rollout-tick") {
		t.Fatalf("--rollout-tick 1ms: exit %d: %s", code, errs)
	}
	m := NewMain(&syncBuffer{}, &syncBuffer{})
	if err := m.ParseFlags([]string{"--rollout-tick", "0"}); err != nil || m.Config.RolloutTick != 0 {
		t.Fatalf("--rollout-tick 0: %v, %v", err, m.Config.RolloutTick)
	}
	m = NewMain(&syncBuffer{}, &syncBuffer{})
	if err := m.ParseFlags(nil); err != nil || m.Config.RolloutTick != rollout.DefaultTick {
		t.Fatalf("default --rollout-tick: %v, %v", err, m.Config.RolloutTick)
	}
}

// publishTestRelease makes release keys under dir and publishes version
// of channel stable for linux/amd64 into a repository there; it returns
// the repository and the online keys, for cloud serve --release-dir
// --release-online-keys.
func publishTestRelease(t *testing.T, dir, version string) (repo, online string) {
	t.Helper()
	keys := filepath.Join(dir, "keys")
	online, repo = filepath.Join(dir, "online"), filepath.Join(dir, "repo")
	if out, code := runCLI(t, "release", "keys", "init", "--keys", keys, "--release-online-keys", online); code != 0 {
		t.Fatal(out)
	}
	art := filepath.Join(dir, "edge-linux-amd64")
	body := make([]byte, 4096)
	rand.Read(body)
	if err := os.WriteFile(art, body, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "release", "sign", art, "--keys", keys, "--version", version, "--channel", "stable"); code != 0 {
		t.Fatal(out)
	}
	if out, code := runCLI(t, "release", "publish", "--keys", keys, "--release-online-keys", online, "--release-dir", repo, art); code != 0 {
		t.Fatal(out)
	}
	return repo, online
}
