package fleet_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/simulator/fleet"
)

// gone reports whether process pid has exited (a zombie counts as gone).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) != nil
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

// TestProcKillTakesTheGroup starts a shell that starts a child of its own,
// kills the shell with SIGKILL, and checks that the grandchild went too,
// then restarts it and stops it gracefully.
func TestProcKillTakesTheGroup(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	log := filepath.Join(t.TempDir(), "p.log")
	p := &fleet.Proc{Name: "sh", Path: "/bin/sh", Args: []string{"-c", `sleep 300 & echo "child $!"; wait`}, Log: log}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err == nil {
		t.Error("a second Start while running did not fail")
	}
	var child int
	waitFor(t, "the grandchild's pid in the log", func() bool {
		for _, line := range strings.Split(p.Tail(4096), "\n") {
			if s, ok := strings.CutPrefix(line, "child "); ok {
				child, _ = strconv.Atoi(s)
			}
		}
		return child > 0
	})
	if !p.Running() || p.Pid() == 0 {
		t.Fatal("not running")
	}
	p.Kill()
	if p.Running() {
		t.Error("still running after Kill")
	}
	waitFor(t, "the grandchild to die with its group", func() bool { return gone(child) })

	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	p.Stop(5 * time.Second)
	if p.Running() || p.Starts() != 2 {
		t.Errorf("running %v after Stop, %d starts", p.Running(), p.Starts())
	}
	if tail := p.Tail(4096); strings.Count(tail, "=== ") != 4 {
		t.Errorf("log does not record two starts and two exits:\n%s", tail)
	}
}

func TestHTTPSenderOutcomes(t *testing.T) {
	var mu sync.Mutex // the handler runs on the server's goroutines
	status := http.StatusCreated
	var user, ct string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		user, _, _ = r.BasicAuth()
		ct = r.Header.Get("Content-Type")
		w.WriteHeader(status)
	}))
	defer srv.Close()
	s := fleet.NewHTTPSender(strings.TrimPrefix(srv.URL, "http://"), "scale-1", "secret")
	defer s.Close()
	for _, tc := range []struct {
		status int
		want   fleet.Outcome
	}{
		{http.StatusCreated, fleet.Acked},
		{http.StatusOK, fleet.Acked},
		{http.StatusInsufficientStorage, fleet.Refused},
		{http.StatusTooManyRequests, fleet.Refused},
		{http.StatusServiceUnavailable, fleet.Refused},
		{http.StatusInternalServerError, fleet.NoAnswer},
		{http.StatusBadRequest, fleet.Invalid},
	} {
		mu.Lock()
		status = tc.status
		mu.Unlock()
		if got := s.Send(context.Background(), []byte(`{"id":"a"}`), 2, 5*time.Second); got != tc.want {
			t.Errorf("status %d: %v, want %v", tc.status, got, tc.want)
		}
	}
	mu.Lock()
	if user != "scale-1" || ct != "application/json" {
		t.Errorf("user %q, content type %q", user, ct)
	}
	mu.Unlock()
	if s.Refusals() != 2*5 {
		t.Errorf("%d refusals counted, want 10", s.Refusals())
	}
	srv.Close()
	if got := s.Send(context.Background(), []byte(`{}`), 1, time.Second); got != fleet.NoAnswer {
		t.Errorf("no server: %v", got)
	}
}

// TestSupervisedEdgeArgs: a supervised edge runs `edge supervise` with
// its probation flags, and after "--" the flags of `edge run` that the
// supervisor passes to each release (not "run" itself, which the
// supervisor adds).
func TestSupervisedEdgeArgs(t *testing.T) {
	e, err := fleet.NewEdge(fleet.EdgeOptions{ID: "shop-1", Binary: "/bin/edge", Dir: t.TempDir(), LogDir: t.TempDir(),
		CloudMQTT: "127.0.0.1:1", Args: []string{"--ota-repo", "http://cloud/v1/ota/repo"},
		Supervise: &fleet.Supervise{Probation: 7 * time.Second, MaxAttempts: 2}})
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(e.Proc.Args, " ")
	sup, run, ok := strings.Cut(args, " -- ")
	if !ok || !strings.HasPrefix(sup, "supervise --data-dir ") || !strings.Contains(sup, "--status-listen "+e.Status) ||
		!strings.Contains(sup, "--probation 7s") || !strings.Contains(sup, "--ready-timeout 20s") || !strings.Contains(sup, "--max-attempts 2") {
		t.Errorf("supervise flags: %q", sup)
	}
	if strings.HasPrefix(run, "run") || !strings.Contains(run, "--cloud-mqtt tcp://127.0.0.1:1") || !strings.Contains(run, "--mqtt-listen "+e.MQTT) ||
		!strings.HasSuffix(run, "--ota-repo http://cloud/v1/ota/repo") {
		t.Errorf("edge run flags: %q", run)
	}
}
