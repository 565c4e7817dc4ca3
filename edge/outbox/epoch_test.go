package outbox_test

import (
	"crypto/ed25519"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/edge/outbox"
)

// copyFile copies an outbox file, as a backup or VM snapshot does.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRolledBackOutbox: an older copy of the outbox is put back (a VM
// snapshot restored). The cloud's receipt, at a watermark beyond the
// restored head, is recognised by Diverges; so is one at a seq the
// restored file holds another record at. NewEpoch keeps the file as
// outbox.stuck-<epoch>.db, readable and verifying, and new events go into a
// new stream at once, in the same running outbox; a restart still lists
// the kept file.
func TestRolledBackOutbox(t *testing.T) {
	b := MustOpen(t)
	b.MustAppendN(t, "till-1", "sale.completed", 5)
	snapshot := filepath.Join(t.TempDir(), "snapshot.db")
	b.Close()
	copyFile(t, b.Path, snapshot)
	b.Outbox = nil
	b.Reopen(t)
	b.MustAppendN(t, "till-1", "sale.completed", 5) // 6..10, then sent and committed
	future := b.Receipt(t, 10)
	if err := b.Trim(future); err != nil {
		t.Fatal(err)
	}
	if d, err := b.Diverges(future); d || err != nil {
		t.Fatalf("a matching receipt diverges: %v %v", d, err)
	}

	// The snapshot goes back; the shop sells on from seq 6, in the dead stream.
	b.Close()
	copyFile(t, snapshot, b.Path)
	b.Outbox = nil
	b.Reopen(t)
	b.MustAppendN(t, "till-2", "sale.completed", 3) // 6..8: other records than the cloud's
	stream := b.Stream()
	if d, err := b.Diverges(future); !d || err != nil {
		t.Fatalf("the cloud's receipt at 10 beyond the restored head 8: diverges %v %v", d, err)
	}
	b.MustAppendN(t, "till-2", "sale.completed", 4) // head 12, past the cloud's 10
	if d, err := b.Diverges(future); !d || err != nil {
		t.Fatalf("the cloud's receipt at 10 names another record than the restored file's: diverges %v %v", d, err)
	}
	if err := b.Trim(future); !errors.Is(err, outbox.ErrReceipt) {
		t.Fatalf("trim to the cloud's receipt: %v, want ErrReceipt", err)
	}

	ch, err := b.NewEpoch("test")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Old != stream || ch.New == stream || ch.New.Edge != stream.Edge || ch.Head != 12 || b.Stream() != ch.New {
		t.Fatalf("epoch change %+v (outbox now %s)", ch, b.Stream())
	}
	if !strings.HasPrefix(filepath.Base(ch.Stuck), outbox.StuckPrefix) || filepath.Dir(ch.Stuck) != filepath.Dir(b.Path) {
		t.Fatalf("kept as %s", ch.Stuck)
	}
	if st := b.State(); st.Head != 0 || st.Stream != ch.New || st.Stuck != 1 || st.EpochRestarts != 1 {
		t.Fatalf("state after the new epoch: %+v", st)
	}
	// New events flow in the new stream, from seq 1; a resend of a stuck
	// event is stored again, so that it reaches the cloud.
	if res := b.MustAppend(t, entry("till-2", "sale.completed-1", "sale.completed")); res[0].Seq != 1 || res[0].Duplicate {
		t.Fatalf("first append in the new epoch: %+v", res[0])
	}
	recs, segs := walk(t, b, 0)
	if len(recs) != 1 || segs[0].Stream() != ch.New {
		t.Fatalf("segments of the new epoch: %d records, %+v", len(recs), segs)
	}
	if err := b.Trim(future); !errors.Is(err, outbox.ErrReceipt) {
		t.Fatalf("a receipt for the old stream after the new epoch: %v", err)
	}
	// The kept file verifies and holds the 12 records for an operator.
	rep, err := outbox.Verify(ch.Stuck, testKey.Public().(ed25519.PublicKey))
	if err != nil || rep.Head != 12 || rep.Stream != stream {
		t.Fatalf("verify the kept file: %+v %v", rep, err)
	}
	b.Reopen(t)
	if st := b.State(); st.Stream != ch.New || st.Head != 1 || st.Stuck != 1 {
		t.Fatalf("after a restart: %+v", st)
	}
	if got := b.StuckFiles(); len(got) != 1 || got[0] != ch.Stuck {
		t.Fatalf("stuck files after a restart: %v", got)
	}
}
