package ledger_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// Retention drops whole months and moves each stream's floor with them:
// an honest redelivery of dropped records is a duplicate, whether it ends
// at a stored checkpoint (compared with it) or between two (below the
// floor, nothing left to compare with); a fork that ends at a checkpoint
// is still caught; records above the floor commit as before.
func TestDropBeforeMovesTheFloor(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	if mode, err := ledger.Partitioning(ctx, conn); err != nil || mode != ledger.PartitionNative {
		t.Skipf("partitioning is %q (%v): TimescaleDB's drop_chunks is not exercised here", mode, err)
	}
	l := ledger.New(conn, ledger.Options{})
	e := MustAddEdge(t, l, "edge-r")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 40, time.Now())
	for _, seg := range cut(c, e, 10)[:3] {
		MustCommit(t, l, inputs(seg)...)
	}

	// Everything so far was committed this month: a cut at the start of
	// next month drops this month's partition, and nothing later.
	now := time.Now()
	dropped, err := ledger.DropBefore(ctx, conn, now.AddDate(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(dropped, ledger.PartitionName(now)) || slices.Contains(dropped, ledger.PartitionName(now.AddDate(0, 1, 0))) {
		t.Fatalf("dropped %v; want %s and nothing from next month on", dropped, ledger.PartitionName(now))
	}
	if n := count(t, conn, `SELECT count(*) FROM ledger`); n != 0 {
		t.Fatalf("%d ledger rows left", n)
	}
	if n := count(t, conn, `SELECT floor_seq FROM streams WHERE edge = $1`, e.ID); n != 30 {
		t.Fatalf("floor_seq %d, want 30", n)
	}

	for _, seg := range []*protocol.Segment{segment(c, e, 1, 10), segment(c, e, 5, 15), segment(c, e, 12, 30)} {
		if o := MustCommit(t, l, inputs(seg)...)[0]; o.Kind != ledger.KindDuplicate {
			t.Errorf("redelivery %d-%d after retention: %+v, want a duplicate", seg.First, seg.Last, o)
		}
	}
	fork := &chain{Stream: c.Stream}
	extend(t, fork, 20, time.Now(), "fork")
	if o := MustCommit(t, l, inputs(segment(fork, e, 11, 20))...)[0]; o.Kind != ledger.KindQuarantined || o.Code != protocol.NackChain {
		t.Errorf("a fork ending at a stored checkpoint, after retention: %+v", o)
	}
	if o := MustCommit(t, l, inputs(segment(c, e, 25, 40))...)[0]; o.Kind != ledger.KindCommitted || o.Records != 10 || o.HWM != 40 {
		t.Errorf("new records after retention: %+v", o)
	}
}
