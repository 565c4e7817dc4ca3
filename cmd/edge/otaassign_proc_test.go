//go:build unix

package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// startEdgeProcess runs a real `edge run` process (bin) with args; its log
// goes to a file named in failures.
func startEdgeProcess(t *testing.T, bin string, logName string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), logName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd := exec.Command(bin, append([]string{"run"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "OUTPOST_OTA_DIR=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s:\n%s", logName, b)
		}
	})
	return cmd
}

// TestAssignmentResumesAfterKill9: a real `edge run --ota-repo` process
// accepts an assignment while the repository is down (it keeps it and
// retries), is killed with SIGKILL before the install, and the next
// process installs it on probation from what it kept: the cloud sends
// nothing again (the hello says the command was accepted), and the
// ledger has one acceptance and one install, for the assignment.
func TestAssignmentResumesAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the edge and runs it")
	}
	bin := buildEdge(t, "1.0.0", "")
	g := newAssignGateway(t)
	cloud := startMQTTCmdCloud(t, g.cloud)
	var serving atomic.Bool
	files := http.FileServer(http.Dir(g.repo.Dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !serving.Load() {
			http.Error(w, "repository down for maintenance", http.StatusServiceUnavailable)
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	args := []string{"--data-dir", g.data, "--mqtt-listen", "127.0.0.1:0", "--http-listen", "", "--status-listen", freeAddr(t),
		"--cloud-mqtt", cloud.url, "--ota-repo", srv.URL, "--log-level", "info"}

	first := startEdgeProcess(t, bin, "edge-run-1.log", args...)
	poll.Until(t, 60*time.Second, "the first process's hello", func() bool { _, n := cloud.lastHello(); return n > 0 })
	seq := cloud.assign("shop-1", protocol.Assignment{Rollout: "r-1", Target: "edge-1.1.0", Version: "1.1.0"})
	a := g.waitAssigned(t, seq, ota.AssignWaiting)
	poll.Until(t, 60*time.Second, "a retry after the repository's 503", func() bool {
		a = g.assigned(t)
		return strings.Contains(a.Reason, "retrying") && strings.Contains(a.Reason, "503")
	})
	gate := &ota.CommandGate{Path: filepath.Join(g.data, "ota", "commands.json")}
	poll.Until(t, 60*time.Second, "the command accepted", func() bool { n, _ := gate.Last(); return n == seq })
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	if cur, _ := (&ota.Layout{Dir: filepath.Join(g.data, "ota")}).Current(); cur != "1.0.0" {
		t.Fatalf("current %s before the restart", cur)
	}
	sent := cloud.sent.Load()
	_, hellos := cloud.lastHello()

	serving.Store(true)
	second := startEdgeProcess(t, bin, "edge-run-2.log", args...)
	g.waitAssigned(t, seq, ota.AssignInstalled)
	l := &ota.Layout{Dir: filepath.Join(g.data, "ota")}
	if cur, _ := l.Current(); cur != "1.1.0" {
		t.Fatalf("current %s after the restart, want 1.1.0", cur)
	}
	if p, _ := l.Pending(); p == nil || p.Version != "1.1.0" {
		t.Fatalf("pending %+v, want 1.1.0 on probation", p)
	}
	poll.Until(t, 60*time.Second, "a hello from the second process", func() bool { _, n := cloud.lastHello(); return n > hellos })
	if h, _ := cloud.lastHello(); h.Cmd != seq || cloud.sent.Load() != sent {
		t.Fatalf("after the restart: hello cmd %d (want %d), %d commands sent again (want 0)", h.Cmd, seq, cloud.sent.Load()-sent)
	}
	poll.Until(t, 60*time.Second, "the spool drained", func() bool {
		_, err := os.Stat(filepath.Join(g.data, "ota", "events.jsonl"))
		return os.IsNotExist(err)
	})
	_ = second.Process.Signal(syscall.SIGTERM)
	if err := second.Wait(); err != nil {
		t.Fatalf("edge run after SIGTERM: %v", err)
	}
	out := exportOutbox(t, g.data)
	for kind, n := range map[string]int{`"ota.command_accepted"`: 1, `"ota.installed"`: 1, `"ota.refused"`: 0} {
		if got := strings.Count(out, kind); got != n {
			t.Errorf("%d %s in the outbox, want %d:\n%s", got, kind, n, out)
		}
	}
	if !strings.Contains(out, "assignment r-1 (command 1)") {
		t.Errorf("the install does not name its assignment:\n%s", out)
	}
}

// TestSupervisedAssignmentCommits is the whole edge side of a rollout with
// real binaries: `edge supervise` runs a real 1.0.0 `edge run --ota-repo`,
// the cloud assigns 1.1.0 (a real build, signed for this arch), 1.0.0
// installs it, the supervisor runs it on probation and commits it: the
// floor rises, and the assignment says installed.
func TestSupervisedAssignmentCommits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edge binaries and runs them")
	}
	good := buildEdge(t, "1.0.0", "")
	nextBin, err := os.ReadFile(buildEdge(t, "1.1.0", ""))
	if err != nil {
		t.Fatal(err)
	}
	g := newAssignGatewayWith(t, good, nextBin)
	cloud := startMQTTCmdCloud(t, g.cloud)
	srv := httptest.NewServer(http.FileServer(http.Dir(g.repo.Dir)))
	t.Cleanup(srv.Close)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runSupervise(ctx, []string{"--data-dir", g.data, "--status-listen", addr, "--probation", "3s", "--log-level", "warn",
			"--", "--mqtt-listen", "127.0.0.1:0", "--http-listen", "", "--log-level", "warn", "--cloud-mqtt", cloud.url, "--ota-repo", srv.URL}, os.Stderr, os.Stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("supervise: %v", err)
		}
	})
	poll.Until(t, 60*time.Second, "1.0.0's hello", func() bool { _, n := cloud.lastHello(); return n > 0 })
	seq := cloud.assign("shop-1", protocol.Assignment{Rollout: "r-1", Target: "edge-1.1.0", Version: "1.1.0"})
	g.waitAssigned(t, seq, ota.AssignInstalled)
	poll.Until(t, 90*time.Second, "1.1.0 committed", func() bool {
		out, _ := edgeCmd(t, "ota", "status", "--data-dir", g.data, "--json")
		return strings.Contains(out, `"current": "1.1.0"`) && !strings.Contains(out, `"pending"`) && strings.Contains(out, `"floor": 2`)
	})
	// Assigned the release it runs, committed: it says so (ota.committed),
	// rather than leaving the rollout waiting.
	again := cloud.assign("shop-1", protocol.Assignment{Rollout: "r-2", Target: "edge-1.1.0", Version: "1.1.0"})
	if a := g.waitAssigned(t, again, ota.AssignInstalled); !strings.Contains(a.Reason, "is the committed release") {
		t.Fatalf("assignment of the committed release: %+v", a)
	}
	// 1.1.0's own edge run reports the assignment.
	poll.For(t, 60*time.Second, func() error {
		so, err := statusOTA(addr)
		if err != nil {
			return err
		}
		if so == nil || so.Assignment == nil || so.Assignment.State != ota.AssignInstalled || so.Current != "1.1.0" {
			return fmt.Errorf("status ota %+v", so)
		}
		return nil
	})
}
