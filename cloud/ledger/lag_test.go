package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// TestSampleLag: each sample records every current stream's lag; Streams
// serves them oldest first; only the latest LagSamplesKept are kept.
func TestSampleLag(t *testing.T) {
	ctx := context.Background()
	l := MustLedger(t, MustMigratedDB(t), ledger.Options{})
	e := MustAddEdge(t, l, "edge-lag")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 20, time.Now())
	MustCommit(t, l, inputs(segment(c, e, 1, 12))...)
	if ss, err := l.Streams(ctx); err != nil || len(ss) != 1 || len(ss[0].LagHistory) != 0 {
		t.Fatalf("before a sample: %+v %v", ss, err)
	}
	if n, err := l.SampleLag(ctx); err != nil || n != 1 {
		t.Fatalf("first sample: %d streams, %v", n, err)
	}
	signed := c.SignedBy(e.Signer)
	if _, err := l.NoteHello(ctx, protocol.Hello{V: 2, Edge: e.ID, Epoch: c.Stream.Epoch, Seq: 20, Checkpoint: signed.Checkpoint(20)}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.SampleLag(ctx); err != nil {
		t.Fatal(err)
	}
	ss, err := l.Streams(ctx)
	if err != nil || len(ss) != 1 {
		t.Fatalf("Streams: %+v %v", ss, err)
	}
	h := ss[0].LagHistory
	if len(h) != 2 || h[0].Lag != 0 || h[1].Lag != 8 || !h[0].At.Before(h[1].At) {
		t.Fatalf("history %+v, want lag 0 then 8, oldest first", h)
	}
	for i := 0; i < ledger.LagSamplesKept+5; i++ {
		if _, err := l.SampleLag(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ss, err = l.Streams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h := ss[0].LagHistory; len(h) != ledger.LagSamplesKept || h[len(h)-1].Lag != 8 {
		t.Fatalf("after %d more samples: %d kept (last %+v), want %d", ledger.LagSamplesKept+5, len(h), h[len(h)-1], ledger.LagSamplesKept)
	}
}
