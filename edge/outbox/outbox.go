package outbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Defaults for the zero values of Options.
const (
	DefaultDedupWindow    = 7 * 24 * time.Hour
	DefaultLedgerQuota    = 1 << 30
	DefaultTelemetryQuota = 256 << 20
	DefaultMaxBatch       = 1000
)

const (
	// openTimeout bounds the wait for the file lock in Open.
	openTimeout = 2 * time.Second
	// toolTimeout bounds the wait for the shared lock in the offline tools.
	toolTimeout = 500 * time.Millisecond
	// trimChunk is the most records one trim transaction deletes, so that a
	// large trim does not hold up appends for long.
	trimChunk = 20000
	// drainRetry is how often drain-only mode lets one commit try again.
	drainRetry = 10 * time.Second
	// maintainEvery is how often an idle outbox prunes its dedup index.
	maintainEvery = time.Minute
	// pruneBlobs is the most index blobs one commit prunes.
	pruneBlobs = 8
	// minSegmentBytes is the least Options.SegmentBytes: a record at its
	// largest must fit in a segment on its own.
	minSegmentBytes = protocol.MaxRecordBytes + segmentFixed + 16
	// releaseEvery is how many bytes of bbolt's file mapping the outbox
	// reads before it drops the mapping's pages from memory (readMapped).
	releaseEvery = 2 << 20
	// commitReads is about what a group commit reads of the mapping beyond
	// the bytes it writes: the root, branch and last leaf pages of each
	// bucket it appends to, which the commit before it wrote to new pages.
	// The bytes written count too: reading a page maps its neighbours that
	// are in the page cache as well (Linux's fault-around, 64 KiB), and the
	// pages just written are.
	commitReads = 64 << 10
)

// Options configures an Outbox. Zero values take the documented defaults.
type Options struct {
	// Edge is this edge's id (protocol.ValidateName). It is stored at
	// creation; opening the file as another edge is refused.
	Edge string
	// Signer holds the edge's key. It signs one checkpoint per run of
	// records in every group commit.
	Signer *protocol.Signer
	// Now is the wall clock (time.Now when nil). edge_time never goes
	// backwards even when it does.
	Now func() time.Time
	// Monotonic is the time since some fixed start, from a clock that no
	// step of the wall clock moves. It bounds how fast the dedup window
	// may move (window.go). When nil: Go's monotonic clock when Now is nil
	// too, else Now's own elapsed time (so that a test clock drives both;
	// a test that steps the wall clock gives its own Monotonic).
	Monotonic func() time.Duration
	// DedupWindow is how long a (device, id) pair is remembered
	// (DefaultDedupWindow when 0).
	DedupWindow time.Duration
	// LedgerQuota and TelemetryQuota bound the bytes of stored records per
	// class (DefaultLedgerQuota and DefaultTelemetryQuota when 0). They do
	// not count the index, the checkpoints or bbolt's own overhead.
	LedgerQuota, TelemetryQuota int64
	// MaxBatch is the most entries one group commit takes
	// (DefaultMaxBatch when 0). A single call's entries are never split.
	MaxBatch int
	// Retain keeps acknowledged records whose edge_time is younger than
	// this; Trim deletes them once they are older (at a later Trim).
	Retain time.Duration
	// SegmentBytes is the largest segment the uplink sends
	// (protocol.MaxSegmentBytes when 0, clamped to it). Each group commit
	// signs a checkpoint at least every SegmentBytes of records, so a
	// segment of at most this size can always end on one.
	SegmentBytes int
	// MaxFileBytes caps the bbolt file (0: no cap). Reaching it is handled
	// like a full disk: drain-only mode.
	MaxFileBytes int64
	// NoSync skips fsync. Tests and benchmarks only: it gives up durability.
	NoSync bool
	// NoShrink keeps the file from being compacted online (compact.go).
	NoShrink bool
	// Logger receives the outbox's logs (slog.Default when nil), under
	// component=outbox.
	Logger *slog.Logger
}

