package outbox

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

var internalKey = ed25519.NewKeyFromSeed([]byte("outpost-outbox-internal-test-key"))

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// mustOpen opens a test outbox and checks the file with Verify at cleanup.
func mustOpen(t *testing.T, mod func(*Options)) (*Outbox, *testClock) {
	t.Helper()
	s, err := protocol.NewSigner(internalKey)
	if err != nil {
		t.Fatal(err)
	}
	clk := &testClock{t: time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)}
	opts := Options{Edge: "edge-1", Signer: s, Now: clk.Now, NoSync: true, Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&opts)
	}
	path := filepath.Join(t.TempDir(), "outbox.db")
	o, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := o.Close(); err != nil {
			t.Error(err)
		}
		if _, err := Verify(path, internalKey.Public().(ed25519.PublicKey)); err != nil {
			t.Errorf("invariants at cleanup: %v", err)
		}
	})
	return o, clk
}

func testEntry(i int) Entry {
	body, _ := protocol.NewBody(map[string]any{"n": i})
	return Entry{Device: "dev-1", Event: protocol.Event{ID: fmt.Sprint("ev-", i), Type: "sale.completed", TS: time.UnixMilli(1740819600000), Body: body}}
}

// failCommits makes the committer's commits fail with ENOSPC, as a full
// volume fails bbolt's write or fdatasync, from the nth commit on.
type failCommits struct {
	mu    sync.Mutex
	n     int
	count int
	on    bool
}

func (f *failCommits) hook() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count++
	if f.on && f.count >= f.n {
		return &os.PathError{Op: "write", Path: "outbox.db", Err: syscall.ENOSPC}
	}
	return nil
}

func (f *failCommits) set(on bool) {
	f.mu.Lock()
	f.on = on
	f.mu.Unlock()
}

func TestDiskFullDrainOnly(t *testing.T) {
	o, clk := mustOpen(t, func(o *Options) { o.MaxBatch = 50 })
	fc := &failCommits{n: 4, on: true}
	o.commitHook = fc.hook
	// Many appends in flight, so that batches are built while an earlier
	// one is committing: the failing commit has a successor to throw away.
	var ps []*Pending
	for i := range 400 {
		ps = append(ps, o.AppendAsync([]Entry{testEntry(i)}))
	}
	var ok, full int
	last := uint64(0)
	refused := -1
	for i, p := range ps {
		res, err := p.Results()
		switch {
		case err == nil:
			ok++
			if res[0].Seq <= last {
				t.Fatalf("append %d: seq %d after %d", i, res[0].Seq, last)
			}
			last = res[0].Seq
		case errors.Is(err, ErrDiskFull) && errors.Is(res[0].Err, ErrDiskFull):
			full++
			refused = i
		default:
			t.Fatalf("append %d: %v", i, err)
		}
	}
	st := o.State()
	t.Logf("%d stored, %d refused; %+v", ok, full, st)
	if full == 0 || !st.DrainOnly || st.Head != uint64(ok) || st.Head != last {
		t.Fatalf("ok %d full %d last %d state %+v", ok, full, last, st)
	}
	// Reading and trimming go on in drain-only mode.
	seg, err := o.Segments(1, 0)
	if err != nil || seg.Last != st.Head {
		t.Fatalf("segment: %v", err)
	}
	// The disk has room again but no trim freed any: a retry comes after
	// drainRetry.
	fc.set(false)
	if _, err := o.Append(t.Context(), []Entry{testEntry(1000)}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("append before the retry time: %v", err)
	}
	clk.Add(drainRetry)
	res, err := o.Append(t.Context(), []Entry{testEntry(1001)})
	if err != nil || res[0].Seq != st.Head+1 {
		t.Fatalf("append after the retry time: %+v %v", res, err)
	}
	if o.State().DrainOnly {
		t.Fatal("still drain-only after a commit succeeded")
	}
	// Full again; this time a trim lifts drain-only mode.
	fc.mu.Lock()
	fc.on, fc.n = true, 0
	fc.mu.Unlock()
	if _, err := o.Append(t.Context(), []Entry{testEntry(1002)}); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("append on a full disk: %v", err)
	}
	fc.set(false)
	hwm := o.State().Head
	if err := o.Trim(protocol.Receipt{Edge: "edge-1", Epoch: o.Stream().Epoch, HWM: hwm, Head: o.State().HeadHash}); err != nil {
		t.Fatal(err)
	}
	if o.State().DrainOnly {
		t.Fatal("still drain-only after a trim")
	}
	res, err = o.Append(t.Context(), []Entry{testEntry(1003)})
	if err != nil || res[0].Seq != hwm+1 {
		t.Fatalf("append after the trim: %+v %v", res, err)
	}
	// A refused entry was never stored, so it is not a duplicate now.
	res, err = o.Append(t.Context(), []Entry{testEntry(refused)})
	if err != nil || res[0].Duplicate || res[0].Seq != hwm+2 {
		t.Fatalf("refused entry %d appended again: %+v %v", refused, res, err)
	}
}

