package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/poll"
)

// TestServeFollowsTheLedger: with --projections-follow, serve commits
// without folding and its follower folds every commit behind it, by
// itself: the checkpoint reaches the ledger's end and `cloud projections
// check` finds the live rows equal to the ledger's fold.
func TestServeFollowsTheLedger(t *testing.T) {
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
	logs := &syncBuffer{}
	runCtx, stop := context.WithCancel(ctx)
	m, done := startServe(t, runCtx, logs, "--database-url", url, "--log-level", "info", "--projections-follow")
	edge := mustMQTTEdge(t, m, stream)
	edge.publish(1, 10)
	poll.Until(t, 30*time.Second, "the receipt of seq 10", func() bool {
		hwm, _ := edge.receipted()
		return hwm == 10
	})
	last, err := ledger.LastPos(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	// AddN's bodies are not POS bodies: each committed sale is an
	// undecodable anomaly, so all of them show the follower folded it.
	poll.Until(t, 30*time.Second, fmt.Sprintf("the follower folded through position %d", last), func() bool {
		return count(`SELECT coalesce(max(last_pos), 0) FROM projection_checkpoints WHERE name = 'pos'`) == last &&
			count(`SELECT count(*) FROM anomalies WHERE kind = 'undecodable'`) == 10-10/5
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, logs.String())
	}
	_ = m.Close()
	if strings.Contains(logs.String(), "rebuilding the projection in the background") {
		t.Errorf("serve rebuilt the projection at start-up; the follower folds what it lacks:\n%s", logs.String())
	}
	var out bytes.Buffer
	if code := Run([]string{"projections", "check", "--database-url", url}, &out, &out); code != 0 || !strings.Contains(out.String(), "equal to the live rows") {
		t.Fatalf("check: exit %d\n%s", code, out.String())
	}
}