func (o *Options) fill() error {
	if err := protocol.ValidateName("edge", o.Edge); err != nil {
		return err
	}
	if o.Signer == nil {
		return errors.New("no signer: the outbox signs a checkpoint in every commit; pass the edge key")
	}
	if o.Monotonic == nil {
		now := o.Now
		if now == nil {
			now = time.Now // with its monotonic reading
		}
		start := now()
		o.Monotonic = func() time.Duration { return now().Sub(start) }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DedupWindow <= 0 {
		o.DedupWindow = DefaultDedupWindow
	}
	if o.LedgerQuota <= 0 {
		o.LedgerQuota = DefaultLedgerQuota
	}
	if o.TelemetryQuota <= 0 {
		o.TelemetryQuota = DefaultTelemetryQuota
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.SegmentBytes <= 0 || o.SegmentBytes > protocol.MaxSegmentBytes {
		o.SegmentBytes = protocol.MaxSegmentBytes
	}
	o.SegmentBytes = max(o.SegmentBytes, minSegmentBytes)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// newSeed makes the seed of the dedup table's hash (a variable for tests).
var newSeed = maphash.MakeSeed

// Outbox is the edge's durable store of records waiting for the cloud's
// receipt. It is safe for concurrent use.
type Outbox struct {
	// db is replaced only by an online shrink (compact.go), in the builder
	// with nothing in flight, under dbmu; Segment, the one reader outside
	// the write side, holds dbmu's read lock.
	dbmu    sync.RWMutex
	db      *bolt.DB
	path    string
	opts    Options
	log     *slog.Logger
	streamp atomic.Pointer[protocol.Stream] // changed by NewEpoch only
	seed    maphash.Seed
	codec   *codec // nil: encode through protocol (see codec.go)

	// Guarded by qmu: the requests waiting for the commit loop.
	qmu     sync.Mutex
	queue   []*request
	queued  int // entries in queue
	trims   []*trimOp
	epochs  []*epochOp
	closing bool

	wake chan struct{} // cap 1: something was queued
	done chan struct{} // closed when the loop has exited

	// Owned by the builder goroutine (run; and by Open before it starts).
	w         wstate        // as of the last batch built
	committed wstate        // as of the last batch committed
	gen       uint64        // batches built since the last failed commit carry it
	hlc       protocol.HLC  // reads batchNow
	batchNow  time.Time     // the wall clock as of the batch being built
	spare     []batchBufs   // buffers of committed batches, to reuse
	cutMono   time.Duration // Options.Monotonic as of the last move of the dedup cutoff
	// shrinkRetryAt: no online shrink before this (after a failed one).
	shrinkRetryAt time.Time
	dedup         dedupTable // hash of (device, id) -> seq; see dedup.go
	// commitHook, when set (tests), runs in the committer just before each
	// commit and fails it with its error.
	commitHook func() error

	// Bytes of the file mapping read since its pages were last dropped.
	mapped atomic.Int64

	// Guarded by mu: what State and Wait read.
	mu      sync.Mutex
	pub     wstate
	commits uint64
	// Kept files of earlier epochs (epoch.go), and the epochs started since Open.
	stuck         []string
	epochRestarts uint64
	changed       chan struct{} // closed and replaced when the head moves

	closeOnce sync.Once
	closeErr  error
}

// wstate is the outbox's position and accounting, as of the last commit.
type wstate struct {
	head     uint64
	headHash protocol.Hash
	headTime protocol.HLCTime
	base     uint64 // records <= base are deleted
	baseHash protocol.Hash
	hwm      uint64 // the cloud's acknowledged watermark
	hwmHead  protocol.Hash

	ledgerBytes, telBytes int64
	ackedBytes            int64 // stored bytes of records base+1..hwm
	shed                  uint64
	shedUpto              uint64 // every record <= shedUpto is ledger or a tombstone

	oldestUnsent protocol.HLCTime // edge_time of hwm+1, 0 when none

	dedupCut   protocol.HLCTime // the dedup window's cutoff (window.go)
	dedupCutAt int64            // the wall clock (Unix ms) when it was last moved

	// The oldest index blob: its key and latest edge_time (0 when none).
	idxOldest     uint64
	idxOldestTime protocol.HLCTime

	drainOnly    bool
	drainRetryAt time.Time
}

// State is a snapshot of the outbox for status pages and metrics.
type State struct {
	Stream   protocol.Stream
	Head     uint64        // last seq stored (0 when empty)
	HeadHash protocol.Hash // link hash of Head
	HWM      uint64        // the cloud's acknowledged watermark
	Base     uint64        // records <= Base have been deleted

	Backlog         uint64        // records not yet acknowledged (Head-HWM)
	BacklogBytes    int64         // their stored bytes
	OldestUnsent    time.Time     // edge_time of HWM+1; zero when Backlog is 0
	OldestUnsentAge time.Duration // Now - OldestUnsent

	LedgerBytes, TelemetryBytes int64 // stored record bytes per class
	LedgerQuota, TelemetryQuota int64
	Shed                        uint64 // telemetry records replaced by tombstones, ever
	DrainOnly                   bool   // a full disk stopped appends (ErrDiskFull)
	Commits                     uint64 // group commits since Open

	// Stuck counts the files of earlier streams kept beside the outbox
	// after the cloud was found beyond or apart from them (a restored file;
	// see NewEpoch and StuckFiles), until an operator removes them.
	// EpochRestarts counts the new epochs started since Open.
	Stuck         int
	EpochRestarts uint64
}

// Open opens the outbox at path, creating it with a new random epoch when it
// does not exist. Reopening continues the stream where it stopped.
func Open(path string, opts Options) (*Outbox, error) {
	if err := opts.fill(); err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	db, err := openBolt(path, &opts)
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	o := &Outbox{
		db: db, path: path, opts: opts,
		log:     opts.Logger.With("component", "outbox"),
		seed:    newSeed(),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	o.hlc.Now = func() time.Time { return o.batchNow }
	if err := o.load(); err != nil {
		db.Close()
		o.dedup.free()
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	if created && !opts.NoSync {
		// bbolt fsyncs the file, not the directory that names it: without
		// this a power cut could take the whole new outbox, with records
		// already acknowledged, away.
		if err := syncDirOnCreate(filepath.Dir(path)); err != nil {
			db.Close()
			o.dedup.free()
			return nil, fmt.Errorf("open outbox %s: fsync its directory: %w", path, err)
		}
	}
	// bbolt's open may have read the whole file (a free-page scan, after a
	// crash); so did the rebuild of the dedup table. Drop those pages.
	db.View(func(tx *bolt.Tx) error { releaseMapped(db, tx); return nil })
	o.codec = newCodec(o.Stream())
	if o.codec == nil {
		o.log.Warn("record templates unavailable for this stream; encoding each record in full", "stream", o.Stream().String())
	}
	if size := fileSize(path); opts.MaxFileBytes > 0 && size >= opts.MaxFileBytes {
		// A cap lowered below the file's size: start as a full disk would
		// leave it, draining, rather than refuse to start.
		o.w.drainOnly, o.w.drainRetryAt = true, opts.Now().Add(drainRetry)
		o.log.Warn("the outbox file is at or over its cap (--max-file-bytes): drain-only until a receipt trims records; appends are refused",
			"file_bytes", size, "max_file_bytes", opts.MaxFileBytes)
	}
	o.stuck = findStuck(filepath.Dir(path))
	o.committed = o.w
	o.publish(o.w, false)
	go o.run()
	o.log.Info("outbox open", "path", path, "stream", o.Stream().String(), "head", o.w.head,
		"hwm", o.w.hwm, "backlog", o.w.head-o.w.hwm, "dedup_entries", o.dedup.len())
	return o, nil
}

func openBolt(path string, opts *Options) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        openTimeout,
		NoFreelistSync: true, // commits stay small; Close stores the freelist (see there)
		FreelistType:   bolt.FreelistMapType,
		NoSync:         opts.NoSync,
		MaxSize:        int(opts.MaxFileBytes),
	})
	if errors.Is(err, berrors.ErrTimeout) {
		err = ErrLocked
	}
	return db, err
}

// load creates the buckets and the stream of a new file, and rebuilds the
// in-memory state from the file. An existing outbox is only read, so that
// it opens even on a full disk.
func (o *Outbox) load() error {
	fresh := false
	if err := o.db.View(func(tx *bolt.Tx) error { fresh = tx.Bucket(bucketMeta) == nil; return nil }); err != nil {
		return err
	}
	init := o.db.View
	if fresh {
		init = o.db.Update
	}
	if err := init(o.initFile); err != nil {
		return err
	}
	// The quotas are recorded for Inspect only; on a full disk, they wait.
	if err := o.db.Update(func(tx *bolt.Tx) error {
		mb := tx.Bucket(bucketMeta)
		q := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(o.opts.LedgerQuota)), uint64(o.opts.TelemetryQuota))
		if bytes.Equal(mb.Get(metaQuota), q) {
			return nil
		}
		return mb.Put(metaQuota, q)
	}); err != nil {
		o.log.Warn("record the quotas in the outbox file", "err", err)
	}
	return o.db.View(o.loadState)
}

