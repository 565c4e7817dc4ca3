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
	w, err = l.NoteHello(ctx, protocol.Hello{V: 1, Edge: e.ID, Epoch: c.Stream.Epoch, Seq: 20})
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
