package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/internal/poll"
)

// TestServeRebuildsProjectionsAtStartUp: commits made with
// --projections=false are folded by the background rebuild of the next
// start with them on, while that start keeps committing and folding; the
// version of the definitions is brought up the same way; then `cloud
// projections check` finds the live rows equal to the ledger's fold, and
// says so, and finds a tampered row and exits 1.
func TestServeRebuildsProjectionsAtStartUp(t *testing.T) {
	ctx := context.Background()
	url, conn, stream := mustEdgeDB(t, 10)
	count := func(sql string) int64 {
		t.Helper()
		var n int64
		if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return n
	}
	serve := func(first, last uint64, args ...string) {
		logs := &syncBuffer{}
		runCtx, stop := context.WithCancel(ctx)
		m, done := startServe(t, runCtx, logs, append([]string{"--database-url", url, "--log-level", "info"}, args...)...)
		edge := mustMQTTEdge(t, m, stream)
		edge.publish(first, last)
		poll.Until(t, 30*time.Second, fmt.Sprintf("the receipt of seq %d", last), func() bool {
			hwm, _ := edge.receipted()
			return hwm == last
		})
		if len(args) == 0 {
			// AddN's bodies are not POS bodies: each committed sale is
			// an undecodable anomaly, so all of them show it was folded.
			poll.Until(t, 30*time.Second, "the background rebuild", func() bool {
				return count(`SELECT count(*) FROM anomalies WHERE kind = 'undecodable'`) == int64(last)-int64(last)/5 &&
					strings.Contains(logs.String(), "projection rebuilt and swapped in")
			})
			// What this process folded itself: the five records it committed.
			resp, err := http.Get("http://" + m.APIAddr() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, want := range []string{"outpost_cloud_projection_records_total 5", "outpost_cloud_projection_rebuilding 0",
				"outpost_cloud_projection_apply_seconds_count"} {
				if !strings.Contains(string(b), want) {
					t.Errorf("/metrics lacks %q", want)
				}
			}
		}
		stop()
		if err := <-done; err != nil {
			t.Fatalf("serve: %v\n%s", err, logs.String())
		}
		_ = m.Close()
	}
	serve(1, 5, "--projections=false")
	if n := count(`SELECT count(*) FROM projection_checkpoints`); n != 0 {
		t.Fatalf("%d checkpoints after serving without projections", n)
	}
	serve(6, 10)
	last, err := ledger.LastPos(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT last_pos FROM projection_checkpoints WHERE name = 'pos'`); n != last {
		t.Errorf("checkpoint at %d, ledger at %d", n, last)
	}

	var out bytes.Buffer
	if code := Run([]string{"projections", "check", "--database-url", url}, &out, &out); code != 0 || !strings.Contains(out.String(), "equal to the live rows") {
		t.Fatalf("check: exit %d\n%s", code, out.String())
	}
	if _, err := conn.Exec(ctx, `UPDATE projection_checkpoints SET version = 0; DELETE FROM anomalies WHERE pos = (SELECT max(pos) FROM anomalies)`); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := Run([]string{"projections", "check", "--database-url", url}, &out, &out); code != 1 || !strings.Contains(out.String(), "anomalies: 0 live rows and 1 rebuilt rows differ") {
		t.Fatalf("check of a tampered projection: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := Run([]string{"projections", "check", "--name", "sales"}, &out, &out); code != 2 || !strings.Contains(out.String(), `the one projection is "pos"`) {
		t.Fatalf("check --name sales: exit %d\n%s", code, out.String())
	}
	// The version: a start rebuilds and swaps the current one in.
	logs := &syncBuffer{}
	runCtx, stop := context.WithCancel(ctx)
	m, done := startServe(t, runCtx, logs, "--database-url", url, "--log-level", "info")
	poll.Until(t, 30*time.Second, "the rebuild of the old version", func() bool {
		return count(`SELECT version FROM projection_checkpoints WHERE name = 'pos'`) == projection.Version
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = m.Close()
	if !strings.Contains(logs.String(), "version 0 of the definitions") {
		t.Errorf("the start did not say why it rebuilt:\n%s", logs.String())
	}
	out.Reset()
	if code := Run([]string{"projections", "check", "--database-url", url}, &out, &out); code != 0 {
		t.Fatalf("check after the rebuild: exit %d\n%s", code, out.String())
	}
}
