//go:build unix

package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/firmware/firmwaretest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// buildEdge builds this repo's edge binary as version, with a fault switch.
func buildEdge(t *testing.T, version, fault string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH to build releases with")
	}
	out := filepath.Join(t.TempDir(), "edge")
	cmd := exec.Command(goBin, "build", "-o", out, "-ldflags", "-X main.Version="+version+" -X main.otaFault="+fault, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build edge %s: %v\n%s", version, err, b)
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestSuperviseRealReleases runs `edge supervise` over real edge binaries
// built from this repo, with the cloud unreachable throughout: a release
// that panics at start is rolled back to the adopted one, which keeps
// serving; a good release is then committed and the floor rises (the
// outage neither fails nor extends its probation).
func TestSuperviseRealReleases(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edge binaries and runs them")
	}
	good := buildEdge(t, "1.0.0", "")
	bad := buildEdge(t, "1.1.0", "panic")
	next := buildEdge(t, "1.2.0", "")

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	r := firmwaretest.New(t, firmwaretest.Options{Now: time.Now().UTC().Truncate(time.Second)})
	for _, rel := range []struct {
		version, path string
		counter       uint64
	}{{"1.1.0", bad, 2}, {"1.2.0", next, 3}} {
		b, err := os.ReadFile(rel.path)
		if err != nil {
			t.Fatal(err)
		}
		r.AddTarget("edge-"+rel.version, b, firmware.Custom{Version: rel.version, Release: rel.counter, Channel: "stable"})
	}
	r.Publish()
	root := filepath.Join(dir, "root.json")
	os.WriteFile(root, r.RootBytes(1), 0o644)
	for _, args := range [][]string{
		{"ota", "init", "--data-dir", data, "--root", root},
		{"ota", "adopt", "--data-dir", data, "--binary", good, "--version", "1.0.0"},
	} {
		if out, code := edgeCmd(t, args...); code != 0 {
			t.Fatalf("%v (%d): %s", args, code, out)
		}
	}
	install := func(target string) {
		t.Helper()
		bundle := filepath.Join(dir, target+".bundle")
		os.WriteFile(bundle, r.Bundle(target), 0o644)
		if out, code := edgeCmd(t, "ota", "install", "--data-dir", data, "--probation", "10m", bundle); code != 0 {
			t.Fatalf("install %s (%d): %s", target, code, out)
		}
	}
	status := func() otaStatusJSON {
		out, _ := edgeCmd(t, "ota", "status", "--data-dir", data, "--json")
		var st otaStatusJSON
		json.Unmarshal([]byte(out), &st)
		return st
	}
	addr := freeAddr(t)
	healthy := func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}

	install("edge-1.1.0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runSupervise(ctx, []string{"--data-dir", data, "--status-listen", addr, "--probation", "1s", "--ready-timeout", "20s", "--log-level", "warn",
			"--", "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-level", "warn",
			// The cloud is unreachable for the whole probation: it decides nothing.
			"--cloud-mqtt", "tcp://" + freeAddr(t), "--cloud-key", hex.EncodeToString(protocoltest.Signer(t, "cloud").Public())}, os.Stderr, os.Stderr)
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("supervise: %v", err)
			}
		}
	}
	t.Cleanup(stop)

	poll.Until(t, 60*time.Second, "1.1.0 rolled back and 1.0.0 serving", func() bool {
		st := status()
		_, bad := st.KnownBad["1.1.0"]
		return bad && st.Current == "1.0.0" && st.Pending == nil && healthy()
	})

	install("edge-1.2.0")
	poll.Until(t, 60*time.Second, "1.2.0 committed", func() bool {
		st := status()
		return st.Current == "1.2.0" && st.Pending == nil && st.Floor == 3 && healthy()
	})

	// Every step is in the outbox (ledger class, device _edge), moved there
	// by the running release from the supervisor's spool.
	spool := filepath.Join(data, "ota", "events.jsonl")
	// Eight events: verified, installed, started, rolled_back for 1.1.0;
	// verified, installed, started, committed for 1.2.0. The supervisor
	// spools "committed" just after the commit that the status above shows,
	// so wait for the records themselves, not only for an empty spool.
	poll.Until(t, 60*time.Second, "the eight ota events drained into the outbox", func() bool {
		if _, err := os.Stat(spool); !os.IsNotExist(err) {
			return false
		}
		resp, err := http.Get("http://" + addr + "/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st Status
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.NextSeq > 8
	})
	stop()
	out, code := edgeCmd(t, "outbox", "export", "--data-dir", data)
	if code != 0 {
		t.Fatalf("export (%d): %s", code, out)
	}
	for _, want := range []string{`"ota.verified"`, `"ota.installed"`, `"ota.started"`, `"ota.rolled_back"`, `"ota.committed"`, `exited before ready`} {
		if !strings.Contains(out, want) {
			t.Errorf("outbox has no %s:\n%s", want, out)
		}
	}
}