// initFile creates the buckets and the stream when the file is new. On an
// outbox it only checks the layout and the edge, and writes nothing.
func (o *Outbox) initFile(tx *bolt.Tx) error {
	if tx.Bucket(bucketMeta) != nil {
		m, err := readMeta(tx)
		switch {
		case err != nil:
			return err
		case !m.hasStream:
			return fmt.Errorf("no stream in the meta bucket: %w", ErrCorrupt)
		case m.layout != layoutVersion:
			return fmt.Errorf("layout version %d; this build reads version %d: use a matching edge build", m.layout, layoutVersion)
		case m.stream.Edge != o.opts.Edge:
			return fmt.Errorf("the file belongs to edge %q, not %q: point the edge at its own outbox file or fix --edge", m.stream.Edge, o.opts.Edge)
		}
		for _, name := range [][]byte{bucketRecords, bucketCheckpoints, bucketIndex} {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("no %s bucket: %w", name, ErrCorrupt)
			}
		}
		return nil
	}
	if k, _ := tx.Cursor().First(); k != nil {
		return fmt.Errorf("the file holds bucket %q and no outbox: is it the right path?", k)
	}
	for _, name := range [][]byte{bucketMeta, bucketRecords, bucketCheckpoints, bucketIndex} {
		if _, err := tx.CreateBucket(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	epoch, err := protocol.NewEpoch(nil)
	if err != nil {
		return err
	}
	mb := tx.Bucket(bucketMeta)
	if err := errors.Join(
		putU64s(mb, metaVersion, layoutVersion),
		mb.Put(metaEdge, []byte(o.opts.Edge)),
		mb.Put(metaEpoch, epoch[:]),
		putU64s(mb, metaCreated, uint64(o.opts.Now().UnixMilli())),
	); err != nil {
		return err
	}
	o.log.Info("outbox created with a new epoch", "stream", protocol.Stream{Edge: o.opts.Edge, Epoch: epoch}.String())
	return nil
}

// loadState reads the position, accounting and dedup table.
func (o *Outbox) loadState(tx *bolt.Tx) error {
	m, err := readMeta(tx)
	if err != nil {
		return err
	}
	o.streamp.Store(&m.stream)
	if err := checkPositions(tx, m); err != nil {
		return err
	}
	w := wstate{
		head: m.head, headHash: m.headHash, headTime: m.headTime,
		base: m.base, baseHash: m.baseHash, hwm: m.hwm, hwmHead: m.hwmHead,
		ledgerBytes: m.ledgerBytes, telBytes: m.telBytes,
		shed: m.shed, shedUpto: m.shedUpto,
		dedupCut: o.startCutoff(m.dedupCut, m.dedupCutAt), dedupCutAt: o.opts.Now().UnixMilli(),
	}
	o.hlc.Observe(m.headTime)
	c := tx.Bucket(bucketRecords).Cursor()
	for k, v := c.Seek(seqKey(w.base + 1)); k != nil && keySeq(k) <= w.hwm; k, v = c.Next() {
		w.ackedBytes += int64(len(v))
		o.readMapped(tx, len(v))
	}
	idx := tx.Bucket(bucketIndex)
	if err := errors.Join(refreshOldest(idx, &w, 0), refreshOldestUnsent(idx, &w)); err != nil {
		return err
	}
	if err := o.loadDedup(idx, w.dedupCut); err != nil {
		return err
	}
	o.w = w
	return nil
}

// loadDedup rebuilds the dedup table from the index blobs inside the
// window. Blobs are in seq order, so a pair stored twice (again after the
// window had passed) keeps its latest seq, as it did when it was appended.
func (o *Outbox) loadDedup(idx *bolt.Bucket, cutoff protocol.HLCTime) error {
	c := idx.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		ib, err := parseIndexBlob(keySeq(k), v)
		if err != nil {
			return err
		}
		var werr error
		err = ib.each(0, func(e *indexEntry) bool {
			if e.edgeTime < cutoff {
				return true
			}
			key := dedupKey(o.seed, e.device, e.id)
			var old uint64
			o.dedup.candidates(key, func(seq uint64) bool {
				ie, ok, err := lookupIndex(idx, seq)
				if err != nil {
					werr = err
					return false
				}
				if ok && bytes.Equal(ie.device, e.device) && bytes.Equal(ie.id, e.id) {
					old = seq
					return false
				}
				return true
			})
			if old != 0 {
				o.dedup.replace(key, old, e.seq)
			} else {
				o.dedup.insert(key, e.seq)
			}
			return werr == nil
		})
		if err = errors.Join(err, werr); err != nil {
			return err
		}
		o.readMapped(idx.Tx(), len(k)+len(v))
	}
	return nil
}

