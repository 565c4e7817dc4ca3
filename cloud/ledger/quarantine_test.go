package ledger_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// The attack: 100 copies of a 937 KB forged segment for an edge id never
// registered added 97 MB to the quarantine in 7 s. Now copies only count,
// a sender over its byte cap keeps prefixes, over its row cap only counts,
// and old rows go after the retention; all of it is counted.
func TestQuarantineBounded(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	conn := MustConn(t, url)
	clock := &testClock{now: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	lim := ledger.QuarantineLimits{EdgeBytes: 1 << 20, UnknownBytes: 64 << 10, Rows: 5, Prefix: 256, Retention: 24 * time.Hour}
	l := ledger.New(conn, ledger.Options{Now: clock.Now, Quarantine: lim})

	stranger := newTestEdge(t, "stranger")
	c := makeChain(t, protocol.Stream{Edge: stranger.ID, Epoch: newEpoch(t)}, 3, time.Now())
	forged := segment(c, stranger, 1, 3)
	big := func(salt byte) []byte { return bytes.Repeat([]byte{salt}, 937<<10) }

	// 100 copies of one payload: one row, a prefix (over the 64 KiB cap
	// for a sender that is not registered), 100 copies.
	var id int64
	for range 100 {
		out := MustCommit(t, l, ledger.Input{TopicEdge: stranger.ID, Segment: forged, Raw: big(1)})
		if out[0].Kind != ledger.KindQuarantined || out[0].Code != protocol.NackUnknown || out[0].QuarantineID == 0 {
			t.Fatalf("outcome %+v", out[0])
		}
		if id != 0 && out[0].QuarantineID != id {
			t.Fatalf("a copy got its own row %d (first %d)", out[0].QuarantineID, id)
		}
		id = out[0].QuarantineID
	}
	q, err := l.Quarantine(ctx, id-1, 1)
	if err != nil || len(q) != 1 {
		t.Fatalf("quarantine %+v, %v", q, err)
	}
	if e := q[0]; e.Copies != 100 || !e.Truncated || len(e.Payload) != 256 || e.Size != 937<<10 || !bytes.Equal(e.Payload, big(1)[:256]) {
		t.Fatalf("entry: copies %d, truncated %v, %d bytes kept of %d", e.Copies, e.Truncated, len(e.Payload), e.Size)
	}

	// Ten distinct payloads: four more rows (the cap is 5), six only counted.
	for i := range 10 {
		MustCommit(t, l, ledger.Input{TopicEdge: stranger.ID, Segment: forged, Raw: big(byte(10 + i))})
	}
	if n := count(t, conn, `SELECT count(*) FROM quarantine`); n != 5 {
		t.Fatalf("%d quarantine rows, want 5 (the row cap)", n)
	}
	if n := count(t, conn, `SELECT coalesce(sum(length(payload)), 0)::int FROM quarantine`); n > 5*256 {
		t.Fatalf("quarantine holds %d payload bytes; want at most 5 prefixes", n)
	}
	st := l.Stats()
	if st.QuarantineCopies != 99 || st.QuarantineTruncated != 5 || st.QuarantineDropped != 6 || st.Quarantined != 110 {
		t.Fatalf("stats %+v", st)
	}
	senders, err := l.QuarantineSenders(ctx)
	if err != nil || len(senders) != 1 || senders[0].Rows != 5 || senders[0].Dropped != 6 || senders[0].DroppedSize != 6*937<<10 {
		t.Fatalf("senders %+v, %v", senders, err)
	}

	// A registered edge has its own, larger cap: a refused segment of its
	// own is kept whole.
	e := MustAddEdge(t, l, "shop-1")
	ec := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 3, time.Now())
	bad := segment(ec, e, 1, 3)
	bad.Records[1] = bytes.Clone(bad.Records[1])
	bad.Records[1][len(bad.Records[1])-2] ^= 1
	raw, err := protocol.EncodeSegment(bad, false)
	if err != nil {
		t.Fatal(err)
	}
	out := MustCommit(t, l, ledger.Input{TopicEdge: e.ID, Segment: bad, Raw: raw})
	q, err = l.Quarantine(ctx, out[0].QuarantineID-1, 1)
	if err != nil || len(q) != 1 || q[0].Truncated || !bytes.Equal(q[0].Payload, raw) || q[0].Code != protocol.NackChain.String() {
		t.Fatalf("registered edge's entry %+v, %v", q, err)
	}

	// After the retention, the rows go, and the senders' totals with them.
	clock.Advance(25 * time.Hour)
	n, err := l.PruneQuarantine(ctx)
	if err != nil || n != 6 {
		t.Fatalf("pruned %d, %v; want 6", n, err)
	}
	if n := count(t, conn, `SELECT count(*) FROM quarantine`); n != 0 {
		t.Fatalf("%d rows after the retention", n)
	}
	senders, _ = l.QuarantineSenders(ctx)
	for _, s := range senders {
		if s.Rows != 0 || s.Bytes != 0 {
			t.Fatalf("sender %+v after pruning", s)
		}
	}
	// The stranger can quarantine again (and is counted as new).
	if out := MustCommit(t, l, ledger.Input{TopicEdge: stranger.ID, Segment: forged, Raw: big(1)}); out[0].QuarantineID == 0 {
		t.Fatalf("outcome %+v after pruning", out[0])
	}
}

// A segment that does not decode is quarantined under the topic's edge,
// with the decoder's complaint as its reason.
func TestQuarantineUndecodable(t *testing.T) {
	ctx := context.Background()
	l := ledger.New(MustConn(t, MustMigratedDB(t)), ledger.Options{})
	out := MustCommit(t, l, ledger.Input{TopicEdge: "shop-9", Raw: []byte("\xa1garbage"), Problem: "segment: unexpected EOF: malformed"})
	if o := out[0]; o.Kind != ledger.KindQuarantined || o.Code != protocol.NackMalformed || o.QuarantineID == 0 || o.Stream.Edge != "shop-9" {
		t.Fatalf("outcome %+v", o)
	}
	q, err := l.Quarantine(ctx, 0, 10)
	if err != nil || len(q) != 1 || q[0].Edge != "shop-9" || string(q[0].Payload) != "\xa1garbage" || q[0].Reason != "the segment does not decode: segment: unexpected EOF: malformed" {
		t.Fatalf("quarantine %+v, %v", q, err)
	}
}
