package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/poll"
)

// `cloud audit` passes a clean ledger, and names the stream and seq of a
// deleted row and exits 1 once one is gone.
func TestAuditCommand(t *testing.T) {
	ctx := context.Background()
	url, conn, stream := mustEdgeDB(t, 12)
	var in []ledger.Input
	for _, seg := range stream.Segments(4) {
		in = append(in, ledger.Input{TopicEdge: seg.Edge, Segment: seg})
	}
	if _, err := ledger.New(conn, ledger.Options{}).Commit(ctx, in); err != nil {
		t.Fatal(err)
	}
	audit := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Run(append([]string{"audit", "--database-url", url, "--data-dir", t.TempDir()}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, errs := audit(); code != 0 || !strings.Contains(out, "audited 1 streams: 12 records, 3 checkpoints; 0 with faults") {
		t.Fatalf("clean ledger: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	if code, out, errs := audit("--edge", "shop-2"); code != 0 || !strings.Contains(out, "audited 0 streams") {
		t.Fatalf("--edge shop-2: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}

	if _, err := conn.Exec(ctx, `DELETE FROM ledger WHERE seq = 6`); err != nil {
		t.Fatal(err)
	}
	code, out, errs := audit()
	if want := "stream " + stream.Stream.String() + ": seq 6: missing row: "; code != 1 || !strings.Contains(out, want) ||
		!strings.Contains(errs, "the ledger audit found faults in 1 streams") {
		t.Fatalf("deleted seq 6: exit %d, want 1 and %q\nstdout: %s\nstderr: %s", code, want, out, errs)
	}
	code, out, _ = audit("--json")
	var rep auditReportJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v: %s", err, out)
	}
	if code != 1 || rep.OK || len(rep.Faults) != 1 || rep.Faults[0].Seq != 6 || rep.Faults[0].Kind != "missing_row" {
		t.Fatalf("--json: exit %d, %+v", code, rep)
	}
	// From the last checkpoint before now on, nothing is left to check.
	if code, out, errs := audit("--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); code != 0 {
		t.Fatalf("--since an hour ahead: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	if code, _, errs := audit("--since", "yesterday"); code != 2 || !strings.Contains(errs, "--since") {
		t.Fatalf("--since yesterday: exit %d, %q; want 2 naming --since", code, errs)
	}
}

// `cloud serve` audits at start-up (and then every --audit-every) and
// exports what it found: here a deleted row, so one stream with a fault.
func TestServeAuditMetrics(t *testing.T) {
	ctx := context.Background()
	url, conn, stream := mustEdgeDB(t, 8)
	seg := stream.Segment(1, 8)
	if _, err := ledger.New(conn, ledger.Options{}).Commit(ctx, []ledger.Input{{TopicEdge: seg.Edge, Segment: seg}}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM ledger WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m, done := startServe(t, sctx, logs, "--database-url", url, "--log-level", "warn", "--audit-every", "1h")
	metric := regexp.MustCompile(`(?m)^(outpost_cloud_audit_faults|outpost_cloud_audit_last_success_timestamp_seconds) (\S+)$`)
	poll.For(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + m.APIAddr() + "/metrics")
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		got := map[string]float64{}
		for _, mm := range metric.FindAllStringSubmatch(string(b), -1) {
			got[mm[1]], _ = strconv.ParseFloat(mm[2], 64)
		}
		if got["outpost_cloud_audit_last_success_timestamp_seconds"] <= 0 || got["outpost_cloud_audit_faults"] != 1 {
			return fmt.Errorf("audit metrics %v; want a last success and 1 fault", got)
		}
		return nil
	})
	if !strings.Contains(logs.String(), "seq 3") || !strings.Contains(logs.String(), "missing row") {
		t.Errorf("the fault is not logged with its seq and kind:\n%s", logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
