package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/simulator/fleet"
)

// runLoad runs `sim load` with args against a fresh database and returns
// the Main, failing the test when the run could not be carried out.
func runLoad(t *testing.T, binDir string, during func(ctx context.Context, clouds []*fleet.Cloud), args ...string) *LoadMain {
	t.Helper()
	dir := t.TempDir()
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	m := NewLoadMain(stdout, stderr)
	m.During = during
	base := []string{"--dir", dir, "--bin-dir", binDir, "--database-url", pgtest.New(t), "--progress-every", "2s",
		"--drain-timeout", "2m", "--ack-timeout", "5s"}
	if err := m.ParseFlags(append(base, args...)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	runErr := m.Run(ctx)
	if err := m.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	t.Logf("stdout:\n%s", stdout.String())
	if runErr != nil && m.Report == nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
		for _, f := range logs {
			b, _ := os.ReadFile(f)
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("--- tail of %s:\n%s", f, b)
		}
		t.Fatalf("sim load: %v\nstderr:\n%s", runErr, stderr.String())
	}
	return m
}

// checkComplete fails t unless every one of edges streams read back with
// exactly want records each, gapless and chained, with nothing in
// quarantine and no protocol violation.
func checkComplete(t *testing.T, m *LoadMain, edges, want int) {
	t.Helper()
	rep := m.Report
	if !rep.OK {
		t.Fatalf("the load run failed: %v", rep.Problems)
	}
	if rep.Check == nil || !rep.Check.OK {
		t.Fatalf("no read-back check, or it failed: %+v", rep.Check)
	}
	if rep.Check.Streams != edges || rep.Check.Records != edges*want {
		t.Errorf("read back %d streams with %d records, want %d with %d", rep.Check.Streams, rep.Check.Records, edges, edges*want)
	}
	if rep.Records != int64(edges*want) {
		t.Errorf("%d records receipted, want %d", rep.Records, edges*want)
	}
	if rep.Quarantined != 0 {
		t.Errorf("%d segments quarantined", rep.Quarantined)
	}
	for _, e := range rep.Edges {
		if e.Records != uint64(want) {
			t.Errorf("edge %s: receipted up to %d, want %d", e.Edge, e.Records, want)
		}
	}
}

// TestLoadShort is the short form of make bench-fleet's reconnect storm,
// for correctness only: 50 synthetic edges, each with a backlog cut into
// small segments so that eight are in flight at once (pipelined, out of
// order across the cloud's two workers), connect within two seconds over
// each transport; every stream must read back gapless, complete and
// without doubles, and every receipt must have verified.
func TestLoadShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postgres and a cloud")
	}
	binDir := buildPrograms(t)
	for _, transport := range []string{"mqtt", "nats"} {
		t.Run(transport, func(t *testing.T) {
			m := runLoad(t, binDir, nil, "--scenario", "short", "--transport", transport, "--edges", "50", "--backlog", "150",
				"--segment-records", "10", "--connect-within", "2s", "--ceiling=false")
			checkComplete(t, m, 50, 150)
			if m.Report.Segments < 50*15 {
				t.Errorf("%d segments published, want at least %d", m.Report.Segments, 50*15)
			}
		})
	}
}

// metric reads a counter from a cloud's /metrics.
func metric(ctx context.Context, api, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s/metrics", name, api)
}

// TestLoadTwoCloudsKillOne runs a reconnect storm against two cloud
// processes that share one database and one broker, and once both have
// committed records and a tenth of the storm is done, kills one with
// SIGKILL while the storm goes on. Over NATS they share a nats-server the
// run starts (one durable JetStream consumer, one hello queue group); over
// MQTT a private Mosquitto (one shared subscription; skipped without
// mosquitto on PATH). The survivor takes over what the dead one held
// (JetStream redelivers it; over MQTT the edges resend what got no
// receipt); every stream must read back gapless and complete, nothing
// doubled.
func TestLoadTwoCloudsKillOne(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postgres, a broker and two clouds")
	}
	binDir := buildPrograms(t)
	for _, tc := range []struct{ transport, broker string }{{"nats", "embedded"}, {"mqtt", "mosquitto"}} {
		t.Run(tc.transport, func(t *testing.T) {
			if tc.broker == "mosquitto" {
				if _, err := exec.LookPath("mosquitto"); err != nil {
					t.Skip("no mosquitto on PATH: the MQTT form needs a broker both clouds share")
				}
			}
			twoCloudsKillOne(t, binDir, tc.transport, tc.broker)
		})
	}
}

func twoCloudsKillOne(t *testing.T, binDir, transport, broker string) {
	const edges, backlog = 40, 400
	var mu sync.Mutex
	var killed string
	var before [2]float64
	during := func(ctx context.Context, clouds []*fleet.Cloud) {
		if len(clouds) != 2 {
			return
		}
		const name = "outpost_cloud_records_committed_total"
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			a, errA := metric(ctx, clouds[0].API, name)
			b, errB := metric(ctx, clouds[1].API, name)
			// Mid-storm: both have committed, a tenth of it is done.
			if errA != nil || errB != nil || a == 0 || b == 0 || a+b < edges*backlog/10 {
				continue
			}
			if a+b >= edges*backlog {
				mu.Lock()
				killed = fmt.Sprintf("too late: the storm was over (%v + %v records) before both clouds had committed", a, b)
				mu.Unlock()
				return
			}
			clouds[1].Kill()
			mu.Lock()
			killed, before = "yes", [2]float64{a, b}
			mu.Unlock()
			return
		}
	}
	args := []string{"--transport", transport, "--broker", broker}
	if transport == "nats" {
		args = append(args, "--cloud-args", "--nats-ack-wait 2s")
	}
	m := runLoad(t, binDir, during, append(args, "--clouds", "2", "--edges", fmt.Sprint(edges),
		"--backlog", fmt.Sprint(backlog), "--segment-records", "10", "--window", "4", "--connect-within", "1s",
		"--ceiling=false")...)
	mu.Lock()
	defer mu.Unlock()
	if killed != "yes" {
		t.Fatalf("cloud 2 was not killed mid-storm: %q", killed)
	}
	t.Logf("killed cloud 2 with SIGKILL after cloud 1 committed %v records and cloud 2 %v", before[0], before[1])
	checkComplete(t, m, edges, backlog)
}
