package outbox_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/edge/outbox"
)

// TestFileCapDrainsOnly fills a file capped by MaxFileBytes, which bbolt
// enforces the way a full volume would refuse a write, and checks the
// drain-only mode end to end: appends refused, reads and trims working,
// appends back once a trim has freed space, nothing lost or broken.
func TestFileCapDrainsOnly(t *testing.T) {
	b := MustOpen(t, func(o *outbox.Options) { o.MaxFileBytes = 1 << 20 })
	var full error
	stored := uint64(0)
	for i := 0; i < 200 && full == nil; i++ {
		es := make([]outbox.Entry, 50)
		for j := range es {
			es[j] = entry("dev-1", fmt.Sprintf("%d-%d", i, j), "telemetry.reading")
		}
		res, err := b.Append(t.Context(), es)
		switch {
		case err == nil:
			stored = res[len(res)-1].Seq
		case errors.Is(err, outbox.ErrDiskFull):
			full = err
			for _, r := range res {
				if !errors.Is(r.Err, outbox.ErrDiskFull) {
					t.Fatalf("entry result %+v", r)
				}
			}
		default:
			t.Fatal(err)
		}
	}
	if full == nil {
		t.Fatal("the capped file never filled")
	}
	t.Logf("full after %d records: %v", stored, full)
	st := b.State()
	if !st.DrainOnly || st.Head != stored {
		t.Fatalf("state %+v", st)
	}
	// Drain-only: new appends are refused at once...
	if _, err := b.Append(t.Context(), []outbox.Entry{entry("dev-2", "x", "sale.completed")}); !errors.Is(err, outbox.ErrDiskFull) {
		t.Fatalf("append in drain-only mode: %v", err)
	}
	// ...while the uplink still reads everything, and trims.
	if recs, _ := walk(t, b, 0); uint64(len(recs)) != stored {
		t.Fatalf("%d records readable, %d stored", len(recs), stored)
	}
	if err := b.Trim(b.Receipt(t, stored)); err != nil {
		t.Fatal(err)
	}
	if st := b.State(); st.DrainOnly {
		t.Fatalf("still drain-only after a trim freed space: %+v", st)
	}
	res, err := b.Append(t.Context(), []outbox.Entry{entry("dev-2", "x", "sale.completed")})
	if err != nil || res[0].Seq != stored+1 {
		t.Fatalf("append after the trim: %+v %v", res, err)
	}
}

// TestReopenBelowFileCap: an outbox reopened with MaxFileBytes below its
// file's size opens (the README promises drain-only, not a refusal to
// start): appends are refused with ErrDiskFull, State says DrainOnly from
// the start, and the backlog is still read and trimmed, after which appends
// work again.
func TestReopenBelowFileCap(t *testing.T) {
	b := MustOpen(t)
	for i := range 40 {
		es := make([]outbox.Entry, 100)
		for j := range es {
			es[j] = entry("dev-1", fmt.Sprintf("%d-%d", i, j), "sale.completed")
		}
		b.MustAppend(t, es...)
	}
	head := b.State().Head
	size := fileSizeOf(t, b.Path)
	b.Opts.MaxFileBytes = size / 2
	b.Reopen(t)
	if st := b.State(); !st.DrainOnly {
		t.Fatalf("reopened with a cap of %d below the file's %d bytes: not drain-only: %+v", size/2, size, st)
	}
	if _, err := b.Append(t.Context(), []outbox.Entry{entry("dev-2", "x", "sale.completed")}); !errors.Is(err, outbox.ErrDiskFull) {
		t.Fatalf("append over the cap: %v", err)
	}
	if recs, _ := walk(t, b, 0); uint64(len(recs)) != head {
		t.Fatalf("%d records readable, %d stored", len(recs), head)
	}
	if err := b.Trim(b.Receipt(t, head)); err != nil {
		t.Fatal(err)
	}
	if st := b.State(); st.DrainOnly {
		t.Fatalf("still drain-only after a trim freed space: %+v", st)
	}
	if res, err := b.Append(t.Context(), []outbox.Entry{entry("dev-2", "x", "sale.completed")}); err != nil || res[0].Seq != head+1 {
		t.Fatalf("append after the trim: %+v %v", res, err)
	}
}

func fileSizeOf(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestCreateSyncsDir: a new outbox file's directory is fsynced before Open
// returns (bbolt syncs the file, not the directory entry naming it, which a
// power cut could otherwise take away with every record acknowledged
// since); reopening an existing file does not need it.
func TestCreateSyncsDir(t *testing.T) {
	var synced []string
	t.Cleanup(outbox.OnCreateSyncDir(func(dir string) { synced = append(synced, dir) }))
	b := MustOpen(t, func(o *outbox.Options) { o.NoSync = false })
	if len(synced) != 1 || synced[0] != filepath.Dir(b.Path) {
		t.Fatalf("directories fsynced at creation: %v, want [%s]", synced, filepath.Dir(b.Path))
	}
	b.Reopen(t)
	if len(synced) != 1 {
		t.Fatalf("fsynced again on reopen: %v", synced)
	}
}
