package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/simulator"
	"github.com/outpost-edge/outpost/simulator/fault"
	"github.com/outpost-edge/outpost/simulator/oracle"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// buildPrograms builds the edge and cloud programs into a temporary
// directory and returns it.
func buildPrograms(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	cmd := exec.Command(goTool, "build", "-o", dir+string(filepath.Separator), "./cmd/edge", "./cmd/cloud")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build edge and cloud: %v\n%s", err, out)
	}
	return dir
}

// syncBuffer is an output that the run's goroutines share.
type syncBuffer struct {
	mu chan struct{}
	b  bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.String()
}

// TestFleetUnderFaults is the end-to-end test: two stores of four
// devices (tills and a sensor over MQTT, a scale over HTTP) send POS
// traffic through real edge and cloud programs while one uplink is cut,
// an edge is killed with SIGKILL and restarted, and the cloud is killed
// with SIGKILL and restarted; devices retransmit and publish twice on
// purpose, and one edge runs with a small telemetry quota. The verifier
// must find every acknowledged event in the ledger exactly once, every
// stream gapless with verified chains and signatures, and every Z report
// true.
func TestFleetUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postgres, a cloud and two edges for about a minute")
	}
	binDir := buildPrograms(t)
	dir := t.TempDir()
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	m := NewMain(stdout, stderr)
	schedule := "cut:shop-1@3s+6s,edge-kill:shop-2@6s+500ms,cloud-kill@11s+1s,slow:shop-2@13s+3s"
	err := m.ParseFlags([]string{"--dir", dir, "--bin-dir", binDir, "--database-url", pgtest.New(t),
		"--stores", "2", "--devices", "4", "--rate", "8", "--duration", "18s", "--seed", "7",
		"--faults", schedule, "--retransmit", "0.08", "--duplicate", "0.05", "--mqtt5", "0.5",
		"--quota-edges", "1", "--telemetry-quota", "8192",
		"--drain-timeout", "90s", "--hold", "no", "--progress-every", "2s"})
	if err != nil {
		t.Fatal(err)
	}
	// While the fleet still runs, `sim verify` reads the same ledger over
	// the API and, with the run's oracle file, must agree.
	verifyCode, verifyOut := -1, newSyncBuffer()
	m.AfterVerdict = func(ctx context.Context, r *simulator.Report) {
		verifyCode = Run([]string{"verify", "--cloud", r.API, "--token", r.AdminToken,
			"--oracle", filepath.Join(r.Dir, "oracle.jsonl")}, verifyOut, verifyOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	runErr := m.Run(ctx)
	if cerr := m.Close(); cerr != nil {
		t.Errorf("close: %v", cerr)
	}
	t.Logf("stdout:\n%s", stdout.String())
	if runErr != nil {
		for _, f := range []string{"cloud.log", "shop-1.log", "shop-2.log"} {
			b, _ := os.ReadFile(filepath.Join(dir, "logs", f))
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("--- tail of %s:\n%s", f, b)
		}
		t.Fatalf("run: %v\nstderr:\n%s", runErr, stderr.String())
	}
	rep := m.Report
	v := rep.Verdict
	if verifyCode != 0 || !strings.Contains(verifyOut.String(), "VERDICT: PASS") {
		t.Errorf("sim verify exited %d:\n%s", verifyCode, verifyOut.String())
	}
	if !v.OK || v.Failures() != 0 {
		t.Fatalf("verdict failed: %v %v", v.Counts, v.Discrepancies)
	}
	if v.Acked == 0 || v.Present != v.Acked || v.Acked != rep.Traffic.Acked {
		t.Errorf("acked %d, present %d, traffic acked %d", v.Acked, v.Present, rep.Traffic.Acked)
	}
	if rep.Traffic.Retransmits == 0 || rep.Traffic.Duplicates == 0 {
		t.Errorf("%d retransmits and %d duplicate publishes: the run did not test deduplication", rep.Traffic.Retransmits, rep.Traffic.Duplicates)
	}
	if d := rep.Traffic.Devices; d["MQTT 3.1.1"] == 0 || d["MQTT 5"] == 0 || d["HTTP"] == 0 {
		t.Errorf("devices by transport %v: want some of each", d)
	}
	if v.TillsExact != 4 || rep.Traffic.ZReports != 4 {
		t.Errorf("%d Z reports acknowledged, %d match the ledger; want 4", rep.Traffic.ZReports, v.TillsExact)
	}
	if v.Checkpoints == 0 || v.Streams != 2 {
		t.Errorf("%d streams, %d checkpoints verified", v.Streams, v.Checkpoints)
	}
	want, _ := fault.Parse(schedule)
	if len(rep.Faults) != len(want) {
		t.Fatalf("%d faults carried out, want %d: %+v", len(rep.Faults), len(want), rep.Faults)
	}
	kinds := map[fault.Kind]bool{}
	for _, f := range rep.Faults {
		if f.Error != "" {
			t.Errorf("fault %s: %s", f.Spec, f.Error)
		}
		kinds[f.Fault.Kind] = true
	}
	for _, k := range []fault.Kind{fault.Cut, fault.EdgeKill, fault.CloudKill} {
		if !kinds[k] {
			t.Errorf("no %s carried out", k)
		}
	}
	if rep.Cloud.Starts != 2 {
		t.Errorf("the cloud was started %d times, want 2 (once killed)", rep.Cloud.Starts)
	}
	if rep.Edges[1].Starts != 2 {
		t.Errorf("edge shop-2 was started %d times, want 2 (once killed)", rep.Edges[1].Starts)
	}

	// The oracle and the report stay in the run directory; the edges' and
	// the cloud's data do not.
	entries, err := oracle.Load(filepath.Join(dir, "oracle.jsonl"))
	if err != nil || len(entries) != rep.Traffic.Events {
		t.Errorf("oracle file: %d entries, %v; want %d", len(entries), err, rep.Traffic.Events)
	}
	if _, err := os.Stat(filepath.Join(dir, "report.json")); err != nil {
		t.Error(err)
	}
	for _, gone := range []string{"edges", "cloud"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); err == nil {
			t.Errorf("%s/ was left behind without --keep", gone)
		}
	}
	if !strings.Contains(stdout.String(), "VERDICT: PASS") {
		t.Error("no verdict printed")
	}
}