// otaRig is an adopted 1.0.0 gateway with releases to install, for the
// failure matrix's real-binary rows.
type otaRig struct {
	t          *testing.T
	dir, data  string
	addr       string
	good       string // the 1.0.0 binary
	r          *firmwaretest.Repo
	supervised chan error
	cancel     context.CancelFunc
}

func newOTARig(t *testing.T, releases ...rel) *otaRig {
	t.Helper()
	good := buildEdge(t, "1.0.0", "")
	g := &otaRig{t: t, dir: t.TempDir(), good: good}
	g.data = filepath.Join(g.dir, "data")
	g.r = firmwaretest.New(t, firmwaretest.Options{Now: time.Now().UTC().Truncate(time.Second)})
	for _, rel := range releases {
		b, err := os.ReadFile(buildEdge(t, rel.version, rel.fault))
		if err != nil {
			t.Fatal(err)
		}
		g.r.AddTarget("edge-"+rel.version, b, firmware.Custom{Version: rel.version, Release: rel.counter, Channel: "stable"})
	}
	g.r.Publish()
	root := filepath.Join(g.dir, "root.json")
	os.WriteFile(root, g.r.RootBytes(1), 0o644)
	for _, args := range [][]string{
		{"ota", "init", "--data-dir", g.data, "--root", root},
		{"ota", "adopt", "--data-dir", g.data, "--binary", good, "--version", "1.0.0"},
	} {
		if out, code := edgeCmd(t, args...); code != 0 {
			t.Fatalf("%v (%d): %s", args, code, out)
		}
	}
	g.addr = freeAddr(t)
	return g
}

func (g *otaRig) install(target string) {
	g.t.Helper()
	bundle := filepath.Join(g.dir, target+".bundle")
	os.WriteFile(bundle, g.r.Bundle(target), 0o644)
	if out, code := edgeCmd(g.t, "ota", "install", "--data-dir", g.data, "--probation", "10m", bundle); code != 0 {
		g.t.Fatalf("install %s (%d): %s", target, code, out)
	}
}

func (g *otaRig) status() otaStatusJSON {
	out, _ := edgeCmd(g.t, "ota", "status", "--data-dir", g.data, "--json")
	var st otaStatusJSON
	json.Unmarshal([]byte(out), &st)
	return st
}

func (g *otaRig) healthy() bool {
	resp, err := http.Get("http://" + g.addr + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// supervise starts `edge supervise` in-process, offline.
func (g *otaRig) supervise(probation, readyTimeout string) {
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.supervised = cancel, make(chan error, 1)
	go func() {
		g.supervised <- runSupervise(ctx, []string{"--data-dir", g.data, "--status-listen", g.addr, "--probation", probation, "--ready-timeout", readyTimeout, "--log-level", "warn",
			"--", "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-level", "warn"}, os.Stderr, os.Stderr)
	}()
	g.t.Cleanup(g.stop)
}

func (g *otaRig) stop() {
	if g.cancel != nil {
		g.cancel()
		if err := <-g.supervised; err != nil {
			g.t.Errorf("supervise: %v", err)
		}
		g.cancel = nil
	}
}

// rolledBack waits for version to be pinned known-bad with 1.0.0 serving,
// then for the spooled events to reach the outbox, and checks that the
// outbox has an ota.rolled_back whose reason contains why.
func (g *otaRig) rolledBack(version, why string) {
	g.t.Helper()
	// The bound: a bad release is off the gateway within 60 s.
	poll.Until(g.t, 60*time.Second, version+" rolled back and 1.0.0 serving", func() bool {
		st := g.status()
		_, bad := st.KnownBad[version]
		return bad && st.Current == "1.0.0" && st.Pending == nil && g.healthy()
	})
	spool := filepath.Join(g.data, "ota", "events.jsonl")
	poll.Until(g.t, 60*time.Second, "the ota events drained into the outbox", func() bool {
		_, err := os.Stat(spool)
		return os.IsNotExist(err)
	})
	g.stop()
	out, code := edgeCmd(g.t, "outbox", "export", "--data-dir", g.data)
	if code != 0 {
		g.t.Fatalf("export (%d): %s", code, out)
	}
	for _, want := range []string{`"ota.installed"`, `"ota.started"`, `"ota.rolled_back"`, why} {
		if !strings.Contains(out, want) {
			g.t.Errorf("outbox has no %s:\n%s", want, out)
		}
	}
}

// TestSuperviseRollsBackOutboxThatCannotCommit: a release whose outbox
// cannot commit (a real build whose outbox is closed at start; its intake
// and status page run) never passes the health gate and is rolled back.
func TestSuperviseRollsBackOutboxThatCannotCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edge binaries and runs them")
	}
	g := newOTARig(t, rel{"1.1.0", "nocommit", 2})
	g.install("edge-1.1.0")
	g.supervise("1s", "5s")
	g.rolledBack("1.1.0", "a probe write did not commit")
}

// rel is a release to build: a version, its fault switch, its counter.
type rel = struct {
	version, fault string
	counter        uint64
}

