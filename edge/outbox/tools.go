package outbox

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The offline tools open the file read-only, under bbolt's shared lock. The
// daemon holds the exclusive lock while it runs, so they fail with ErrLocked
// after a short wait instead of hanging.

func openReadOnly(path string) (*bolt.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: toolTimeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			err = ErrLocked
		}
		return nil, fmt.Errorf("open outbox %s read-only: %w", path, err)
	}
	return db, nil
}

func viewFile(path string, fn func(tx *bolt.Tx) error) error {
	db, err := openReadOnly(path)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketRecords, bucketCheckpoints, bucketIndex} {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%s: no %s bucket; not an outbox file: %w", path, name, ErrCorrupt)
			}
		}
		return fn(tx)
	})
}

// Report is what Verify found.
type Report struct {
	Stream      protocol.Stream
	Base        uint64 // records <= Base were trimmed; the chain starts after it
	HWM         uint64
	Head        uint64
	Records     int // stored records checked
	Tombstones  int
	Checkpoints int // stored checkpoints whose signature verified
	// FirstBad is the first seq that breaks the chain, a checkpoint or the
	// metadata; 0 when the file is intact.
	FirstBad uint64
	Problem  string
}

// Verify checks an outbox file offline: the chain of every stored record
// from the trimmed base (protocol.VerifyChain), every stored checkpoint's
// signature by pub and that its head is the chain at its seq, that every
// record is covered by a checkpoint, and that the metadata (head, byte
// counts, index) agrees with the records. A problem is reported in
// Report.FirstBad and Problem, and as an error wrapping ErrCorrupt.
func Verify(path string, pub ed25519.PublicKey) (Report, error) {
	if len(pub) != ed25519.PublicKeySize {
		return Report{}, fmt.Errorf("verify %s: need the edge's Ed25519 public key (%d bytes), got %d bytes", path, ed25519.PublicKeySize, len(pub))
	}
	if err := protocol.ValidatePublicKey(pub); err != nil {
		return Report{}, fmt.Errorf("verify %s: %w", path, err)
	}
	return VerifyKeys(path, protocol.NewKeyMap(pub))
}

// VerifyKeys is Verify with a set of keys, for an edge whose key was
// rotated: each checkpoint names the key that signed it.
func VerifyKeys(path string, keys protocol.Keys) (Report, error) {
	var rep Report
	err := viewFile(path, func(tx *bolt.Tx) error {
		return verifyTx(tx, keys, &rep)
	})
	if err != nil {
		return rep, fmt.Errorf("verify %s: %w", path, err)
	}
	if rep.FirstBad != 0 {
		return rep, fmt.Errorf("verify %s: seq %d: %s: %w", path, rep.FirstBad, rep.Problem, ErrCorrupt)
	}
	return rep, nil
}

func verifyTx(tx *bolt.Tx, keys protocol.Keys, rep *Report) error {
	m, err := readMeta(tx)
	if err != nil {
		return err
	}
	rep.Stream, rep.Base, rep.HWM, rep.Head = m.stream, m.base, m.hwm, m.head
	bad := func(seq uint64, format string, args ...any) error {
		rep.FirstBad, rep.Problem = max(seq, 1), fmt.Sprintf(format, args...)
		return nil
	}
	if !m.hasStream {
		return bad(1, "no stream in meta")
	}
	if m.head < m.base || m.hwm > m.head || m.hwm < m.base {
		return bad(m.base+1, "meta positions out of order: base %d, hwm %d, head %d", m.base, m.hwm, m.head)
	}
	recs := tx.Bucket(bucketRecords).Cursor()
	if k, _ := recs.First(); k != nil && keySeq(k) <= m.base {
		return bad(keySeq(k), "record %d is stored at or below the trimmed base %d", keySeq(k), m.base)
	}
	if k, _ := recs.Last(); k != nil && keySeq(k) > m.head {
		return bad(m.head+1, "record %d is stored beyond the head %d", keySeq(k), m.head)
	}
	idx := tx.Bucket(bucketIndex)
	st := protocol.ChainState{Stream: m.stream, Seq: m.base, Head: m.baseHash}
	var ledger, tel int64
	k, v := recs.Seek(seqKey(m.base + 1))
	cps := tx.Bucket(bucketCheckpoints).Cursor()
	for ck, cv := cps.First(); ck != nil; ck, cv = cps.Next() {
		cseq := keySeq(ck)
		if cseq <= m.base {
			return bad(cseq, "checkpoint at %d is at or below the trimmed base %d", cseq, m.base)
		}
		c, err := protocol.VerifyCheckpoint(cv, keys)
		if err != nil {
			return bad(cseq, "checkpoint: %v", err)
		}
		if c.Seq != cseq || c.Stream() != m.stream {
			return bad(cseq, "checkpoint stored at %d is for %s seq %d", cseq, c.Stream(), c.Seq)
		}
		rep.Checkpoints++
		var run [][]byte
		for ; k != nil && keySeq(k) <= cseq; k, v = recs.Next() {
			run = append(run, v)
		}
		want := protocol.ChainState{Stream: m.stream, Seq: c.Seq, Head: c.Head}
		next, decoded, err := protocol.VerifyChain(st, run, &want)
		if err != nil {
			var ce *protocol.ChainError
			if errors.As(err, &ce) {
				return bad(ce.Seq, "%v", ce)
			}
			return bad(st.Seq+1, "%v", err)
		}
		if last := decoded[len(decoded)-1]; last.EdgeTime != c.EdgeTime {
			return bad(cseq, "checkpoint edge_time %d differs from the record's %d", c.EdgeTime, last.EdgeTime)
		}
		for i := range decoded {
			r := &decoded[i]
			if r.IsTombstone() {
				rep.Tombstones++
			}
			if r.Class == protocol.ClassLedger {
				ledger += int64(len(run[i]))
			} else {
				tel += int64(len(run[i]))
			}
			e, ok, err := lookupIndex(idx, r.Seq)
			switch {
			case err != nil:
				return bad(r.Seq, "index: %v", err)
			case !ok:
				return bad(r.Seq, "no index entry")
			case e.edgeTime != r.EdgeTime || e.class != classByte(r.Class) ||
				!bytes.Equal(e.device, []byte(r.Device)) || !bytes.Equal(e.id, []byte(r.ID)):
				return bad(r.Seq, "index entry differs from the record")
			}
		}
		rep.Records += len(run)
		st = next
	}
	switch {
	case st.Seq != m.head:
		return bad(st.Seq+1, "records %d to %d are not covered by a checkpoint", st.Seq+1, m.head)
	case m.head > m.base && st.Head != m.headHash:
		return bad(m.head, "meta head hash %s differs from the chain's %s", m.headHash, st.Head)
	case ledger != m.ledgerBytes || tel != m.telBytes:
		return bad(m.head, "meta byte counts ledger %d telemetry %d differ from the records' %d and %d",
			m.ledgerBytes, m.telBytes, ledger, tel)
	}
	return nil
}

