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
	o, clk := mustOpen(t, nil)
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
