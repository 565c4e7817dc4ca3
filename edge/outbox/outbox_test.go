package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
)

func TestAppendAssignsGaplessSeqs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		calls [][]string // event types per call
	}{
		{"one event", [][]string{{"sale.completed"}}},
		{"one call of five", [][]string{{"sale.completed", "telemetry.reading", "sale.completed", "till.closed", "telemetry.reading"}}},
		{"several calls", [][]string{{"sale.completed"}, {"telemetry.reading", "telemetry.reading"}, {"till.closed"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := MustOpen(t)
			want := uint64(1)
			for ci, types := range tc.calls {
				es := make([]outbox.Entry, len(types))
				for i, typ := range types {
					es[i] = entry("dev-1", fmt.Sprintf("c%d-%d", ci, i), typ)
				}
				for i, r := range b.MustAppend(t, es...) {
					if r.Err != nil || r.Duplicate || r.Seq != want {
						t.Fatalf("call %d entry %d: %+v, want seq %d", ci, i, r, want)
					}
					want++
				}
			}
			st := b.State()
			if st.Head != want-1 || st.Backlog != want-1 || st.HWM != 0 || st.Stream.Epoch.IsZero() || st.Stream.Edge != "edge-1" {
				t.Fatalf("state %+v", st)
			}
			recs, _ := walk(t, b, 0)
			if uint64(len(recs)) != st.Head {
				t.Fatalf("%d records readable, head %d", len(recs), st.Head)
			}
			for i, raw := range recs {
				r, err := protocol.DecodeRecord(raw)
				if err != nil {
					t.Fatal(err)
				}
				if r.Seq != uint64(i+1) || r.Device != "dev-1" || r.Class != protocol.ClassOf(r.Type) {
					t.Fatalf("record %d: %+v", i+1, r)
				}
			}
		})
	}
}

