package outbox

import (
	"encoding/binary"
	"fmt"

	"github.com/outpost-edge/outpost/protocol"
	bolt "go.etcd.io/bbolt"
)

// Bucket names. doc.go describes what each holds.
var (
	bucketMeta        = []byte("meta")
	bucketRecords     = []byte("records")
	bucketCheckpoints = []byte("checkpoints")
	bucketIndex       = []byte("index")
)

// Keys of the meta bucket.
var (
	metaVersion = []byte("version") // u64 layoutVersion
	metaEdge    = []byte("edge")    // edge id
	metaEpoch   = []byte("epoch")   // 16 bytes
	metaCreated = []byte("created") // u64 Unix ms
	metaHead    = []byte("head")    // seq u64 | link hash 32 | edge_time u64
	metaBase    = []byte("base")    // seq u64 | link hash 32: the last trimmed record
	metaHWM     = []byte("hwm")     // seq u64 | head 32 | committed_at u64 | kid
	metaBytes   = []byte("bytes")   // ledger u64 | telemetry u64
	metaShed    = []byte("shed")    // count u64 | upto u64
	metaQuota   = []byte("quota")   // ledger u64 | telemetry u64, as of the last open
	// dedup window cutoff u64 (an HLC reading; window.go) | wall clock
	// then, Unix ms u64. Files without it (from older builds) start from
	// wall clock minus window.
	metaDedupCut = []byte("dedupcut")
)

// layoutVersion is the version of the bucket layout this package writes.
const layoutVersion = 1

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func keySeq(k []byte) uint64 { return binary.BigEndian.Uint64(k) }

func u64(b []byte, off int) uint64 { return binary.BigEndian.Uint64(b[off:]) }

// meta is the part of the meta bucket that changes.
type meta struct {
	head         uint64
	headHash     protocol.Hash
	headTime     protocol.HLCTime
	base         uint64
	baseHash     protocol.Hash
	hwm          uint64
	hwmHead      protocol.Hash
	hwmAt        int64
	hwmKID       protocol.KeyID
	ledgerBytes  int64
	telBytes     int64
	shed         uint64
	shedUpto     uint64
	ledgerQuota  int64
	telQuota     int64
	dedupCut     protocol.HLCTime
	dedupCutAt   int64
	stream       protocol.Stream
	created      int64
	layout       uint64
	hasStream    bool
	hasPositions bool
}

func readMeta(tx *bolt.Tx) (meta, error) {
	var m meta
	b := tx.Bucket(bucketMeta)
	if b == nil {
		return m, fmt.Errorf("no meta bucket: %w", ErrCorrupt)
	}
	bad := func(k []byte, n int) error {
		return fmt.Errorf("meta %q is %d bytes, want %d: %w", k, len(b.Get(k)), n, ErrCorrupt)
	}
	if v := b.Get(metaVersion); v != nil {
		if len(v) != 8 {
			return m, bad(metaVersion, 8)
		}
		m.layout = u64(v, 0)
	}
	if v := b.Get(metaEdge); v != nil {
		m.stream.Edge = string(v)
		ep := b.Get(metaEpoch)
		if len(ep) != 16 {
			return m, bad(metaEpoch, 16)
		}
		copy(m.stream.Epoch[:], ep)
		m.hasStream = true
	}
	if v := b.Get(metaCreated); len(v) == 8 {
		m.created = int64(u64(v, 0))
	}
	if v := b.Get(metaHead); v != nil {
		if len(v) != 48 {
			return m, bad(metaHead, 48)
		}
		m.head, m.headTime = u64(v, 0), protocol.HLCTime(u64(v, 40))
		copy(m.headHash[:], v[8:40])
		m.hasPositions = true
	}
	if v := b.Get(metaBase); v != nil {
		if len(v) != 40 {
			return m, bad(metaBase, 40)
		}
		m.base = u64(v, 0)
		copy(m.baseHash[:], v[8:40])
	}
	if v := b.Get(metaHWM); v != nil {
		if len(v) < 48 {
			return m, bad(metaHWM, 48)
		}
		m.hwm, m.hwmAt = u64(v, 0), int64(u64(v, 40))
		copy(m.hwmHead[:], v[8:40])
		m.hwmKID = protocol.KeyID(v[48:])
	}
	if v := b.Get(metaBytes); v != nil {
		if len(v) != 16 {
			return m, bad(metaBytes, 16)
		}
		m.ledgerBytes, m.telBytes = int64(u64(v, 0)), int64(u64(v, 8))
	}
	if v := b.Get(metaShed); v != nil {
		if len(v) != 16 {
			return m, bad(metaShed, 16)
		}
		m.shed, m.shedUpto = u64(v, 0), u64(v, 8)
	}
	if v := b.Get(metaDedupCut); len(v) == 16 {
		m.dedupCut, m.dedupCutAt = protocol.HLCTime(u64(v, 0)), int64(u64(v, 8))
	}
	if v := b.Get(metaQuota); len(v) == 16 {
		m.ledgerQuota, m.telQuota = int64(u64(v, 0)), int64(u64(v, 8))
	}
	return m, nil
}

