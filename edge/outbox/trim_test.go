package outbox_test

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
)

func TestTrimRefusesReceiptsThatDoNotFit(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(r *protocol.Receipt, b *box)
	}{
		{"other edge", func(r *protocol.Receipt, b *box) { r.Edge = "edge-2" }},
		{"other epoch", func(r *protocol.Receipt, b *box) { r.Epoch[0] ^= 1 }},
		{"beyond the head", func(r *protocol.Receipt, b *box) { r.HWM = 11; r.Head = b.State().HeadHash }},
		{"other head", func(r *protocol.Receipt, b *box) { r.Head[0] ^= 1 }},
		{"head of another seq", func(r *protocol.Receipt, b *box) { r.HWM = 6 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := MustOpen(t)
			b.MustAppendN(t, "dev-1", "sale.completed", 10)
			r := b.Receipt(t, 5)
			tc.mod(&r, b)
			before := b.State()
			err := b.Trim(r)
			if !errors.Is(err, outbox.ErrReceipt) {
				t.Fatalf("trim: %v", err)
			}
			if after := b.State(); after != before {
				t.Fatalf("state changed: %+v -> %+v", before, after)
			}
			if recs, _ := walk(t, b, 0); len(recs) != 10 {
				t.Fatalf("%d records left", len(recs))
			}
			t.Log(err)
		})
	}
}

func TestTrim(t *testing.T) {
	b := MustOpen(t)
	b.MustAppendN(t, "dev-1", "sale.completed", 10) // one run: checkpoint at 10
	b.MustAppendN(t, "dev-1", "telemetry.reading", 10)
	full := b.State()
	r5 := b.Receipt(t, 5)
	if err := b.Trim(r5); err != nil { // inside the run
		t.Fatal(err)
	}
	st := b.State()
	if st.Base != 5 || st.HWM != 5 || st.Backlog != 15 || st.LedgerBytes != full.LedgerBytes/2 ||
		st.BacklogBytes != st.LedgerBytes+st.TelemetryBytes || st.OldestUnsent.IsZero() {
		t.Fatalf("after trim to 5: %+v", st)
	}
	for _, tc := range []struct {
		name string
		r    protocol.Receipt
	}{
		{"the same receipt again", r5},
		{"an older receipt", protocol.Receipt{Edge: "edge-1", Epoch: b.Stream().Epoch, HWM: 3, Head: protocol.Hash{1}}},
		{"a receipt for nothing", protocol.Receipt{Edge: "edge-1", Epoch: b.Stream().Epoch}},
	} {
		if err := b.Trim(tc.r); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := b.State(); got != st {
			t.Fatalf("%s changed the state: %+v -> %+v", tc.name, st, got)
		}
	}
	b.Reopen(t)
	if got := b.State(); got.Base != 5 || got.HWM != 5 || got.BacklogBytes != st.BacklogBytes {
		t.Fatalf("after reopen: %+v", got)
	}
	if err := b.Trim(b.Receipt(t, 20)); err != nil {
		t.Fatal(err)
	}
	st = b.State()
	if st.Base != 20 || st.Backlog != 0 || st.BacklogBytes != 0 || st.LedgerBytes != 0 || st.TelemetryBytes != 0 || !st.OldestUnsent.IsZero() {
		t.Fatalf("after trim to the head: %+v", st)
	}
	if seg, err := b.Segment(21, 0); seg != nil || err != nil {
		t.Fatal(seg, err)
	}
	b.MustAppendN(t, "dev-1", "sale.completed", 3)
	if recs, _ := walk(t, b, 0); len(recs) != 3 {
		t.Fatalf("%d records after the trimmed base", len(recs))
	}
}

func TestTrimRetains(t *testing.T) {
	b := MustOpen(t, func(o *outbox.Options) { o.Retain = time.Hour })
	b.MustAppendN(t, "dev-1", "sale.completed", 10)
	b.Clock.Add(40 * time.Minute)
	b.MustAppendN(t, "dev-1", "sale.completed", 10)
	if err := b.Trim(b.Receipt(t, 15)); err != nil {
		t.Fatal(err)
	}
	if st := b.State(); st.HWM != 15 || st.Base != 0 || st.Backlog != 5 {
		t.Fatalf("inside the retention: %+v", st)
	}
	b.Clock.Add(30 * time.Minute) // the first ten are now 70 minutes old
	if err := b.Trim(b.Receipt(t, 15)); err != nil {
		t.Fatal(err)
	}
	if st := b.State(); st.HWM != 15 || st.Base != 10 || st.Backlog != 5 {
		t.Fatalf("after the first ten aged: %+v", st)
	}
	b.Clock.Add(time.Hour)
	if err := b.Trim(b.Receipt(t, 15)); err != nil {
		t.Fatal(err)
	}
	if st := b.State(); st.Base != 15 {
		t.Fatalf("after all aged: %+v", st)
	}
}

func TestTrimInChunks(t *testing.T) {
	b := MustOpen(t)
	const n = 45000 // more than two trim transactions' worth
	for i := 0; i < n; i += 1000 {
		b.MustAppendN(t, "dev-1", "telemetry.reading", 1000)
	}
	done := make(chan error, 1)
	go func() { done <- b.Trim(b.Receipt(t, n)) }()
	// Appends go on while the trim works through its chunks.
	b.MustAppendN(t, "dev-1", "telemetry.reading", 10)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := b.State(); st.Base != n || st.Backlog != 10 {
		t.Fatalf("%+v", st)
	}
}

// TestTrimReusesSpace appends and trims in rounds, as a steady uplink does,
// and checks that the file stops growing: freed pages are reused.
func TestTrimReusesSpace(t *testing.T) {
	b := MustOpen(t, func(o *outbox.Options) { o.DedupWindow = time.Minute })
	const rounds, perRound = 120, 1000
	var settled int64
	for r := range rounds {
		for range perRound / 250 {
			b.MustAppendN(t, fmt.Sprint("dev-", r%7), "telemetry.reading", 250)
		}
		if err := b.Trim(b.Receipt(t, b.State().Head)); err != nil {
			t.Fatal(err)
		}
		b.Clock.Add(10 * time.Second) // index blobs leave the dedup window
		if r == 30 {
			settled = fileSize(t, b.Path)
		}
	}
	final := fileSize(t, b.Path)
	written := int64(rounds * perRound * 400)
	t.Logf("file %d bytes after round 30, %d after round %d; %d bytes of records written", settled, final, rounds, written)
	if final > settled+settled/4 {
		t.Fatalf("the file kept growing: %d bytes after round 30, %d after round %d", settled, final, rounds)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestTrimUnderLoad checks that trims get their turn while appends never
// stop coming.
func TestTrimUnderLoad(t *testing.T) {
	b := MustOpen(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				b.MustAppend(t, entry(fmt.Sprint("dev-", g), fmt.Sprint(i), "telemetry.reading"))
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for range 20 {
		waitFor(t, 30*time.Second, "appends", func() bool { return b.State().Backlog > 0 })
		r := b.Receipt(t, b.State().Head)
		done := make(chan error, 1)
		go func() { done <- b.Trim(r) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Minute): // a hang guard, not a timing check
			t.Fatal("a trim never got its turn")
		}
		if st := b.State(); st.Base < r.HWM {
			t.Fatalf("base %d after a trim to %d", st.Base, r.HWM)
		}
	}
}