func TestConcurrentCallsGetConsecutiveSeqs(t *testing.T) {
	b := MustOpen(t)
	const goroutines, calls = 16, 40
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range calls {
				n := 1 + (g+c)%7
				es := make([]outbox.Entry, n)
				for i := range es {
					es[i] = entry(fmt.Sprintf("dev-%d", g), fmt.Sprintf("%d-%d", c, i), "sale.completed")
				}
				res, err := b.Append(context.Background(), es)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for i, r := range res {
					if r.Err != nil || r.Seq != res[0].Seq+uint64(i) || seen[r.Seq] {
						t.Errorf("goroutine %d call %d entry %d: %+v (first %d)", g, c, i, r, res[0].Seq)
					}
					seen[r.Seq] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	st := b.State()
	if uint64(len(seen)) != st.Head {
		t.Fatalf("%d seqs handed out, head %d", len(seen), st.Head)
	}
	if st.Commits >= st.Head {
		t.Logf("no group commit happened: %d commits for %d records", st.Commits, st.Head)
	}
}

func TestDedup(t *testing.T) {
	a := entry("dev-1", "ev-a", "sale.completed")
	for _, tc := range []struct {
		name string
		// between runs after a has been appended once; it returns the entry
		// to append next and whether it must be a duplicate of a.
		between func(t *testing.T, b *box) (outbox.Entry, bool)
	}{
		{"repeat", func(t *testing.T, b *box) (outbox.Entry, bool) { return a, true }},
		{"repeat with another body", func(t *testing.T, b *box) (outbox.Entry, bool) {
			e := a
			e.Event.Body = nil
			return e, true
		}},
		{"repeat after reopen", func(t *testing.T, b *box) (outbox.Entry, bool) {
			b.Reopen(t)
			return a, true
		}},
		{"repeat after trim", func(t *testing.T, b *box) (outbox.Entry, bool) {
			if err := b.Trim(b.Receipt(t, b.State().Head)); err != nil {
				t.Fatal(err)
			}
			b.Reopen(t)
			return a, true
		}},
		{"repeat inside the window", func(t *testing.T, b *box) (outbox.Entry, bool) {
			b.Clock.Add(outbox.DefaultDedupWindow - time.Minute)
			return a, true
		}},
		{"repeat after the window", func(t *testing.T, b *box) (outbox.Entry, bool) {
			b.Clock.Add(outbox.DefaultDedupWindow + time.Minute)
			return a, false
		}},
		{"repeat after the window, trimmed and reopened", func(t *testing.T, b *box) (outbox.Entry, bool) {
			if err := b.Trim(b.Receipt(t, b.State().Head)); err != nil {
				t.Fatal(err)
			}
			b.Clock.Add(outbox.DefaultDedupWindow + time.Minute)
			b.Reopen(t)
			return a, false
		}},
		{"same id, other device", func(t *testing.T, b *box) (outbox.Entry, bool) {
			return entry("dev-2", "ev-a", "sale.completed"), false
		}},
		{"same device, other id", func(t *testing.T, b *box) (outbox.Entry, bool) {
			return entry("dev-1", "ev-b", "sale.completed"), false
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := MustOpen(t)
			b.MustAppendN(t, "dev-0", "sale.completed", 3)
			first := b.MustAppend(t, a)[0]
			b.MustAppendN(t, "dev-0", "telemetry.reading", 2)
			e, dup := tc.between(t, b)
			head := b.State().Head
			got := b.MustAppend(t, e)[0]
			if got.Err != nil {
				t.Fatal(got.Err)
			}
			if dup {
				if !got.Duplicate || got.Seq != first.Seq || b.State().Head != head {
					t.Fatalf("got %+v (head %d -> %d), want a duplicate of seq %d", got, head, b.State().Head, first.Seq)
				}
			} else if got.Duplicate || got.Seq != head+1 {
				t.Fatalf("got %+v, want new seq %d", got, head+1)
			}
		})
	}
}

func TestDedupWithinOneCall(t *testing.T) {
	b := MustOpen(t)
	res := b.MustAppend(t,
		entry("dev-1", "x", "sale.completed"),
		entry("dev-1", "y", "sale.completed"),
		entry("dev-1", "x", "sale.completed"),
		entry("dev-2", "x", "sale.completed"),
	)
	want := []outbox.Result{{Seq: 1}, {Seq: 2}, {Seq: 1, Duplicate: true}, {Seq: 3}}
	for i := range want {
		if res[i] != want[i] {
			t.Fatalf("entry %d: %+v, want %+v", i, res[i], want[i])
		}
	}
}

func TestDedupAcrossConcurrentBatches(t *testing.T) {
	// Many goroutines append the same pairs at once: each pair gets one seq,
	// and every caller gets that seq, whether it made it or not.
	b := MustOpen(t)
	const pairs, callers = 50, 8
	seqs := make([][]uint64, callers)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range pairs {
				r := b.MustAppend(t, entry("dev-1", fmt.Sprintf("p%d", p), "sale.completed"))[0]
				seqs[c] = append(seqs[c], r.Seq)
			}
		}()
	}
	wg.Wait()
	if st := b.State(); st.Head != pairs {
		t.Fatalf("head %d, want %d", st.Head, pairs)
	}
	for c := 1; c < callers; c++ {
		for p := range pairs {
			if seqs[c][p] != seqs[0][p] {
				t.Fatalf("pair %d: caller %d got seq %d, caller 0 got %d", p, c, seqs[c][p], seqs[0][p])
			}
		}
	}
}

