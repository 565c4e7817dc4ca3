package outbox_test

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
	bolt "go.etcd.io/bbolt"
)

var testPub = testKey.Public().(ed25519.PublicKey)

func key(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// damage changes the closed outbox file with fn in one bbolt transaction.
func damage(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyFindsDamage(t *testing.T) {
	otherKey := ed25519.NewKeyFromSeed(make([]byte, 32))
	for _, tc := range []struct {
		name     string
		damage   func(tx *bolt.Tx, s protocol.Stream) error
		firstBad uint64
	}{
		{"altered record", func(tx *bolt.Tx, s protocol.Stream) error {
			b := tx.Bucket([]byte("records"))
			v := bytes.Clone(b.Get(key(3)))
			i := bytes.Index(v, []byte("fridge-3"))
			v[i] = 'F'
			return b.Put(key(3), v)
		}, 3},
		{"missing record", func(tx *bolt.Tx, s protocol.Stream) error {
			return tx.Bucket([]byte("records")).Delete(key(3))
		}, 3},
		{"checkpoint by another key", func(tx *bolt.Tx, s protocol.Stream) error {
			signer, _ := protocol.NewSigner(otherKey)
			b := tx.Bucket([]byte("checkpoints"))
			return b.Put(key(5), signer.SignCheckpoint(protocol.Checkpoint{Edge: s.Edge, Epoch: s.Epoch, Seq: 5}))
		}, 5},
		{"checkpoint with another head", func(tx *bolt.Tx, s protocol.Stream) error {
			b := tx.Bucket([]byte("checkpoints"))
			return b.Put(key(5), mustSigner(t).SignCheckpoint(protocol.Checkpoint{Edge: s.Edge, Epoch: s.Epoch, Seq: 5, Head: protocol.Hash{1}}))
		}, 5},
		{"records without a checkpoint", func(tx *bolt.Tx, s protocol.Stream) error {
			return tx.Bucket([]byte("checkpoints")).Delete(key(10))
		}, 6},
		{"byte counts", func(tx *bolt.Tx, s protocol.Stream) error {
			return tx.Bucket([]byte("meta")).Put([]byte("bytes"), make([]byte, 16))
		}, 10},
		{"missing index", func(tx *bolt.Tx, s protocol.Stream) error {
			return tx.Bucket([]byte("index")).Delete(key(5))
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := MustOpen(t)
			b.SkipVerify = true
			b.MustAppendN(t, "dev-1", "sale.completed", 5)
			b.MustAppendN(t, "dev-1", "sale.completed", 5)
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := outbox.Verify(b.Path, testPub); err != nil {
				t.Fatalf("before the damage: %v", err)
			}
			damage(t, b.Path, func(tx *bolt.Tx) error { return tc.damage(tx, b.Stream()) })
			rep, err := outbox.Verify(b.Path, testPub)
			if !errors.Is(err, outbox.ErrCorrupt) || rep.FirstBad != tc.firstBad {
				t.Fatalf("first bad %d (%s), want %d; err %v", rep.FirstBad, rep.Problem, tc.firstBad, err)
			}
			t.Log(err)
		})
	}
}

func TestVerifyAfterTrimAndShed(t *testing.T) {
	size := readingSize(t)
	b := MustOpen(t, func(o *outbox.Options) { o.TelemetryQuota = 4 * size })
	for i := range 12 {
		appendReading(t, b, string(rune('a'+i)))
	}
	if err := b.Trim(b.Receipt(t, 3)); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := outbox.Verify(b.Path, testPub)
	if err != nil || rep.Base != 3 || rep.Head != 12 || rep.Records != 9 || rep.Tombstones == 0 || rep.Checkpoints != 9 {
		t.Fatalf("%+v %v", rep, err)
	}
	b.Reopen(t)
}

func TestOfflineToolsWhileTheDaemonRuns(t *testing.T) {
	b := MustOpen(t)
	b.MustAppendN(t, "dev-1", "sale.completed", 1)
	for name, run := range map[string]func() error{
		"verify":  func() error { _, err := outbox.Verify(b.Path, testPub); return err },
		"inspect": func() error { _, err := outbox.Inspect(b.Path); return err },
		"export":  func() error { return outbox.Export(b.Path, 0, 0, &bytes.Buffer{}) },
	} {
		// ErrLocked at all means the tool did not wait for the daemon's lock.
		if err := run(); !errors.Is(err, outbox.ErrLocked) || !strings.Contains(outbox.ErrLocked.Advice(), "daemon") {
			t.Fatalf("%s while open: %v", name, err)
		}
	}
	if _, err := outbox.Inspect(b.Path + ".missing"); err == nil {
		t.Fatal("inspect of a missing file")
	}
}

func TestInspectAndExport(t *testing.T) {
	b := MustOpen(t, func(o *outbox.Options) { o.LedgerQuota = 1 << 20 })
	b.MustAppendN(t, "dev-1", "sale.completed", 4)
	b.Clock.Add(time.Minute)
	b.MustAppendN(t, "dev-2", "telemetry.reading", 3)
	if err := b.Trim(b.Receipt(t, 2)); err != nil {
		t.Fatal(err)
	}
	st := b.State()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := outbox.Inspect(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Stream != st.Stream || info.Base != 2 || info.HWM != 2 || info.Head != 7 || info.Records != 5 ||
		info.Backlog != 5 || info.BacklogBytes != st.BacklogBytes || info.LedgerBytes != st.LedgerBytes ||
		info.TelemetryBytes != st.TelemetryBytes || info.LedgerQuota != 1<<20 || info.TelemetryQuota != outbox.DefaultTelemetryQuota ||
		!info.OldestUnsent.Equal(st.OldestUnsent) || info.Checkpoints != 2 || info.FileBytes == 0 || info.HeadHash != st.HeadHash {
		t.Fatalf("inspect %+v\nstate %+v", info, st)
	}
	for _, tc := range []struct {
		from, to uint64
		want     []uint64
	}{
		{0, 0, []uint64{3, 4, 5, 6, 7}},
		{1, 4, []uint64{3, 4}},
		{5, 5, []uint64{5}},
		{6, 0, []uint64{6, 7}},
		{8, 0, nil},
	} {
		var buf bytes.Buffer
		if err := outbox.Export(b.Path, tc.from, tc.to, &buf); err != nil {
			t.Fatal(err)
		}
		var got []uint64
		sc := bufio.NewScanner(&buf)
		for sc.Scan() {
			var j protocol.RecordJSON
			if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
				t.Fatal(err)
			}
			if j.Edge != "edge-1" || j.Body == nil || j.Hash.IsZero() {
				t.Fatalf("line %s", sc.Bytes())
			}
			got = append(got, j.Seq)
		}
		if len(got) != len(tc.want) || (len(got) > 0 && (got[0] != tc.want[0] || got[len(got)-1] != tc.want[len(tc.want)-1])) {
			t.Fatalf("export %d..%d: %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
	b.Reopen(t)
}

// Records reads what a closed file holds, in seq order, after a trim and
// with tombstones among them; on an open file it is refused (ErrLocked).
func TestRecords(t *testing.T) {
	size := readingSize(t)
	b := MustOpen(t, func(o *outbox.Options) { o.TelemetryQuota = 4 * size })
	b.MustAppendN(t, "dev-1", "sale.completed", 2)
	for i := range 6 {
		appendReading(t, b, string(rune('a'+i)))
	}
	if err := b.Trim(b.Receipt(t, 1)); err != nil {
		t.Fatal(err)
	}
	read := func() (seqs []uint64, tombstones int, err error) {
		err = outbox.Records(b.Path, func(seq uint64, r protocol.Record) error {
			if r.Seq != seq || r.Edge != "edge-1" {
				t.Fatalf("record %d: %+v", seq, r)
			}
			if r.IsTombstone() {
				tombstones++
			}
			seqs = append(seqs, seq)
			return nil
		})
		return seqs, tombstones, err
	}
	if _, _, err := read(); !errors.Is(err, outbox.ErrLocked) {
		t.Fatalf("while open: %v, want ErrLocked", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	seqs, tombstones, err := read()
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 7 || seqs[0] != 2 || seqs[6] != 8 || tombstones == 0 {
		t.Fatalf("seqs %v, %d tombstones; want 2..8 with the shed telemetry as tombstones", seqs, tombstones)
	}
	stop := errors.New("stop")
	if err := outbox.Records(b.Path, func(uint64, protocol.Record) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("fn's error: %v", err)
	}
	b.Reopen(t)
}