func putU64s(b *bolt.Bucket, k []byte, vs ...uint64) error {
	v := make([]byte, 8*len(vs))
	for i, x := range vs {
		binary.BigEndian.PutUint64(v[8*i:], x)
	}
	return b.Put(k, v)
}

func putHead(b *bolt.Bucket, seq uint64, h protocol.Hash, t protocol.HLCTime) error {
	v := make([]byte, 48)
	binary.BigEndian.PutUint64(v, seq)
	copy(v[8:], h[:])
	binary.BigEndian.PutUint64(v[40:], uint64(t))
	return b.Put(metaHead, v)
}

func putBase(b *bolt.Bucket, seq uint64, h protocol.Hash) error {
	v := make([]byte, 40)
	binary.BigEndian.PutUint64(v, seq)
	copy(v[8:], h[:])
	return b.Put(metaBase, v)
}

func putHWM(b *bolt.Bucket, r protocol.Receipt) error {
	v := make([]byte, 48, 48+len(r.KID))
	binary.BigEndian.PutUint64(v, r.HWM)
	copy(v[8:], r.Head[:])
	binary.BigEndian.PutUint64(v[40:], uint64(r.CommittedAt))
	v = append(v, r.KID...)
	return b.Put(metaHWM, v)
}

// The index bucket holds one blob per checkpoint run, keyed like the
// checkpoint by the run's last seq:
//
//	version u8 | first seq u64 | count u32 | count × entry
//	entry: edge_time u64 | class u8 | len u8 | device | len u8 | event id
//
// It gives each seq's class and edge_time without decoding records, and the
// (device, id) pairs the dedup table is rebuilt from at open. A blob outlives
// its records until the dedup window has passed.
const (
	indexVersion   = 1
	indexHeaderLen = 1 + 8 + 4
	classLedger    = 0
	classTelemetry = 1
)

func classByte(c protocol.Class) byte {
	if c == protocol.ClassTelemetry {
		return classTelemetry
	}
	return classLedger
}

// indexEntry is one record's line in an index blob. device and id alias the
// blob; they are valid only as long as it is.
type indexEntry struct {
	seq      uint64
	edgeTime protocol.HLCTime
	class    byte
	device   []byte
	id       []byte
}

// appendIndexEntry appends one entry to a blob under construction.
func appendIndexEntry(b []byte, t protocol.HLCTime, class byte, device, id string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t))
	b = append(b, class, byte(len(device)))
	b = append(b, device...)
	b = append(b, byte(len(id)))
	return append(b, id...)
}

// indexBlob walks a stored blob.
type indexBlob struct {
	b     []byte
	first uint64
	n     int
}

func parseIndexBlob(last uint64, b []byte) (indexBlob, error) {
	if len(b) < indexHeaderLen || b[0] != indexVersion {
		return indexBlob{}, fmt.Errorf("index blob for run ending at %d: bad header: %w", last, ErrCorrupt)
	}
	ib := indexBlob{b: b, first: u64(b, 1), n: int(binary.BigEndian.Uint32(b[9:]))}
	if ib.n == 0 || ib.first+uint64(ib.n)-1 != last {
		return indexBlob{}, fmt.Errorf("index blob for run ending at %d: first %d count %d: %w", last, ib.first, ib.n, ErrCorrupt)
	}
	return ib, nil
}

