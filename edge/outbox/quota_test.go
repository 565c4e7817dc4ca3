package outbox_test

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
)

// recordSize is the stored size of one test record (entry with body200).
func recordSize(t *testing.T) int64 {
	t.Helper()
	b := MustOpen(t)
	b.MustAppendN(t, "dev-1", "sale.completed", 1)
	return b.State().LedgerBytes
}

// A tombstone keeps every field but the body and adds the shed record's
// hash (about 250 bytes here), so shedding frees a record's body less some
// 40 bytes. The shedding tests use 2 KB readings to make that worth it.
var body2k = func() protocol.Body {
	b, err := protocol.NewBody(map[string]any{"samples": strings.Repeat("0123456789", 200)})
	if err != nil {
		panic(err)
	}
	return b
}()

// appendReading appends one 2 KB telemetry reading and returns its result.
func appendReading(t *testing.T, b *box, id string) outbox.Result {
	t.Helper()
	e := entry("dev-1", id, "telemetry.reading")
	e.Event.Body = body2k
	return b.MustAppend(t, e)[0]
}

// readingSize is the stored size of one 2 KB reading.
func readingSize(t *testing.T) int64 {
	t.Helper()
	b := MustOpen(t)
	appendReading(t, b, "x")
	return b.State().TelemetryBytes
}

func TestLedgerQuota(t *testing.T) {
	size := recordSize(t)
	b := MustOpen(t, func(o *outbox.Options) { o.LedgerQuota = 10*size + size/2 })
	b.MustAppendN(t, "dev-1", "sale.completed", 10)
	res := b.MustAppend(t, entry("dev-1", "over", "sale.completed"), entry("dev-1", "tel", "telemetry.reading"))
	if !errors.Is(res[0].Err, outbox.ErrLedgerQuota) || res[0].Seq != 0 {
		t.Fatalf("over the quota: %+v", res[0])
	}
	if oe := (*outbox.Error)(nil); !errors.As(res[0].Err, &oe) || !strings.Contains(oe.Advice(), "--ledger-quota") {
		t.Fatalf("the error does not say what to do: %v", res[0].Err)
	}
	if res[1].Err != nil || res[1].Seq != 11 {
		t.Fatalf("telemetry beside a full ledger quota: %+v", res[1])
	}
	st := b.State()
	if st.LedgerBytes != 10*size || st.LedgerQuota != 10*size+size/2 || st.Shed != 0 {
		t.Fatalf("state %+v", st)
	}
	// Once the cloud acknowledges, there is room again; nothing was dropped.
	if err := b.Trim(b.Receipt(t, 5)); err != nil {
		t.Fatal(err)
	}
	if r := b.MustAppend(t, entry("dev-1", "over", "sale.completed"))[0]; r.Err != nil || r.Seq != 12 {
		t.Fatalf("after trim: %+v", r)
	}
}

// TestTelemetryShedInOneBatch sheds many records, across index blobs and
// past ledger records, in one group commit.
func TestTelemetryShedInOneBatch(t *testing.T) {
	size := readingSize(t)
	b := MustOpen(t, func(o *outbox.Options) { o.TelemetryQuota = 20 * size })
	for i := range 20 { // a commit, and an index blob, each
		if r := appendReading(t, b, fmt.Sprint(i)); r.Err != nil {
			t.Fatalf("reading %d: %v", i, r.Err)
		}
		if i%3 == 0 {
			b.MustAppendN(t, "dev-1", "sale.completed", 1)
		}
	}
	var es []outbox.Entry
	for i := range 12 {
		e := entry("dev-1", fmt.Sprint("batch-", i), "telemetry.reading")
		e.Event.Body = body2k
		es = append(es, e)
	}
	for i, r := range b.MustAppend(t, es...) {
		if r.Err != nil {
			t.Fatalf("batch reading %d: %v", i, r.Err)
		}
	}
	st := b.State()
	if st.Shed < 12 || st.TelemetryBytes > st.TelemetryQuota {
		t.Fatalf("state %+v", st)
	}
	recs, _ := walk(t, b, 0)
	var shed uint64
	live := false
	for _, raw := range recs {
		r, err := protocol.DecodeRecord(raw)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r.IsTombstone() && (r.Class != protocol.ClassTelemetry || live):
			t.Fatalf("seq %d: a %s record shed out of order", r.Seq, r.Class)
		case r.IsTombstone():
			shed++
		case r.Class == protocol.ClassTelemetry:
			live = true
		}
	}
	if shed != st.Shed {
		t.Fatalf("%d tombstones, state says %d shed", shed, st.Shed)
	}
}

