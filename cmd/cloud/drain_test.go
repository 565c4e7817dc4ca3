package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// A SIGTERM while a commit is in progress lets the commit finish and its
// receipt reach the edge before serve stops (when --drain-timeout allows):
// no commit is left without its receipt. The commit is held in the
// database (a lock the test holds on the edge's row) until serve has begun
// to shut down, so the test does not depend on timing.
func TestShutdownDrainsIngest(t *testing.T) {
	ctx := context.Background()
	url, conn, stream := mustEdgeDB(t, 10)
	logs := &syncBuffer{}
	runCtx, sigterm := context.WithCancel(ctx)
	defer sigterm()
	m, done := startServe(t, runCtx, logs, "--database-url", url, "--drain-timeout", "2m", "--log-level", "info")
	edge := mustMQTTEdge(t, m, stream)

	// Hold the edge's row (after the login, which spends a broker-token
	// counter on it): the commit's recheck of the key (FOR SHARE) waits
	// for it.
	hold, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `SELECT 1 FROM edges WHERE id = 'shop-1' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	edge.publish(1, 5)
	poll.Until(t, 30*time.Second, "the commit waiting on the held row", func() bool {
		var n int
		_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		return n > 0
	})
	sigterm() // what the first SIGTERM does
	poll.Until(t, 30*time.Second, "serve to begin its drain", func() bool {
		return strings.Contains(logs.String(), "shutting down: draining")
	})
	select {
	case err := <-done:
		t.Fatalf("serve returned (%v) with a commit in hand\n%s", err, logs.String())
	default:
	}
	edge.publish(6, 10) // arrives while draining: must not be committed without a receipt either
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v\n%s", err, logs.String())
	}

	var hwm int64
	if err := conn.QueryRow(ctx, `SELECT hwm FROM streams WHERE edge = 'shop-1'`).Scan(&hwm); err != nil {
		t.Fatalf("the segment in hand was not committed: %v\n%s", err, logs.String())
	}
	// The broker acknowledged the receipt before serve returned; its
	// delivery to the edge follows.
	var got uint64
	var n int
	poll.Until(t, 30*time.Second, "the receipt of the committed segment at the edge", func() bool {
		got, n = edge.receipted()
		return got >= uint64(hwm)
	})
	if hwm != 5 || got != uint64(hwm) {
		t.Fatalf("committed up to %d, receipts up to %d (%d receipts); want both 5\n%s", hwm, got, n, logs.String())
	}
}

// A SIGTERM during steady ingest: whatever was committed when serve stops
// has its receipt at the edge.
func TestShutdownDuringSteadyIngest(t *testing.T) {
	ctx := context.Background()
	const records, size = 1000, 5
	url, conn, stream := mustEdgeDB(t, records)
	logs := &syncBuffer{}
	runCtx, sigterm := context.WithCancel(ctx)
	defer sigterm()
	m, done := startServe(t, runCtx, logs, "--database-url", url, "--drain-timeout", "2m", "--log-level", "warn")
	edge := mustMQTTEdge(t, m, stream)

	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for first := uint64(1); first+size-1 <= records && runCtx.Err() == nil; first += size {
			topic, _ := protocol.EdgeTopic("shop-1", protocol.KindSegment)
			tok := edge.client.Publish(topic, 1, false, protocoltest.Encode(t, stream.Segment(first, first+size-1), false))
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				return // the cloud is going away
			}
		}
	}()
	poll.Until(t, 60*time.Second, "steady ingest (100 records receipted)", func() bool {
		hwm, _ := edge.receipted()
		return hwm >= 100
	})
	sigterm()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v\n%s", err, logs.String())
	}
	<-sent
	var hwm int64
	if err := conn.QueryRow(ctx, `SELECT hwm FROM streams WHERE edge = 'shop-1'`).Scan(&hwm); err != nil {
		t.Fatal(err)
	}
	poll.For(t, 30*time.Second, func() error {
		if got, n := edge.receipted(); got != uint64(hwm) {
			return fmt.Errorf("committed up to %d, receipted up to %d (%d receipts)", hwm, got, n)
		}
		return nil
	})
}
