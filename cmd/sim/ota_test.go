package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/pgtest"
)

// TestOTAScenario is `sim run --scenario ota` in short form: five edges
// under edge supervise on 1.0.0, each with a till and a scale sending
// throughout. 1.1.0 is rolled out in stages (1, 50%, 100%) and every edge
// must end on it, committed; then, with one edge offline, a 1.2.0 whose
// outbox stops committing late in its probation: the rollout must pause
// by itself, every edge that took 1.2.0 be back on 1.1.0 within 60 s,
// and the offline edge, which the rollout assigned 1.2.0 while it was
// away, back, install nothing from the paused rollout.
// The verifier's verdict on the devices' events must pass, and the
// ledger must hold the edges' own ota.* events: a commit of 1.1.0 per
// edge, a rollback per edge that took 1.2.0.
func TestOTAScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("builds five edge programs and rolls two releases out to five supervised edges, for about three minutes")
	}
	binDir := buildPrograms(t)
	dir := t.TempDir()
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	m := NewMain(stdout, stderr)
	err := m.ParseFlags([]string{"--scenario", "ota", "--bad", "late-health", "--dir", dir, "--bin-dir", binDir,
		"--database-url", pgtest.New(t), "--stores", "5", "--devices", "2", "--rate", "2", "--seed", "3",
		"--hold", "no", "--progress-every", "5s"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	runErr := m.Run(ctx)
	if cerr := m.Close(); cerr != nil {
		t.Errorf("close: %v", cerr)
	}
	t.Logf("stdout:\n%s", stdout.String())
	rep := m.Report
	if runErr != nil || rep == nil || !rep.Verdict.OK {
		for _, f := range []string{"cloud.log", "shop-1.log", "shop-5.log"} {
			b, _ := os.ReadFile(filepath.Join(dir, "logs", f))
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("--- tail of %s:\n%s", f, b)
		}
		t.Fatalf("run: %v\nstderr:\n%s", runErr, stderr.String())
	}
	v, res := rep.Verdict, rep.OTA
	if res == nil {
		t.Fatal("no OTA result in the report")
	}
	if v.Acked == 0 || v.Present != v.Acked {
		t.Errorf("acked %d, present %d", v.Acked, v.Present)
	}
	if res.Good == nil || res.Good.State != "completed" || res.Bad == nil || res.Bad.State != "paused" {
		t.Fatalf("rollouts: %+v, %+v", res.Good, res.Bad)
	}
	if len(res.Offline) != 1 {
		t.Errorf("offline %v, want one edge of five", res.Offline)
	}
	// The offline edge held an assignment of 1.2.0 that waited for it: the
	// pause withdrew it (so "installs nothing" proves something).
	if len(res.OfflineAssigned) != 1 {
		t.Errorf("offline edges assigned 1.2.0 while away: %v, want the one offline", res.OfflineAssigned)
	}
	if len(res.TookBad) == 0 || len(res.TookBad) >= 4 {
		t.Errorf("%d edges took 1.2.0, want at least one and not all four online", len(res.TookBad))
	}
	for _, e := range res.TookBad {
		if !e.Returned || time.Duration(e.Back) > time.Minute || !strings.Contains(e.Reason, "health") {
			t.Errorf("edge %s: back %v after %s, reason %q", e.Edge, e.Returned, e.Back, e.Reason)
		}
	}
	if n := v.EdgeEvents["ota.committed"]; n != 5 {
		t.Errorf("%d ota.committed in the ledger, want 5 (1.1.0 on every edge)", n)
	}
	if n := v.EdgeEvents["ota.rolled_back"]; n != len(res.TookBad) {
		t.Errorf("%d ota.rolled_back in the ledger, want %d", n, len(res.TookBad))
	}
	for _, want := range []string{"VERDICT: PASS", "ota       PASS", "paused by itself"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("no %q in the output", want)
		}
	}
}

// TestOTAScenarioFlags: the ota preset's values, and its flags' mistakes
// refused as usage errors that say what to give.
func TestOTAScenarioFlags(t *testing.T) {
	m := NewMain(io.Discard, io.Discard)
	if err := m.ParseFlags([]string{"--scenario", "ota", "--database-url", "postgres://x"}); err != nil {
		t.Fatal(err)
	}
	if o := m.Opts; o.Stores != 10 || o.Devices != 2 || o.Duration != 0 || o.Bad != "late-health" || o.Offline != 0.2 {
		t.Errorf("ota preset: %+v", o)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bad", "crash"}, "want panic, hang or late-health"},
		{[]string{"--offline", "1"}, "want a share between 0 and 1"},
		{[]string{"--stores", "2"}, "at least 3 stores"},
	} {
		err := NewMain(io.Discard, io.Discard).ParseFlags(append([]string{"--scenario", "ota"}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}