// readMapped notes that n bytes of bbolt's file mapping were read, and
// drops the mapping's pages from memory (releaseMapped) once releaseEvery
// bytes were read since the last time. The outbox reads most of its data
// once (a record when it is sent, a commit's pages until the next commit
// rewrites them), so pages left mapped are a resident set that grows with
// the file and buys nothing: the page cache keeps what is hot. tx is an
// open transaction, or nil for one of its own.
func (o *Outbox) readMapped(tx *bolt.Tx, n int) {
	if o.mapped.Add(int64(n)) < releaseEvery {
		return
	}
	o.mapped.Store(0)
	if tx != nil {
		releaseMapped(o.db, tx)
		return
	}
	if tx, err := o.db.Begin(false); err == nil {
		releaseMapped(o.db, tx)
		tx.Rollback()
	}
}

// checkPositions checks that the stored records run from base+1 to head and
// that head is covered by a checkpoint: what a torn or foreign file breaks.
func checkPositions(tx *bolt.Tx, m meta) error {
	recs, cps := tx.Bucket(bucketRecords), tx.Bucket(bucketCheckpoints)
	fk, _ := recs.Cursor().First()
	lk, _ := recs.Cursor().Last()
	switch {
	case m.head < m.base || m.hwm > m.head:
		return fmt.Errorf("meta: base %d, hwm %d, head %d out of order: %w", m.base, m.hwm, m.head, ErrCorrupt)
	case m.head == m.base:
		if fk != nil {
			return fmt.Errorf("records stored beyond head %d: %w", m.head, ErrCorrupt)
		}
	case fk == nil || keySeq(fk) != m.base+1 || keySeq(lk) != m.head:
		return fmt.Errorf("records do not run from base+1 %d to head %d: %w", m.base+1, m.head, ErrCorrupt)
	case cps.Get(seqKey(m.head)) == nil:
		return fmt.Errorf("no checkpoint at head %d: %w", m.head, ErrCorrupt)
	}
	return nil
}

