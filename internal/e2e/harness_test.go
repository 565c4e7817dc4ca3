package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
)

var bin struct{ edge, cloud string }

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Every test here runs real programs for tens of seconds; -short
		// (make test-short) skips them all, make test runs them in full.
		fmt.Fprintln(os.Stderr, "e2e: -short: skipping the end-to-end suite (real edge, cloud and Postgres processes); make test runs it")
		pgtest.Main(m)
	}
	dir, err := os.MkdirTemp("", "outpost-e2e-bin-")
	if err != nil {
		panic(err)
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	for _, c := range []struct{ name, pkg string }{{"edge", "./cmd/edge"}, {"cloud", "./cmd/cloud"}} {
		out := filepath.Join(dir, c.name)
		cmd := exec.Command(goTool, "build", "-o", out, c.pkg)
		cmd.Dir = filepath.Join("..", "..")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build %s: %v\n%s", c.pkg, err, b)
			os.Exit(1)
		}
	}
	bin.edge, bin.cloud = filepath.Join(dir, "edge"), filepath.Join(dir, "cloud")
	defer os.RemoveAll(dir)
	pgtest.Main(m)
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a child process whose output goes to a log file.
type proc struct {
	t    testing.TB
	name string
	args []string
	env  []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "=== start %s %s\n", p.name, strings.Join(p.args, " "))
	cmd := exec.Command(p.name, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// stop sends SIGTERM and waits.
func (p *proc) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

func (p *proc) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool, logs ...*proc) {
	t.Helper()
	poll.Until(tailsOnFailure{t, logs}, timeout, what, cond)
}

// tailsOnFailure is a test that shows the tails of the processes' logs
// before it fails.
type tailsOnFailure struct {
	testing.TB
	logs []*proc
}

func (t tailsOnFailure) Fatalf(format string, args ...any) {
	t.TB.Helper()
	for _, p := range t.logs {
		t.Logf("--- %s log tail:\n%s", filepath.Base(p.name), p.tail())
	}
	t.TB.Fatalf(format, args...)
}

func httpOK(url string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out.String(), errb.String())
	}
	return strings.TrimSpace(out.String())
}

// site is one cloud and its edges, each a child process.
type site struct {
	t     testing.TB
	dir   string
	dbURL string
	cloud *proc
	api   string
	mqtt  string
	admin string
	edges map[string]*edgeProc
	o     siteOptions // the transports (nats_test.go)
	nats  string      // the NATS server edges use (host:port), when NATS is on
}

type edgeProc struct {
	*proc
	id, mqtt, http, status string
	secrets                map[string]string
}

func newSite(t *testing.T, cloudEnv ...string) *site { return newSiteOn(t, "", cloudEnv...) }

// newSiteOn is newSite with an external MQTT broker (host:port) between
// edges and cloud instead of the cloud's embedded one; "" for embedded.
func newSiteOn(t *testing.T, broker string, cloudEnv ...string) *site {
	return newSiteWith(t, siteOptions{broker: broker, env: cloudEnv})
}

// newSiteWith is newSite with the transports of o.
func newSiteWith(t testing.TB, o siteOptions) *site {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the end-to-end suite runs real programs; make test runs it")
	}
	s := &site{t: t, dir: t.TempDir(), dbURL: pgtest.New(t), edges: map[string]*edgeProc{}, o: o}
	s.api, s.mqtt = freePort(t), o.broker
	mqttArgs := []string{"--mqtt", "tcp://" + o.broker}
	if o.broker == "" {
		s.mqtt = freePort(t)
		mqttArgs = []string{"--mqtt-listen", s.mqtt}
	}
	mqttArgs = append(mqttArgs, s.natsCloudArgs()...)
	s.cloud = &proc{t: t, name: bin.cloud, log: filepath.Join(s.dir, "cloud.log"), env: o.env, args: append([]string{"serve",
		"--database-url", s.dbURL, "--migrate", "--data-dir", filepath.Join(s.dir, "cloud"),
		"--http", s.api, "--gap-wait", "500ms", "--log-level", "warn"}, mqttArgs...)}
	s.startCloud()
	t.Cleanup(func() {
		for _, e := range s.edges {
			e.kill()
		}
		s.cloud.kill()
	})
	s.admin = run(t, bin.cloud, "tokens", "create", "--admin", "--name", "e2e", "--database-url", s.dbURL, "--data-dir", filepath.Join(s.dir, "cloud"))
	return s
}

func (s *site) startCloud() {
	s.t.Helper()
	s.cloud.start()
	waitFor(s.t, "cloud ready", 60*time.Second, func() bool { return httpOK("http://" + s.api + "/readyz") }, s.cloud)
}

// addEdge enrolls an edge with a one-time token, adds devices, and starts it.
func (s *site) addEdge(id string, devices ...string) *edgeProc {
	t := s.t
	t.Helper()
	dir := filepath.Join(s.dir, id)
	tok := run(t, bin.cloud, "tokens", "create", "--edge", id, "--database-url", s.dbURL, "--data-dir", filepath.Join(s.dir, "cloud"))
	run(t, bin.edge, "enroll", "--cloud", "http://"+s.api, "--token", tok, "--data-dir", dir)
	e := &edgeProc{id: id, mqtt: freePort(t), http: freePort(t), status: freePort(t), secrets: map[string]string{}}
	for _, d := range devices {
		e.secrets[d] = run(t, bin.edge, "devices", "add", "--id", d, "--data-dir", dir)
	}
	e.proc = &proc{t: t, name: bin.edge, log: filepath.Join(s.dir, id+".log"), args: append([]string{"run", "--data-dir", dir,
		s.uplinkFlag(len(s.edges)), "--mqtt-listen", e.mqtt, "--http-listen", e.http, "--status-listen", e.status,
		"--ack-timeout", "3s", "--log-level", "warn"}, s.o.edgeArgs...)}
	s.edges[id] = e
	e.startEdge()
	return e
}

func (e *edgeProc) startEdge() {
	e.t.Helper()
	e.start()
	waitFor(e.t, "edge "+e.id+" up", 30*time.Second, func() bool { return httpOK("http://" + e.status + "/healthz") }, e.proc)
}

// edgeStatus reads the edge's /v1/status.
func (e *edgeProc) edgeStatus() (st struct {
	NextSeq  uint64 `json:"next_seq"`
	AckedHWM uint64 `json:"acked_hwm"`
	Backlog  uint64 `json:"backlog"`
}, ok bool) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + e.status + "/v1/status")
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st) == nil
}

var _ = context.Background

func splitHostPort(a string) (string, string, error) { return net.SplitHostPort(a) }

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