func TestInvalidEntries(t *testing.T) {
	good := entry("dev-1", "ok", "sale.completed")
	for _, tc := range []struct {
		name string
		mod  func(e *outbox.Entry)
	}{
		{"empty device", func(e *outbox.Entry) { e.Device = "" }},
		{"device with a slash", func(e *outbox.Entry) { e.Device = "a/b" }},
		{"empty id", func(e *outbox.Entry) { e.Event.ID = "" }},
		{"id too long", func(e *outbox.Entry) { e.Event.ID = strings.Repeat("x", 65) }},
		{"id with a control character", func(e *outbox.Entry) { e.Event.ID = "a\nb" }},
		{"bad type", func(e *outbox.Entry) { e.Event.Type = "Sale" }},
		{"body not a map", func(e *outbox.Entry) { e.Event.Body = protocol.Body{0x01} }},
		{"body truncated", func(e *outbox.Entry) { e.Event.Body = protocol.Body{0xa1, 0x61} }},
		{"body with trailing bytes", func(e *outbox.Entry) { e.Event.Body = protocol.Body{0xa0, 0x00} }},
		{"body with a tag", func(e *outbox.Entry) { e.Event.Body = protocol.Body{0xa1, 0x61, 'a', 0xc1, 0x00} }},
		{"body too large", func(e *outbox.Entry) {
			big, _ := protocol.NewBody(map[string]any{"x": strings.Repeat("y", protocol.MaxBodyBytes)})
			e.Event.Body = big
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := MustOpen(t)
			bad := good
			bad.Event.ID = "bad"
			tc.mod(&bad)
			res := b.MustAppend(t, good, bad, entry("dev-1", "ok2", "sale.completed"))
			if res[0].Seq != 1 || res[2].Seq != 2 {
				t.Fatalf("neighbours: %+v", res)
			}
			if !errors.Is(res[1].Err, outbox.ErrInvalid) || res[1].Seq != 0 {
				t.Fatalf("bad entry: %+v", res[1])
			}
			t.Log(res[1].Err)
		})
	}
}

func TestIntakeRejectedIsALedgerRecord(t *testing.T) {
	b := MustOpen(t)
	body, err := protocol.NewBody(map[string]any{"reason": "bad json", "payload": "{"})
	if err != nil {
		t.Fatal(err)
	}
	e := outbox.Entry{Device: "dev-1", Event: protocol.Event{ID: "rej-1", Type: protocol.TypeIntakeRejected, TS: time.Now(), Body: body}}
	if r := b.MustAppend(t, e)[0]; r.Err != nil || r.Seq != 1 {
		t.Fatalf("%+v", r)
	}
	if st := b.State(); st.LedgerBytes == 0 || st.TelemetryBytes != 0 {
		t.Fatalf("state %+v", st)
	}
}

func TestReopenContinuesTheStream(t *testing.T) {
	b := MustOpen(t)
	b.MustAppendN(t, "dev-1", "sale.completed", 5)
	before := b.State()
	b.Clock.Add(-time.Hour) // the wall clock steps back across the restart
	b.Reopen(t)
	if st := b.State(); st.Stream != before.Stream || st.Head != 5 || st.HeadHash != before.HeadHash {
		t.Fatalf("after reopen %+v, before %+v", st, before)
	}
	b.MustAppendN(t, "dev-1", "sale.completed", 5)
	recs, _ := walk(t, b, 0)
	var last protocol.HLCTime
	for _, raw := range recs {
		r, _ := protocol.DecodeRecord(raw)
		if r.EdgeTime <= last {
			t.Fatalf("seq %d: edge_time %d after %d", r.Seq, r.EdgeTime, last)
		}
		last = r.EdgeTime
	}
}

func TestOpenRefusesAnotherEdge(t *testing.T) {
	b := MustOpen(t)
	b.MustAppendN(t, "dev-1", "sale.completed", 1)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	opts := b.Opts
	opts.Edge = "edge-2"
	if _, err := outbox.Open(b.Path, opts); err == nil || !strings.Contains(err.Error(), "edge-1") {
		t.Fatalf("open as another edge: %v", err)
	}
	b.Reopen(t)
}

func TestOpenRefusesBadOptions(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		opts outbox.Options
	}{
		{"no edge", outbox.Options{Signer: mustSigner(t)}},
		{"bad edge", outbox.Options{Edge: "a.b", Signer: mustSigner(t)}},
		{"no signer", outbox.Options{Edge: "e1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if o, err := outbox.Open(dir+"/x.db", tc.opts); err == nil {
				o.Close()
				t.Fatal("opened")
			} else {
				t.Log(err)
			}
		})
	}
}

