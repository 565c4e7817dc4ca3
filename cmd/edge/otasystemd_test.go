//go:build linux

package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/poll"
)

// fakeSystemd plays what systemd does with deploy/systemd/
// outpost-edge-ota.service, for real edge binaries: before each start it
// runs ExecStartPre= (ota/committed/edge ota guard, which must succeed),
// then ExecStart= (ota/current/edge run) with $NOTIFY_SOCKET and the
// unit's OUTPOST_OTA_PROBATION, and whenever the release exits it starts
// again (Restart=always, with no start limit). It is not systemd: it
// proves the guard, the notify protocol and the release's own probation
// working together, as the unit wires them.
type fakeSystemd struct {
	t         *testing.T
	g         *otaRig
	probation string
	sock      *net.UnixConn
	sockPath  string

	mu      sync.Mutex
	running *exec.Cmd
	ready   []string // READY=1 per start, with the version current named
	starts  int

	cancel context.CancelFunc
	done   chan struct{}
}

func (g *otaRig) systemd(probation string) *fakeSystemd {
	t := g.t
	s := &fakeSystemd{t: t, g: g, probation: probation, done: make(chan struct{})}
	s.sockPath = filepath.Join(t.TempDir(), "notify.sock")
	var err error
	s.sock, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.notifications()
	go s.loop(ctx)
	t.Cleanup(s.stop)
	return s
}

func (s *fakeSystemd) notifications() {
	buf := make([]byte, 512)
	for {
		n, err := s.sock.Read(buf)
		if err != nil {
			return
		}
		if string(buf[:n]) == "READY=1" {
			cur, _ := (&otaFlags{dataDir: s.g.data}).layout().Current()
			s.mu.Lock()
			s.ready = append(s.ready, cur)
			s.mu.Unlock()
		}
	}
}

func (s *fakeSystemd) loop(ctx context.Context) {
	defer close(s.done)
	otaDir := filepath.Join(s.g.data, "ota")
	for ctx.Err() == nil {
		guard := exec.Command(filepath.Join(otaDir, "committed", "edge"), "ota", "guard", "--data-dir", s.g.data, "--max-attempts", "3")
		if out, err := guard.CombinedOutput(); err != nil {
			s.t.Errorf("ExecStartPre guard: %v\n%s", err, out)
			return
		}
		cmd := exec.Command(filepath.Join(otaDir, "current", "edge"), "run", "--data-dir", s.g.data, "--edge-id", "shop-1",
			"--mqtt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--status-listen", s.g.addr, "--log-level", "warn")
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+s.sockPath, "OUTPOST_OTA_PROBATION="+s.probation, "OUTPOST_OTA_DIR=")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			s.t.Errorf("ExecStart: %v", err)
			return
		}
		s.mu.Lock()
		s.running = cmd
		s.starts++
		s.mu.Unlock()
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
			return
		}
		// RestartSec=, shortened (the unit's is 2s).
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// restart is `systemctl restart`: SIGTERM to the release, which the loop
// starts again.
func (s *fakeSystemd) restart() {
	s.mu.Lock()
	cmd := s.running
	s.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
}

func (s *fakeSystemd) readyOn(version string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ready) > 0 && s.ready[len(s.ready)-1] == version
}

func (s *fakeSystemd) stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
		s.sock.Close()
		s.cancel = nil
	}
}

// TestSystemdUnitPathRealReleases runs real edge builds the way
// outpost-edge-ota.service does, with no supervisor process: a release
// that panics before main is counted by the committed release's guard at
// each restart and rolled back after three starts, within 60 s, to 1.0.0,
// which says READY=1; a good release installed by hand and started with a
// restart commits itself after its probation (the floor rises, committed
// names it, so the next guard is its binary), and each step is an ota.*
// event in the outbox.
func TestSystemdUnitPathRealReleases(t *testing.T) {
	if testing.Short() {
		t.Skip("builds edge binaries and runs them")
	}
	g := newOTARig(t, rel{"1.1.0", "panic", 2}, rel{"1.2.0", "", 3})
	g.install("edge-1.1.0")
	sd := g.systemd("1s")
	poll.Until(t, 60*time.Second, "1.1.0 rolled back by the guard and 1.0.0 ready", func() bool {
		st := g.status()
		_, bad := st.KnownBad["1.1.0"]
		return bad && st.Current == "1.0.0" && st.Pending == nil && sd.readyOn("1.0.0") && g.healthy()
	})
	if why := g.status().KnownBad["1.1.0"]; !strings.Contains(why, "3 starts") {
		t.Errorf("1.1.0 pinned with %q, want the guard's start count", why)
	}

	g.install("edge-1.2.0")
	sd.restart()
	poll.Until(t, 60*time.Second, "1.2.0 committed by its own probation", func() bool {
		st := g.status()
		return st.Current == "1.2.0" && st.Pending == nil && st.Floor == 3 && sd.readyOn("1.2.0") && g.healthy()
	})
	if c, _ := (&otaFlags{dataDir: g.data}).layout().Committed(); c != "1.2.0" {
		t.Fatalf("committed names %q, want 1.2.0 (the next guard)", c)
	}
	poll.Until(t, 60*time.Second, "the ota events drained into the outbox", func() bool {
		_, err := os.Stat(filepath.Join(g.data, "ota", "events.jsonl"))
		return os.IsNotExist(err)
	})
	sd.stop()
	out, code := edgeCmd(t, "outbox", "export", "--data-dir", g.data)
	if code != 0 {
		t.Fatalf("export (%d): %s", code, out)
	}
	for _, want := range []string{`"ota.installed"`, `"ota.rolled_back"`, `3 starts without a healthy probation`, `"ota.committed"`} {
		if !strings.Contains(out, want) {
			t.Errorf("outbox has no %s:\n%s", want, out)
		}
	}
}