// Stream returns the outbox's stream (edge and epoch).
// Stream returns the outbox's stream (edge and epoch). It changes only
// when NewEpoch starts a new one.
func (o *Outbox) Stream() protocol.Stream { return *o.streamp.Load() }

// Path returns the file the outbox lives in.
func (o *Outbox) Path() string { return o.path }

// Close stops taking appends and trims, commits what was already handed to
// it, and closes the file. It is safe to call more than once.
func (o *Outbox) Close() error {
	o.closeOnce.Do(func() {
		o.qmu.Lock()
		o.closing = true
		o.qmu.Unlock()
		o.poke()
		<-o.done
		o.mu.Lock()
		close(o.changed)
		o.changed = nil
		o.mu.Unlock()
		o.dedup.free()
		// Store bbolt's free-page list on the way out, so that the next Open
		// reads it instead of scanning (and mapping) the whole file. Commits
		// do not store it (NoFreelistSync): after a crash, Open scans.
		o.db.NoFreelistSync = false
		// The dedup cutoff goes with it (window.go).
		if err := o.db.Update(func(tx *bolt.Tx) error {
			return putU64s(tx.Bucket(bucketMeta), metaDedupCut, uint64(o.w.dedupCut), uint64(o.w.dedupCutAt))
		}); err != nil {
			o.log.Warn("store the free-page list at close; the next open scans the file", "err", err)
		}
		if err := o.db.Close(); err != nil {
			o.closeErr = fmt.Errorf("close outbox %s: %w", o.path, err)
		}
		o.log.Info("outbox closed", "head", o.w.head, "hwm", o.w.hwm)
	})
	return o.closeErr
}