func TestOpenWhileOpenIsLocked(t *testing.T) {
	b := MustOpen(t)
	start := time.Now()
	_, err := outbox.Open(b.Path, b.Opts)
	if !errors.Is(err, outbox.ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	t.Logf("%v after %v", err, time.Since(start).Round(time.Millisecond))
}

func TestCloseCommitsWhatWasHandedOver(t *testing.T) {
	b := MustOpen(t)
	var ps []*outbox.Pending
	for i := range 200 {
		ps = append(ps, b.AppendAsync([]outbox.Entry{entry("dev-1", fmt.Sprint(i), "sale.completed")}))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		res, err := p.Results()
		if err != nil || res[0].Err != nil || res[0].Seq == 0 {
			t.Fatalf("append %d: %+v %v", i, res, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := b.AppendAsync([]outbox.Entry{entry("dev-1", "late", "sale.completed")}).Results(); !errors.Is(err, outbox.ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := b.Trim(protocol.Receipt{Edge: "edge-1", Epoch: b.Stream().Epoch, HWM: 1}); !errors.Is(err, outbox.ErrClosed) {
		t.Fatalf("trim after close: %v", err)
	}
	if _, err := b.Segment(1, 0); !errors.Is(err, outbox.ErrClosed) {
		t.Fatalf("segments after close: %v", err)
	}
	if err := b.Wait(context.Background(), 1000); !errors.Is(err, outbox.ErrClosed) {
		t.Fatalf("wait after close: %v", err)
	}
	b.Reopen(t)
	if st := b.State(); st.Head != 200 {
		t.Fatalf("head %d after reopen", st.Head)
	}
}

func TestAppendEmpty(t *testing.T) {
	b := MustOpen(t)
	res, err := b.Append(context.Background(), nil)
	if err != nil || len(res) != 0 {
		t.Fatal(res, err)
	}
}

func TestAppendContextEnds(t *testing.T) {
	b := MustOpen(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := b.Append(ctx, []outbox.Entry{entry("dev-1", "x", "sale.completed")})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

func TestWait(t *testing.T) {
	b := MustOpen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := b.Wait(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait on an empty outbox: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Wait(context.Background(), 2) }()
	b.MustAppendN(t, "dev-1", "sale.completed", 2)
	select {
	case err := <-done:
		t.Fatalf("wait returned at head 2: %v", err)
	default:
	}
	b.MustAppendN(t, "dev-1", "sale.completed", 1)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestAppendFunc: the callback gets each call's Results once they are
// durable (the head covers them), on the commit goroutine; after Close it
// gets ErrClosed, never inside the AppendFunc call itself.
func TestAppendFunc(t *testing.T) {
	b := MustOpen(t)
	const n = 500
	type outcome struct {
		res  []outbox.Result
		err  error
		head uint64
	}
	got := make(chan outcome, n)
	for i := range n {
		b.AppendFunc([]outbox.Entry{entry("dev-1", fmt.Sprint(i%400), "sale.completed")}, func(rs []outbox.Result, err error) {
			got <- outcome{slices.Clone(rs), err, b.State().Head}
		})
	}
	seqs := map[uint64]bool{}
	dups := 0
	for range n {
		o := <-got
		if o.err != nil || len(o.res) != 1 || o.res[0].Err != nil || o.res[0].Seq == 0 {
			t.Fatalf("callback: %+v %v", o.res, o.err)
		}
		if o.res[0].Seq > o.head {
			t.Fatalf("callback for seq %d ran before the commit was published (head %d)", o.res[0].Seq, o.head)
		}
		if o.res[0].Duplicate {
			dups++
		} else {
			seqs[o.res[0].Seq] = true
		}
	}
	if len(seqs) != 400 || dups != 100 {
		t.Fatalf("%d new records and %d duplicates, want 400 and 100", len(seqs), dups)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	mu.Lock() // held across the call: a callback run inside it would deadlock
	closed := make(chan error, 1)
	b.AppendFunc([]outbox.Entry{entry("dev-1", "late", "sale.completed")}, func(_ []outbox.Result, err error) {
		mu.Lock()
		defer mu.Unlock()
		closed <- err
	})
	mu.Unlock()
	if err := <-closed; !errors.Is(err, outbox.ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
}

// Changed is closed by the commit that moves the head (and by Close), so
// the uplink can wait for records without polling.
func TestChanged(t *testing.T) {
	b := MustOpen(t)
	ch := b.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any commit")
	default:
	}
	b.MustAppendN(t, "dev-1", "sale.completed", 1) // returns once durable, after publish
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed by a commit")
	}
	next := b.Changed()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-next:
	default:
		t.Fatal("Changed not closed by Close")
	}
	select {
	case <-b.Changed():
	default:
		t.Fatal("Changed of a closed outbox is not closed")
	}
}

// TestDedupClockStep: no clock step, forward or back, while running or
// across a restart, lets a resend of a recent event through as a new
// record. (Before, a forward step larger than the window stored a resend 9
// seconds after the step a second time.) Without steps the window is still
// the wall clock's, and pairs do leave it once real time has passed.
func TestDedupClockStep(t *testing.T) {
	const day = 24 * time.Hour
	dupOf := func(t *testing.T, b *box, e outbox.Entry, seq uint64, when string) {
		t.Helper()
		got := b.MustAppend(t, e)[0]
		if got.Err != nil || !got.Duplicate || got.Seq != seq {
			t.Fatalf("%s: resend of %s got %+v, want a duplicate of seq %d", when, e.Event.ID, got, seq)
		}
	}
	t.Run("forward while running", func(t *testing.T) {
		b := MustOpen(t)
		a := b.MustAppend(t, entry("till-1", "a", "sale.completed"))[0]
		b.Clock.Add(time.Hour)
		b.MustAppendN(t, "till-2", "sale.completed", 5)
		b.Clock.Step(8 * day) // NTP corrects a gateway that ran 8 days behind
		b.Clock.Add(9 * time.Second)
		dupOf(t, b, entry("till-1", "a", "sale.completed"), a.Seq, "9s after an 8-day step forward")
		// The trim and an idle maintenance pass do not forget it either.
		if err := b.Trim(b.Receipt(t, b.State().Head)); err != nil {
			t.Fatal(err)
		}
		b.Clock.Add(time.Hour)
		dupOf(t, b, entry("till-1", "a", "sale.completed"), a.Seq, "an hour later, trimmed")
		// A crash or restart right after keeps the protection.
		b.Reopen(t)
		dupOf(t, b, entry("till-1", "a", "sale.completed"), a.Seq, "after a restart")
		// Real time passing still ends the window, at most twice as fast as
		// it passes while the cutoff catches up.
		b.Clock.Add(outbox.DefaultDedupWindow)
		b.MustAppendN(t, "till-3", "sale.completed", 1)
		got := b.MustAppend(t, entry("till-1", "a", "sale.completed"))[0]
		if got.Duplicate {
			t.Fatalf("a whole window of real time after the step: still a duplicate: %+v", got)
		}
	})
	t.Run("back while running", func(t *testing.T) {
		b := MustOpen(t)
		a := b.MustAppend(t, entry("till-1", "a", "sale.completed"))[0]
		b.Clock.Step(-8 * day)
		c := b.MustAppend(t, entry("till-1", "c", "sale.completed"))[0]
		b.Clock.Add(time.Minute)
		dupOf(t, b, entry("till-1", "a", "sale.completed"), a.Seq, "after an 8-day step back")
		dupOf(t, b, entry("till-1", "c", "sale.completed"), c.Seq, "after an 8-day step back")
		b.Reopen(t)
		dupOf(t, b, entry("till-1", "a", "sale.completed"), a.Seq, "after a step back and a restart")
		// The clock is put right again: forward by the 8 days.
		b.Clock.Step(8 * day)
		b.Clock.Add(time.Second)
		dupOf(t, b, entry("till-1", "c", "sale.completed"), c.Seq, "after the step back was undone")
	})
	t.Run("no step", func(t *testing.T) {
		b := MustOpen(t)
		b.MustAppend(t, entry("till-1", "a", "sale.completed"))
		b.Clock.Add(outbox.DefaultDedupWindow + time.Minute)
		if got := b.MustAppend(t, entry("till-1", "a", "sale.completed"))[0]; got.Duplicate {
			t.Fatalf("after the window with a steady clock: %+v, want a new record", got)
		}
	})
}