// TestSuperviseRollsBackHangBeforeReady: a real build that hangs before
// main never answers its health check and is rolled back once the ready
// timeout passes.
func TestSuperviseRollsBackHangBeforeReady(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edge binaries and runs them")
	}
	g := newOTARig(t, rel{"1.1.0", "hang", 2})
	g.install("edge-1.1.0")
	g.supervise("1s", "5s")
	g.rolledBack("1.1.0", "not ready within 5s")
}

// TestSuperviseRollsBackLateHealthFailure: a real build that passes its
// first health checks, then fails one (its outbox stops committing) late
// in a long probation window, is rolled back at that check, well before
// the window ends.
func TestSuperviseRollsBackLateHealthFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edge binaries and runs them")
	}
	g := newOTARig(t, rel{"1.1.0", "unhealthy-late", 2})
	g.install("edge-1.1.0")
	g.supervise("10m", "20s")
	g.rolledBack("1.1.0", "health check failed during probation")
}

// TestSuperviseRollsBackCleanEarlyExit: a real build that answers its
// first health checks, then exits with status 0 long before its 10m
// probation window ends, is rolled back: an exit during probation is a
// failure whatever its status.
func TestSuperviseRollsBackCleanEarlyExit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edge binaries and runs them")
	}
	g := newOTARig(t, rel{"1.1.0", "exit-early", 2})
	g.install("edge-1.1.0")
	g.supervise("10m", "20s")
	g.rolledBack("1.1.0", "exited during probation: exit status 0")
}

// superviseProcess runs `edge supervise` as a real process (the committed
// 1.0.0 binary) in a process group of its own, so that a "reboot" can
// SIGKILL it and its child together.
func (g *otaRig) superviseProcess(probation string) *exec.Cmd {
	g.t.Helper()
	cmd := exec.Command(g.good, "supervise", "--data-dir", g.data, "--status-listen", g.addr, "--probation", probation, "--ready-timeout", "20s", "--log-level", "warn",
		"--", "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { g.reboot(cmd) })
	return cmd
}

// reboot SIGKILLs the supervisor and its child at once, like a power cut.
func (g *otaRig) reboot(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	poll.Until(g.t, 30*time.Second, "the killed edge's status port is free", func() bool { return !g.healthy() })
}

// TestSuperviseSurvivesReboots: a "reboot" (SIGKILL of the supervisor and
// its child) during probation neither rolls back nor commits: the next
// boot runs the release on probation again, which then commits; a reboot
// after the commit boots the committed release, with no rollback.
func TestSuperviseSurvivesReboots(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edge binaries and runs them")
	}
	g := newOTARig(t, rel{"1.1.0", "", 2})
	g.install("edge-1.1.0")

	// Probation far longer than the test: it is killed while on probation.
	cmd := g.superviseProcess("10m")
	poll.Until(t, 60*time.Second, "1.1.0 on probation and healthy", func() bool {
		st := g.status()
		return st.Current == "1.1.0" && st.Pending != nil && g.healthy()
	})
	g.reboot(cmd)
	if st := g.status(); st.Current != "1.1.0" || st.Pending == nil || len(st.KnownBad) != 0 {
		t.Fatalf("after a reboot during probation: %+v", st)
	}

	cmd = g.superviseProcess("1s")
	poll.Until(t, 60*time.Second, "1.1.0 committed", func() bool {
		st := g.status()
		return st.Current == "1.1.0" && st.Pending == nil && st.Floor == 2 && g.healthy()
	})
	// The supervisor spools ota.committed just after the commit: wait for
	// the five events (verified, installed, started twice, committed) in
	// the outbox, so that the reboot below does not race it.
	poll.Until(t, 60*time.Second, "five ota events in the outbox", func() bool {
		resp, err := http.Get("http://" + g.addr + "/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st Status
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.NextSeq > 5
	})
	g.reboot(cmd)

	cmd = g.superviseProcess("1s")
	poll.Until(t, 60*time.Second, "1.1.0 serving after a reboot", func() bool { return g.healthy() })
	spool := filepath.Join(g.data, "ota", "events.jsonl")
	poll.Until(t, 60*time.Second, "the ota events drained into the outbox", func() bool {
		_, err := os.Stat(spool)
		return os.IsNotExist(err)
	})
	g.reboot(cmd)
	if st := g.status(); st.Current != "1.1.0" || st.Pending != nil || st.Floor != 2 || len(st.KnownBad) != 0 {
		t.Fatalf("after a reboot of the committed release: %+v", st)
	}
	out, code := edgeCmd(t, "outbox", "export", "--data-dir", g.data)
	if code != 0 {
		t.Fatalf("export (%d): %s", code, out)
	}
	if n := strings.Count(out, `"ota.started"`); n != 2 {
		t.Errorf("%d ota.started, want 2 (one per boot on probation):\n%s", n, out)
	}
	for _, want := range []string{`"ota.verified"`, `"ota.installed"`, `"ota.committed"`} {
		if !strings.Contains(out, want) {
			t.Errorf("outbox has no %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, `"ota.rolled_back"`) {
		t.Errorf("a reboot rolled back:\n%s", out)
	}
}
