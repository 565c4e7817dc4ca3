package outbox

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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
	seg, err := o.Segment(1, 0)
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
	if n := o.dedup.len(); n != 53 {
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
	if n := o2.dedup.len(); n != 3 {
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
	seg, err := o.Segment(seq, 0)
	if err != nil {
		t.Fatal(err)
	}
	h, err := linkHash(seg.Records[0])
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestDedupHashCollision appends two pairs whose hashes share a dedup table
// shard and tag: both are stored, each is its own duplicate and not the
// other's, before and after a reopen, and after the window has passed.
func TestDedupHashCollision(t *testing.T) {
	seed := maphash.MakeSeed()
	defer func(f func() maphash.Seed) { newSeed = f }(newSeed)
	newSeed = func() maphash.Seed { return seed }
	group := func(id string) uint64 {
		s, tag := split(dedupKeyString(seed, "dev-1", id))
		return uint64(s)<<24 | tag
	}
	seen := map[uint64]string{}
	var a, b string
	for i := 0; a == ""; i++ {
		id := fmt.Sprint("ev-", i)
		if other, ok := seen[group(id)]; ok {
			a, b = other, id
		}
		seen[group(id)] = id
	}
	ev := func(id string) Entry { e := testEntry(0); e.Event.ID = id; return e }
	o, clk := mustOpen(t, func(o *Options) { o.DedupWindow = time.Hour })
	appendAll := func(o *Outbox, ids ...string) []Result {
		t.Helper()
		var es []Entry
		for _, id := range ids {
			es = append(es, ev(id))
		}
		res, err := o.Append(t.Context(), es)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := appendAll(o, a, b, a, b)
	if res[0].Duplicate || res[1].Duplicate || res[0].Seq == res[1].Seq || res[2] != (Result{Seq: res[0].Seq, Duplicate: true}) || res[3] != (Result{Seq: res[1].Seq, Duplicate: true}) {
		t.Fatalf("%s and %s share a tag: %+v", a, b, res)
	}
	seqA, seqB := res[0].Seq, res[1].Seq
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o, err := Open(o.path, o.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if n := o.dedup.len(); n != 2 {
		t.Fatalf("dedup table rebuilt with %d pairs, want 2", n)
	}
	res = appendAll(o, b, a)
	if res[0] != (Result{Seq: seqB, Duplicate: true}) || res[1] != (Result{Seq: seqA, Duplicate: true}) {
		t.Fatalf("after reopen: %+v", res)
	}
	// Past the window, a stores again; its slot moves to the new record.
	clk.Add(2 * time.Hour)
	res = appendAll(o, a, a)
	if res[0].Duplicate || res[0].Seq <= seqB || res[1] != (Result{Seq: res[0].Seq, Duplicate: true}) {
		t.Fatalf("after the window: %+v", res)
	}
	if n := o.dedup.len(); n != 2 {
		t.Fatalf("dedup table holds %d pairs, want 2", n)
	}
}

// TestReleaseMappedPages drops the file mapping's pages over and over while
// appends commit and segments are read, and checks that every read sees its
// data and that a release takes the pages read out of the resident set.
func TestReleaseMappedPages(t *testing.T) {
	o, _ := mustOpen(t, nil)
	const n = 8000 // about 3.5 MiB of records
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // releases while the others work
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				o.readMapped(nil, releaseEvery)
				runtime.Gosched()
			}
		}
	}()
	for i := 0; i < n; i += 500 {
		es := make([]Entry, 500)
		for j := range es {
			es[j] = testEntry(i + j)
			es[j].Event.Body = testBody400
		}
		if _, err := o.Append(t.Context(), es); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func() {
		t.Helper()
		next := uint64(1)
		for {
			seg, err := o.Segment(next, 0)
			if err != nil {
				t.Fatal(err)
			}
			if seg == nil {
				break
			}
			for i, raw := range seg.Records {
				r, err := protocol.DecodeRecord(raw)
				if err != nil || r.Seq != next+uint64(i) {
					t.Fatalf("record %d: seq %d, %v", next+uint64(i), r.Seq, err)
				}
			}
			next = seg.Last + 1
		}
		if next != n+1 {
			t.Fatalf("read up to %d, want %d", next-1, n)
		}
	}
	readAll()
	close(stop)
	wg.Wait()
	if runtime.GOOS != "linux" {
		return
	}
	o.mapped.Store(-1 << 40) // no releases while the file is read
	readAll()
	before := rssFileKiB(t)
	o.readMapped(nil, 1<<41)
	if after := rssFileKiB(t); before-after < 2<<10 {
		t.Errorf("file-backed RSS went from %d KiB to %d KiB; want at least 2 MiB dropped", before, after)
	}
}

var testBody400 = func() protocol.Body {
	b, err := protocol.NewBody(map[string]any{"pad": fmt.Sprintf("%0390d", 0)})
	if err != nil {
		panic(err)
	}
	return b
}()

func rssFileKiB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestFewQueuedRideOneCommit: appends that arrive one by one while a commit
// is in flight all ride the commit after it, instead of the first of them
// leaving in a batch of its own and the rest waiting one more commit
// (earlyBuild).
func TestFewQueuedRideOneCommit(t *testing.T) {
	o, _ := mustOpen(t, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	o.commitHook = func() error {
		once.Do(func() { close(entered); <-release })
		return nil
	}
	first := o.AppendAsync([]Entry{testEntry(0)})
	<-entered // the first commit is in flight, held
	const n = 40
	var ps []*Pending
	for i := 1; i <= n; i++ {
		ps = append(ps, o.AppendAsync([]Entry{testEntry(i)}))
		// Give the builder a chance to run between arrivals, as a device's
		// publishes arrive.
		runtime.Gosched()
	}
	close(release)
	for i, p := range append([]*Pending{first}, ps...) {
		if res, err := p.Results(); err != nil || res[0].Err != nil || res[0].Seq != uint64(i+1) {
			t.Fatalf("append %d: %+v, %v", i, res, err)
		}
	}
	if st := o.State(); st.Commits != 2 {
		t.Fatalf("%d commits for one held commit and %d appends queued behind it, want 2 (the %d together)", st.Commits, n, n)
	}
}
