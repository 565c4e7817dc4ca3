package ledger_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

func TestEvents(t *testing.T) {
	ctx := context.Background()
	l := MustLedger(t, MustMigratedDB(t), ledger.Options{})
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var chains []*chain
	for _, id := range []string{"edge-a", "edge-b"} {
		e := MustAddEdge(t, l, id)
		c := makeChain(t, protocol.Stream{Edge: id, Epoch: newEpoch(t)}, 25, base)
		chains = append(chains, c)
		MustCommit(t, l, inputs(cut(c, e, 10)...)...)
	}

	// Paging through everything sees each record once, in commit order.
	var all []ledger.Event
	f := ledger.Filter{Limit: 7}
	for {
		p, err := l.Events(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) == 0 {
			if p.Next != f.After {
				t.Errorf("empty page moved the cursor from %d to %d", f.After, p.Next)
			}
			break
		}
		all = append(all, p.Events...)
		f.After = p.Next
	}
	if len(all) != 50 {
		t.Fatalf("paged %d events, want 50", len(all))
	}
	for i, ev := range all {
		if i > 0 && ev.Pos <= all[i-1].Pos {
			t.Fatalf("events out of pos order at %d", i)
		}
	}
	first := all[0]
	if first.Edge != "edge-a" || first.Seq != 1 || first.Hash != chains[0].Links[0] || first.CommittedAt.IsZero() {
		t.Errorf("first event: %+v", first)
	}
	var body struct {
		N int `json:"n"`
	}
	if err := json.Unmarshal(first.Body, &body); err != nil || body.N != 1 {
		t.Errorf("first event body %s: %v", first.Body, err)
	}
	if b, err := json.Marshal(first); err != nil || !json.Valid(b) {
		t.Errorf("event JSON: %v", err)
	}

	cases := []struct {
		name string
		f    ledger.Filter
		want int
	}{
		{"edge", ledger.Filter{Edge: "edge-b"}, 25},
		{"type", ledger.Filter{Type: "telemetry.temperature"}, 10},
		{"edge and type", ledger.Filter{Edge: "edge-a", Type: "sale.completed"}, 20},
		{"edge time from", ledger.Filter{From: base.Add(21 * time.Millisecond)}, 10},
		{"edge time range", ledger.Filter{From: base.Add(5 * time.Millisecond), To: base.Add(10 * time.Millisecond)}, 10},
		{"after a cursor", ledger.Filter{After: all[44].Pos}, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := l.Events(ctx, tc.f)
			if err != nil || len(p.Events) != tc.want {
				t.Fatalf("%d events, %v; want %d", len(p.Events), err, tc.want)
			}
			for _, ev := range p.Events {
				if (tc.f.Edge != "" && ev.Edge != tc.f.Edge) || (tc.f.Type != "" && ev.Type != tc.f.Type) {
					t.Errorf("event %+v does not match %+v", ev, tc.f)
				}
			}
		})
	}
}

func TestStreamsAndHello(t *testing.T) {
	ctx := context.Background()
	l := MustLedger(t, MustMigratedDB(t), ledger.Options{})
	e := MustAddEdge(t, l, "edge-h")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 20, time.Now())

	// A hello for a stream never seen: HWM 0, and no stream row made.
	w, err := l.NoteHello(ctx, protocol.Hello{V: 1, Edge: e.ID, Epoch: c.Stream.Epoch, Seq: 20})
	if err != nil || w.HWM != 0 || w.Stream != c.Stream {
		t.Fatalf("hello before any commit: %+v, %v", w, err)
	}
	out := MustCommit(t, l, inputs(segment(c, e, 1, 12))...)
	signed := c.SignedBy(e.Signer)
	w, err = l.NoteHello(ctx, protocol.Hello{V: 2, Edge: e.ID, Epoch: c.Stream.Epoch, Seq: 20, Checkpoint: signed.Checkpoint(20)})
	if err != nil || w != out[0].Watermark {
		t.Fatalf("hello = %+v, %v; want the receipt %+v", w, err, out[0].Watermark)
	}
	ss, err := l.Streams(ctx)
	if err != nil || len(ss) != 1 {
		t.Fatalf("Streams = %+v, %v", ss, err)
	}
	s := ss[0]
	if s.HWM != 12 || s.Head != c.Links[11] || s.EdgeSeq != 20 || s.Lag != 8 || s.CommittedAt.IsZero() ||
		s.LastSeen.Before(s.FirstSeen) || !s.EndedAt.IsZero() || s.PrevEpoch != nil {
		t.Errorf("stream %+v", s)
	}
}

// A spoofed hello used to poison the lag for good (GREATEST(edge_seq, seq):
// a hello with seq 999999 stuck, and the honest edge's hello could not lower
// it). Now only a checkpoint the edge signed moves it, the one with the
// latest edge time: an unsigned seq, a checkpoint by another key or of
// another stream, and a replayed older checkpoint change nothing.
func TestSpoofedHelloDoesNotMoveLag(t *testing.T) {
	ctx := context.Background()
	l := MustLedger(t, MustMigratedDB(t), ledger.Options{})
	e := MustAddEdge(t, l, "edge-s")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 30, time.Now())
	MustCommit(t, l, inputs(segment(c, e, 1, 10))...)
	signed := c.SignedBy(e.Signer)
	lag := func() (uint64, uint64) {
		t.Helper()
		ss, err := l.Streams(ctx)
		if err != nil || len(ss) != 1 {
			t.Fatalf("streams %+v, %v", ss, err)
		}
		return ss[0].EdgeSeq, ss[0].Lag
	}
	hello := func(h protocol.Hello) {
		t.Helper()
		h.Edge, h.Epoch = e.ID, c.Stream.Epoch
		if _, err := l.NoteHello(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	hello(protocol.Hello{V: 2, Seq: 20, Checkpoint: signed.Checkpoint(20)})
	if seq, lg := lag(); seq != 20 || lg != 10 {
		t.Fatalf("honest hello: edge seq %d, lag %d; want 20, 10", seq, lg)
	}
	other := newTestEdge(t, "edge-s")
	otherStream := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 3, time.Now()).SignedBy(e.Signer)
	for name, h := range map[string]protocol.Hello{
		"unsigned seq 999999 (version 1)":   {V: 1, Seq: 999999},
		"unsigned seq 999999 (version 2)":   {V: 2, Seq: 999999},
		"checkpoint by another key":         {V: 2, Seq: 30, Checkpoint: c.SignedBy(other.Signer).Checkpoint(30)},
		"checkpoint of another stream":      {V: 2, Seq: 3, Checkpoint: otherStream.Checkpoint(3)},
		"replayed older checkpoint":         {V: 2, Seq: 15, Checkpoint: signed.Checkpoint(15)},
		"garbage where the checkpoint goes": {V: 2, Seq: 999999, Checkpoint: []byte("\xd2\x84")},
	} {
		hello(h)
		if seq, lg := lag(); seq != 20 || lg != 10 {
			t.Fatalf("%s: edge seq %d, lag %d; want 20, 10 still", name, seq, lg)
		}
	}
	// The edge's next honest hello moves it.
	hello(protocol.Hello{V: 2, Seq: 30, Checkpoint: signed.Checkpoint(30)})
	if seq, lg := lag(); seq != 30 || lg != 20 {
		t.Fatalf("next honest hello: edge seq %d, lag %d; want 30, 20", seq, lg)
	}
}