// each calls fn for every entry with seq >= from, in order, until fn
// returns false.
func (ib indexBlob) each(from uint64, fn func(e *indexEntry) bool) error {
	p := ib.b[indexHeaderLen:]
	var e indexEntry
	for i := 0; i < ib.n; i++ {
		e.seq = ib.first + uint64(i)
		if p = readIndexEntry(p, &e); p == nil {
			return fmt.Errorf("index blob for seq %d: truncated: %w", ib.first, ErrCorrupt)
		}
		if e.seq < from {
			continue
		}
		if !fn(&e) {
			return nil
		}
	}
	return nil
}

// readIndexEntry reads the entry at the front of p into e (all but its
// seq) and returns the rest of p, or nil when p is truncated.
func readIndexEntry(p []byte, e *indexEntry) []byte {
	if len(p) < 10 {
		return nil
	}
	e.edgeTime = protocol.HLCTime(u64(p, 0))
	e.class = p[8]
	dl := int(p[9])
	p = p[10:]
	if len(p) < dl+1 {
		return nil
	}
	e.device = p[:dl]
	il := int(p[dl])
	p = p[dl+1:]
	if len(p) < il {
		return nil
	}
	e.id = p[:il]
	return p[il:]
}

// indexIter walks the index entries in seq order, across blobs, one at a
// time. e is the current entry; e.seq is 0 past the last.
type indexIter struct {
	c    *bolt.Cursor
	ib   indexBlob
	p    []byte // the rest of ib after e
	read int    // ib's entries read
	e    indexEntry
}

// newIndexIter returns an iterator at the first entry with a seq of at
// least from.
func newIndexIter(idx *bolt.Bucket, from uint64) (*indexIter, error) {
	it := &indexIter{c: idx.Cursor()}
	k, v := it.c.Seek(seqKey(from))
	err := it.load(k, v)
	for err == nil && it.e.seq != 0 && it.e.seq < from {
		err = it.next()
	}
	return it, err
}

func (it *indexIter) load(k, v []byte) error {
	it.e = indexEntry{}
	if k == nil {
		return nil
	}
	ib, err := parseIndexBlob(keySeq(k), v)
	if err != nil {
		return err
	}
	it.ib, it.p, it.read = ib, v[indexHeaderLen:], 0
	return it.next()
}

// next moves to the next entry.
func (it *indexIter) next() error {
	if it.read == it.ib.n {
		return it.load(it.c.Next())
	}
	it.e.seq = it.ib.first + uint64(it.read)
	if it.p = readIndexEntry(it.p, &it.e); it.p == nil {
		return fmt.Errorf("index blob for seq %d: truncated: %w", it.ib.first, ErrCorrupt)
	}
	it.read++
	return nil
}

// lastTime returns the edge_time of the blob's last entry, the latest in it.
func (ib indexBlob) lastTime() (protocol.HLCTime, error) {
	var t protocol.HLCTime
	err := ib.each(ib.first+uint64(ib.n)-1, func(e *indexEntry) bool { t = e.edgeTime; return false })
	return t, err
}

// walkIndex calls fn for every index entry from seq from on, across blobs,
// until fn returns false.
func walkIndex(idx *bolt.Bucket, from uint64, fn func(e *indexEntry) bool) error {
	c := idx.Cursor()
	more := true
	for k, v := c.Seek(seqKey(from)); k != nil && more; k, v = c.Next() {
		ib, err := parseIndexBlob(keySeq(k), v)
		if err != nil {
			return err
		}
		err = ib.each(from, func(e *indexEntry) bool {
			more = fn(e)
			return more
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// lookupIndex returns the index entry of seq, if its blob is still stored.
func lookupIndex(idx *bolt.Bucket, seq uint64) (indexEntry, bool, error) {
	var out indexEntry
	found := false
	err := walkIndex(idx, seq, func(e *indexEntry) bool {
		if e.seq == seq {
			out, found = *e, true
		}
		return false
	})
	return out, found, err
}