func TestTelemetryIsShedOldestFirst(t *testing.T) {
	size := readingSize(t)
	b := MustOpen(t, func(o *outbox.Options) { o.TelemetryQuota = 10 * size })
	for i := range 30 {
		if r := appendReading(t, b, fmt.Sprint(i)); r.Err != nil {
			t.Fatalf("reading %d: %v", i, r.Err)
		}
		if i%5 == 0 {
			b.MustAppendN(t, "dev-1", "sale.completed", 1)
		}
	}
	st := b.State()
	if st.Shed == 0 || st.TelemetryBytes > st.TelemetryQuota {
		t.Fatalf("state %+v", st)
	}
	recs, _ := walk(t, b, 0) // the chain verifies through the tombstones
	// The tombstones are the oldest telemetry records: once a live one is
	// seen, no later one is shed.
	var shed []uint64
	live := false
	for _, raw := range recs {
		r, err := protocol.DecodeRecord(raw)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r.IsTombstone() && r.Class != protocol.ClassTelemetry:
			t.Fatalf("seq %d: a %s record was shed", r.Seq, r.Class)
		case r.IsTombstone() && live:
			t.Fatalf("seq %d shed while an older reading was kept", r.Seq)
		case r.IsTombstone():
			shed = append(shed, r.Seq)
		case r.Class == protocol.ClassTelemetry:
			live = true
		}
	}
	if uint64(len(shed)) != st.Shed {
		t.Fatalf("%d tombstones, state says %d shed", len(shed), st.Shed)
	}
	// Shedding survives a reopen, and goes on from where it stopped.
	b.Reopen(t)
	appendReading(t, b, "after-1")
	appendReading(t, b, "after-2")
	if st2 := b.State(); st2.Shed <= st.Shed || st2.TelemetryBytes > st2.TelemetryQuota {
		t.Fatalf("after reopen %+v", st2)
	}
}

func TestTelemetryQuotaFullOfTombstones(t *testing.T) {
	size := readingSize(t)
	// Room for three readings, or about 25 tombstones.
	b := MustOpen(t, func(o *outbox.Options) { o.TelemetryQuota = 3 * size })
	var refused error
	for i := 0; i < 100 && refused == nil; i++ {
		refused = appendReading(t, b, fmt.Sprint(i)).Err
	}
	if !errors.Is(refused, outbox.ErrTelemetryQuota) {
		t.Fatalf("never refused, or refused with %v", refused)
	}
	if err := b.Trim(b.Receipt(t, b.State().Head)); err != nil {
		t.Fatal(err)
	}
	if r := appendReading(t, b, "after"); r.Err != nil {
		t.Fatalf("after trim: %v", r.Err)
	}
}

func TestSegmentCarriesTombstones(t *testing.T) {
	size := readingSize(t)
	b := MustOpen(t, func(o *outbox.Options) { o.TelemetryQuota = 5 * size })
	for i := range 4 {
		appendReading(t, b, fmt.Sprint(i))
	}
	seg, err := b.Segment(1, 0) // taken before the shedding
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if r := appendReading(t, b, fmt.Sprint("more-", i)); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	after, err := b.Segment(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := protocol.DecodeRecord(after.Records[0])
	if !r.IsTombstone() || *r.Shed != protocol.HashBytes(seg.Records[0]) {
		t.Fatalf("seq 1 after shedding: %+v", r)
	}
	// The segment read before the shed and the one after both verify
	// against the same checkpoint.
	keys := protocol.NewKeyMap(testKey.Public().(ed25519.PublicKey))
	for _, s := range []*protocol.Segment{seg} {
		cp, err := protocol.VerifyCheckpoint(s.Checkpoint, keys)
		if err != nil {
			t.Fatal(err)
		}
		want := protocol.ChainState{Stream: cp.Stream(), Seq: cp.Seq, Head: cp.Head}
		if _, _, err := protocol.VerifyChain(protocol.ChainState{Stream: b.Stream()}, after.Records[:s.Last], &want); err != nil {
			t.Fatal(err)
		}
	}
}