func TestIsDiskFull(t *testing.T) {
	for _, tc := range []struct {
		err  error
		full bool
	}{
		{syscall.ENOSPC, true},
		{&os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}, true},
		{fmt.Errorf("file resize error: %s", syscall.ENOSPC), true}, // how bbolt wraps its growth errors
		{syscall.EIO, false},
		{errors.New("other"), false},
	} {
		if got := isDiskFull(tc.err); got != tc.full {
			t.Errorf("isDiskFull(%v) = %v", tc.err, got)
		}
	}
}

// TestDedupIndexIsPruned checks that index blobs leave the file, and their
// pairs the dedup table, once their records are trimmed and the window has
// passed; and that the table is rebuilt the same at open.
func TestDedupIndexIsPruned(t *testing.T) {
	o, clk := mustOpen(t, func(o *Options) { o.DedupWindow = time.Minute })
	for i := range 10 { // ten commits, ten index blobs
		es := make([]Entry, 10)
		for j := range es {
			es[j] = testEntry(10*i + j)
		}
		if _, err := o.Append(t.Context(), es); err != nil {
			t.Fatal(err)
		}
	}
	st := o.State()
	if err := o.Trim(protocol.Receipt{Edge: "edge-1", Epoch: o.Stream().Epoch, HWM: 50, Head: mustLinkHash(t, o, 50)}); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Minute)
	// Each commit prunes up to pruneBlobs blobs; only the five trimmed ones go.
	for i := range 3 {
		if _, err := o.Append(t.Context(), []Entry{testEntry(1000 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(o.dedup); n != 53 {
		t.Fatalf("dedup table holds %d pairs, want 53 (50 unacknowledged + 3 new)", n)
	}
	info, err := Inspect(o.path)
	if err != nil {
		t.Fatal(err)
	}
	if info.IndexRuns != 8 {
		t.Fatalf("%d index blobs, want 8", info.IndexRuns)
	}
	o2, err := Open(o.path, o.opts)
	if err != nil {
		t.Fatal(err)
	}
	// The unacknowledged 50 are older than the window too: still stored,
	// but no longer duplicates.
	if n := len(o2.dedup); n != 3 {
		t.Errorf("dedup table rebuilt with %d pairs, want 3", n)
	}
	res, err := o2.Append(t.Context(), []Entry{testEntry(60), testEntry(1000)})
	if err != nil || res[0].Duplicate || res[0].Seq != st.Head+4 || !res[1].Duplicate {
		t.Fatalf("%+v %v", res, err)
	}
	o2.Close()
}

func mustLinkHash(t *testing.T, o *Outbox, seq uint64) protocol.Hash {
	t.Helper()
	seg, err := o.Segments(seq, 0)
	if err != nil {
		t.Fatal(err)
	}
	h, err := linkHash(seg.Records[0])
	if err != nil {
		t.Fatal(err)
	}
	return h
}
