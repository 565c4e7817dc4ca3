package outbox_test

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
)

// fill appends n records of about 300 bytes in calls of 100.
func fill(t *testing.T, b *box, prefix string, n int) {
	t.Helper()
	for i := 0; i < n; i += 100 {
		es := make([]outbox.Entry, 100)
		for j := range es {
			es[j] = entry("dev-1", fmt.Sprintf("%s-%d-%d", prefix, i, j), "sale.completed")
		}
		b.MustAppend(t, es...)
	}
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestCompactOffline: after a drained backlog, `edge outbox compact`
// (Compact) gives the file's free pages back to the volume; the file
// verifies and the edge goes on from where it was. While the edge runs,
// Compact refuses (ErrLocked).
func TestCompactOffline(t *testing.T) {
	b := MustOpen(t, func(o *outbox.Options) { o.NoShrink = true })
	fill(t, b, "a", 20000)
	head := b.State().Head
	if _, err := outbox.Compact(b.Path); !errors.Is(err, outbox.ErrLocked) {
		t.Fatalf("compact while the outbox is open: %v, want ErrLocked", err)
	}
	if err := b.Trim(b.Receipt(t, head-10)); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	before := size(t, b.Path)
	rep, err := outbox.Compact(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compacted %d -> %d bytes", rep.BytesBefore, rep.BytesAfter)
	if rep.BytesBefore != before || rep.BytesAfter != size(t, b.Path) || rep.BytesAfter*4 > before {
		t.Fatalf("report %+v, file %d bytes before: want it under a quarter", rep, before)
	}
	if _, err := outbox.Verify(b.Path, testKey.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.Path + ".compact"); !os.IsNotExist(err) {
		t.Fatalf("the copy was left behind: %v", err)
	}
	b.Outbox = nil
	b.Reopen(t)
	if st := b.State(); st.Head != head || st.HWM != head-10 {
		t.Fatalf("after compaction: %+v", st)
	}
	if recs, _ := walk(t, b, 0); len(recs) != 10 {
		t.Fatalf("%d records to send after compaction, want 10", len(recs))
	}
	if res := b.MustAppend(t, entry("dev-1", "a-0-0", "sale.completed")); !res[0].Duplicate {
		t.Fatalf("dedup lost in compaction: %+v", res[0])
	}
	if res := b.MustAppend(t, entry("dev-1", "new", "sale.completed")); res[0].Seq != head+1 {
		t.Fatalf("append after compaction: %+v", res[0])
	}
}

// TestShrinkOnline: a trim that leaves the file mostly free shrinks it
// while the outbox runs; reads, appends and dedup go on, and a reopen
// finds everything.
func TestShrinkOnline(t *testing.T) {
	t.Cleanup(outbox.SetShrinkThresholds(1<<20, 64<<20)) // after the outbox is closed
	b := MustOpen(t)
	fill(t, b, "a", 20000)
	head := b.State().Head
	before := size(t, b.Path)
	if err := b.Trim(b.Receipt(t, head-10)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the file to shrink", func() bool { return size(t, b.Path)*4 < before })
	t.Logf("shrank %d -> %d bytes", before, size(t, b.Path))
	if recs, _ := walk(t, b, 0); len(recs) != 10 {
		t.Fatalf("%d records to send after the shrink, want 10", len(recs))
	}
	if res := b.MustAppend(t, entry("dev-1", "a-0-0", "sale.completed")); !res[0].Duplicate {
		t.Fatalf("dedup lost in the shrink: %+v", res[0])
	}
	if res := b.MustAppend(t, entry("dev-1", "new", "sale.completed")); res[0].Seq != head+1 {
		t.Fatalf("append after the shrink: %+v", res[0])
	}
	b.Reopen(t)
	if st := b.State(); st.Head != head+1 || st.HWM != head-10 {
		t.Fatalf("after the shrink and a reopen: %+v", st)
	}
}