// Info describes an outbox file, for operators.
type Info struct {
	Path      string
	FileBytes int64
	Stream    protocol.Stream
	Created   time.Time

	Base, HWM, Head uint64
	HeadHash        protocol.Hash
	HWMCommittedAt  time.Time // the cloud's commit time in the last receipt

	Records     int // stored records (Head-Base)
	Checkpoints int
	IndexRuns   int // index blobs kept for dedup

	Backlog         uint64 // records not yet acknowledged
	BacklogBytes    int64
	OldestUnsent    time.Time
	OldestUnsentAge time.Duration

	LedgerBytes, TelemetryBytes int64
	LedgerQuota, TelemetryQuota int64 // as configured at the last open
	Shed                        uint64
}

// Inspect summarizes an outbox file without checking it (Verify does).
func Inspect(path string) (Info, error) {
	info := Info{Path: path, FileBytes: fileSize(path)}
	err := viewFile(path, func(tx *bolt.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		info.Stream, info.Base, info.HWM, info.Head, info.HeadHash = m.stream, m.base, m.hwm, m.head, m.headHash
		info.Created = time.UnixMilli(m.created).UTC()
		if m.hwmAt != 0 {
			info.HWMCommittedAt = time.UnixMilli(m.hwmAt).UTC()
		}
		info.Records = int(m.head - m.base)
		info.Checkpoints = tx.Bucket(bucketCheckpoints).Stats().KeyN
		info.IndexRuns = tx.Bucket(bucketIndex).Stats().KeyN
		info.Backlog = m.head - m.hwm
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.Seek(seqKey(m.hwm + 1)); k != nil; k, v = c.Next() {
			info.BacklogBytes += int64(len(v))
		}
		if info.Backlog > 0 {
			e, ok, err := lookupIndex(tx.Bucket(bucketIndex), m.hwm+1)
			if err != nil {
				return err
			}
			if ok {
				info.OldestUnsent = e.edgeTime.Time()
				info.OldestUnsentAge = time.Since(info.OldestUnsent)
			}
		}
		info.LedgerBytes, info.TelemetryBytes = m.ledgerBytes, m.telBytes
		info.LedgerQuota, info.TelemetryQuota = m.ledgerQuota, m.telQuota
		info.Shed = m.shed
		return nil
	})
	if err != nil {
		return info, fmt.Errorf("inspect %s: %w", path, err)
	}
	return info, nil
}

// Export writes the stored records from..to (inclusive; 0 means the first
// stored and the head) to w as JSON lines (protocol.RecordJSON), for people
// and tools. The CBOR bytes stay the record of truth.
func Export(path string, from, to uint64, w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	err := viewFile(path, func(tx *bolt.Tx) error {
		m, err := readMeta(tx)
		if err != nil {
			return err
		}
		from = max(from, m.base+1)
		if to == 0 || to > m.head {
			to = m.head
		}
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.Seek(seqKey(from)); k != nil && keySeq(k) <= to; k, v = c.Next() {
			r, err := protocol.DecodeRecord(v)
			if err != nil {
				return fmt.Errorf("record %d: %w: %w", keySeq(k), ErrCorrupt, err)
			}
			j, err := r.JSON(v)
			if err != nil {
				return fmt.Errorf("record %d: %w", keySeq(k), err)
			}
			if err := enc.Encode(j); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", path, err)
	}
	return nil
}

// Records calls fn with every record stored in the outbox file at path, in
// seq order, read-only like Export (the file must not be open in a running
// outbox: ErrLocked). The edge uses it to enter again, in a new epoch, what
// a stream the cloud lost still held (cmd/edge, after uplink's
// cloudBehind).
func Records(path string, fn func(seq uint64, r protocol.Record) error) error {
	err := viewFile(path, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			r, err := protocol.DecodeRecord(v)
			if err != nil {
				return fmt.Errorf("record %d: %w: %w", keySeq(k), ErrCorrupt, err)
			}
			if err := fn(keySeq(k), r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the records of %s: %w", path, err)
	}
	return nil
}