func (o *Outbox) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// publish makes st what State and Wait see, and wakes waiters when moved
// says the head changed.
func (o *Outbox) publish(st wstate, moved bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pub = st
	if moved && o.changed != nil {
		close(o.changed)
		o.changed = make(chan struct{})
	}
}

// State returns a snapshot of the outbox's position and accounting.
func (o *Outbox) State() State {
	o.mu.Lock()
	w, commits, stuck, restarts := o.pub, o.commits, o.stuck, o.epochRestarts
	o.mu.Unlock()
	s := State{
		Stream: o.Stream(), Head: w.head, HeadHash: w.headHash, HWM: w.hwm, Base: w.base,
		Backlog:      w.head - w.hwm,
		BacklogBytes: w.ledgerBytes + w.telBytes - w.ackedBytes,
		LedgerBytes:  w.ledgerBytes, TelemetryBytes: w.telBytes,
		LedgerQuota: o.opts.LedgerQuota, TelemetryQuota: o.opts.TelemetryQuota,
		Shed: w.shed, DrainOnly: w.drainOnly, Commits: commits,
		Stuck: len(stuck), EpochRestarts: restarts,
	}
	if w.oldestUnsent != 0 && s.Backlog > 0 {
		s.OldestUnsent = w.oldestUnsent.Time()
		s.OldestUnsentAge = max(0, o.opts.Now().Sub(s.OldestUnsent))
	}
	return s
}

// Changed returns a channel that is closed when the head next moves (a
// commit adds records) or the outbox closes; take a new one after each
// close. Take it before reading the head, so that no commit falls between
// the two unseen.
func (o *Outbox) Changed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.changed == nil {
		return closedChan
	}
	return o.changed
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Wait blocks until the head is past seq (there is something from seq+1 to
// send), the stream changed (NewEpoch: seqs start again), ctx is done or
// the outbox is closed.
func (o *Outbox) Wait(ctx context.Context, seq uint64) error {
	stream := o.Stream()
	for {
		o.mu.Lock()
		head, ch := o.pub.head, o.changed
		o.mu.Unlock()
		switch {
		case head > seq, o.Stream() != stream:
			return nil
		case ch == nil:
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// refreshOldest reads the key and latest edge_time of the oldest index blob
// with a key of at least from.
func refreshOldest(idx *bolt.Bucket, w *wstate, from uint64) error {
	k, v := idx.Cursor().Seek(seqKey(from))
	if k == nil {
		w.idxOldest, w.idxOldestTime = 0, 0
		return nil
	}
	ib, err := parseIndexBlob(keySeq(k), v)
	if err != nil {
		return err
	}
	t, err := ib.lastTime()
	w.idxOldest, w.idxOldestTime = keySeq(k), t
	return err
}

// refreshOldestUnsent reads the edge_time of the first record not yet
// acknowledged.
func refreshOldestUnsent(idx *bolt.Bucket, w *wstate) error {
	w.oldestUnsent = 0
	if w.hwm >= w.head {
		return nil
	}
	e, ok, err := lookupIndex(idx, w.hwm+1)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no index entry for seq %d: %w", w.hwm+1, ErrCorrupt)
	}
	w.oldestUnsent = e.edgeTime
	return nil
}

// syncDirOnCreate is syncDir where Open makes a new file (a variable for
// tests).
var syncDirOnCreate = syncDir

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// fileSize is for tests and Inspect.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
