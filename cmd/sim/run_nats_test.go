package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/pgtest"
)

// TestRunOverNATS runs `sim run --transport nats`: a store's edge uplinks
// to the cloud's embedded nats-server (JetStream) through its fault proxy,
// its uplink is cut for a while, and the verdict must pass as over MQTT.
func TestRunOverNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postgres, a cloud and an edge")
	}
	binDir := buildPrograms(t)
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	m := NewMain(stdout, stderr)
	err := m.ParseFlags([]string{"--transport", "nats", "--dir", t.TempDir(), "--bin-dir", binDir, "--database-url", pgtest.New(t),
		"--stores", "1", "--devices", "3", "--rate", "5", "--duration", "8s", "--faults", "cut:shop-1@2s+3s",
		"--drain-timeout", "90s", "--hold", "no", "--quiet"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	runErr := m.Run(ctx)
	if cerr := m.Close(); cerr != nil {
		t.Errorf("close: %v", cerr)
	}
	t.Logf("stdout:\n%s", stdout.String())
	if runErr != nil {
		t.Fatalf("run: %v\nstderr:\n%s", runErr, stderr.String())
	}
	if !strings.Contains(stdout.String(), "the edges uplink over NATS JetStream") {
		t.Error("the run did not say it uplinks over NATS")
	}
	v := m.Report.Verdict
	if !v.OK || v.Acked == 0 || v.Present != v.Acked {
		t.Fatalf("verdict %v: acked %d, present %d: %v", v.OK, v.Acked, v.Present, v.Discrepancies)
	}
	if len(m.Report.Faults) != 1 || m.Report.Faults[0].Error != "" {
		t.Errorf("faults: %+v", m.Report.Faults)
	}
}
