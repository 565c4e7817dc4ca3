package outbox_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// testKey is the edge key of every test outbox, fixed so that a child
// process (the crash test) signs with the same key.
var testKey = ed25519.NewKeyFromSeed([]byte("outpost-outbox-test-key-seed-32b"))

func mustSigner(tb testing.TB) *protocol.Signer {
	tb.Helper()
	s, err := protocol.NewSigner(testKey)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// clock is a settable wall clock with a monotonic clock beside it: Add
// moves both (time passes), Step only the wall clock (as NTP does).
type clock struct {
	mu   sync.Mutex
	t    time.Time
	mono time.Duration
}

// Mono is the monotonic clock, for Options.Monotonic.
func (c *clock) Mono() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

// Step moves the wall clock alone, forward or back.
func (c *clock) Step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mono += d
	c.mu.Unlock()
}

// box is a test outbox with what the tests need around it.
type box struct {
	*outbox.Outbox
	Path  string
	Opts  outbox.Options
	Clock *clock
	// SkipVerify turns off the invariant check at cleanup, for tests that
	// damage the file on purpose.
	SkipVerify bool
}

// MustOpen opens a fresh outbox in a temp dir. At cleanup it closes it and
// checks the file with Verify, so every test also checks the invariants.
func MustOpen(tb testing.TB, mods ...func(*outbox.Options)) *box {
	tb.Helper()
	b := &box{Path: filepath.Join(tb.TempDir(), "outbox.db"), Clock: newClock()}
	b.Opts = outbox.Options{
		Edge:      "edge-1",
		Signer:    mustSigner(tb),
		Now:       b.Clock.Now,
		Monotonic: b.Clock.Mono,
		NoSync:    true,
		Logger:    slog.New(slog.DiscardHandler),
	}
	for _, m := range mods {
		m(&b.Opts)
	}
	b.Reopen(tb)
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
		if b.SkipVerify {
			return
		}
		if rep, err := outbox.Verify(b.Path, testKey.Public().(ed25519.PublicKey)); err != nil {
			tb.Errorf("invariants at cleanup: %v (report %+v)", err, rep)
		}
	})
	return b
}

// Reopen closes the outbox (if open) and opens the same file again.
func (b *box) Reopen(tb testing.TB) {
	tb.Helper()
	if b.Outbox != nil {
		if err := b.Outbox.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	o, err := outbox.Open(b.Path, b.Opts)
	if err != nil {
		tb.Fatal(err)
	}
	b.Outbox = o
}

// MustAppend appends and fails the test on a call error (not entry errors).
func (b *box) MustAppend(tb testing.TB, entries ...outbox.Entry) []outbox.Result {
	tb.Helper()
	res, err := b.Append(context.Background(), entries)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// MustAppendN appends n entries of type typ from device dev, one call, and
// checks each got a new seq.
func (b *box) MustAppendN(tb testing.TB, dev, typ string, n int) []outbox.Result {
	tb.Helper()
	es := make([]outbox.Entry, n)
	for i := range es {
		es[i] = entry(dev, fmt.Sprintf("%s-%d-%d", typ, time.Now().UnixNano(), i), typ)
	}
	res := b.MustAppend(tb, es...)
	for i, r := range res {
		if r.Err != nil || r.Duplicate || r.Seq == 0 {
			tb.Fatalf("entry %d: %+v", i, r)
		}
	}
	return res
}

// Receipt makes the cloud's receipt for everything up to hwm, as a cloud
// that received the stored records would.
func (b *box) Receipt(tb testing.TB, hwm uint64) protocol.Receipt {
	tb.Helper()
	st := b.State()
	var head protocol.Hash
	switch {
	case hwm == st.Head:
		head = st.HeadHash
	default:
		seg, err := b.Segment(hwm, 0)
		if err != nil || seg == nil {
			tb.Fatalf("receipt for %d: %v", hwm, err)
		}
		r, err := protocol.DecodeRecord(seg.Records[0])
		if err != nil {
			tb.Fatal(err)
		}
		head = r.LinkHash(seg.Records[0])
	}
	s := b.Stream()
	return protocol.Receipt{Edge: s.Edge, Epoch: s.Epoch, HWM: hwm, Head: head, CommittedAt: b.Clock.Now().UnixMilli()}
}

// body200 is a telemetry-like body of about 200 bytes as CBOR.
var body200 = func() protocol.Body {
	b, err := protocol.NewBody(map[string]any{
		"sensor": "fridge-3", "metric": "temp_c", "value": 4.25,
		"note": "padding padding padding padding padding padding padding padding padding padding padding padding padding padding padding padding pa",
	})
	if err != nil {
		panic(err)
	}
	return b
}()

func entry(dev, id, typ string) outbox.Entry {
	return outbox.Entry{Device: dev, Event: protocol.Event{
		ID: id, Type: typ, TS: time.UnixMilli(1740819600000).UTC(), Body: body200,
	}}
}

// walk reads the whole stream from from on through Segments, checking each
// segment's checkpoint and chain, and returns the records' bytes.
func walk(tb testing.TB, b *box, maxBytes int) (recs [][]byte, segs []*protocol.Segment) {
	tb.Helper()
	st := b.State()
	keys := protocol.NewKeyMap(testKey.Public().(ed25519.PublicKey))
	chain := protocol.ChainState{Stream: b.Stream(), Seq: st.Base}
	if st.Base > 0 {
		chain.Head = baseHash(tb, b)
	}
	for from := st.Base + 1; ; {
		seg, err := b.Segment(from, maxBytes)
		if err != nil {
			tb.Fatalf("segment from %d: %v", from, err)
		}
		if seg == nil {
			break
		}
		if _, err := protocol.EncodeSegment(seg, false); err != nil {
			tb.Fatalf("encode segment %d-%d: %v", seg.First, seg.Last, err)
		}
		cp, err := protocol.VerifyCheckpoint(seg.Checkpoint, keys)
		if err != nil {
			tb.Fatal(err)
		}
		want := protocol.ChainState{Stream: cp.Stream(), Seq: cp.Seq, Head: cp.Head}
		chain, _, err = protocol.VerifyChain(chain, seg.Records, &want)
		if err != nil {
			tb.Fatalf("segment %d-%d: %v", seg.First, seg.Last, err)
		}
		recs = append(recs, seg.Records...)
		segs = append(segs, seg)
		from = seg.Last + 1
	}
	return recs, segs
}

// baseHash is the link hash at the trimmed base, from Inspect's view of the
// chain: the prev of the first stored record.
func baseHash(tb testing.TB, b *box) protocol.Hash {
	tb.Helper()
	seg, err := b.Segment(b.State().Base+1, 0)
	if err != nil || seg == nil {
		tb.Fatalf("first stored record: %v", err)
	}
	r, err := protocol.DecodeRecord(seg.Records[0])
	if err != nil {
		tb.Fatal(err)
	}
	return r.Prev
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	poll.Until(tb, d, what, cond)
}
