package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	bolt "go.etcd.io/bbolt"
)

// The write side is a two-stage pipeline, each stage one goroutine:
//
//   - the builder (run) owns the stream's state: it takes the queued
//     requests, assigns seqs, edge_times and prev hashes, encodes and hashes
//     the records, applies dedup and quotas, signs a checkpoint per run, and
//     hands the batch's writes to
//   - the committer, which puts them in one bbolt transaction and commits it
//     (one fsync), then releases the batch's callers.
//
// The builder prepares batch N+1 while batch N is being written and synced,
// and may hand it over before N is done, so that the committer goes from
// one commit straight to the next; requests queue meanwhile. At most
// maxInflight batches are handed over and not yet settled. When a commit
// fails, the committer aborts the batches handed over after it without
// writing them (they were built on top of it); the builder then returns the
// state to the last commit, restores the dedup table, and puts the aborted
// batches' requests back at the front of the queue. Trims and maintenance
// run in the builder while nothing is in flight.
const maxInflight = 2

// errAborted marks a batch the committer did not write because an earlier
// one failed. Its callers are not released: the builder builds them again.
var errAborted = errors.New("aborted after an earlier commit failed")

// batch is one group commit: its requests and the writes it makes.
type batch struct {
	gen     uint64 // the builder's generation; a failed commit ends one
	reqs    []*request
	first   uint64 // seq of its first record
	entries []batchEntry
	recs    []kv // new records, in seq order
	keys    []byte
	arena   []byte // recs' keys and values live here
	tombs   []kv   // shed records' tombstones
	cps     []kv
	blobs   []kv
	idxDel  [][]byte
	st      wstate // the state once it is committed
	moved   bool   // it adds records
	undo    []dedupUndo
	pruned  []indexEntryKey
	shedLog shedLog
	err     error
	done    chan struct{}
}

type kv struct{ k, v []byte }

type shedLog struct{ n, first, last uint64 }

// bytes is about what the batch writes.
func (b *batch) bytes() int {
	n := 0
	for _, kvs := range [...][]kv{b.recs, b.tombs, b.cps, b.blobs} {
		for _, x := range kvs {
			n += len(x.k) + len(x.v) + 16
		}
	}
	return n
}

func (b *batch) empty() bool {
	return len(b.recs) == 0 && len(b.tombs) == 0 && len(b.idxDel) == 0
}

// batchBufs are the buffers of a batch's records, which the builder reuses
// once the batch is committed: allocating and zeroing them for every batch
// costs the builder and the garbage collector more than the copying.
type batchBufs struct {
	keys, arena []byte
	recs        []kv
	entries     []batchEntry
	undo        []dedupUndo
}

// recycle keeps a committed batch's buffers for a later one. Nothing
// refers to them any more: bbolt let go of the keys and values with the
// transaction, and the callers were given their Results.
func (o *Outbox) recycle(b *batch) {
	if len(o.spare) > maxInflight || b.recs == nil {
		return
	}
	clear(b.recs)
	clear(b.entries) // they hold the callers' strings
	o.spare = append(o.spare, batchBufs{b.keys[:0], b.arena[:0], b.recs[:0], b.entries[:0], b.undo[:0]})
}

// run is the builder. See above.
func (o *Outbox) run() {
	defer close(o.done)
	commits := make(chan *batch, maxInflight)
	committed := make(chan struct{})
	go o.committer(commits, committed)
	defer func() {
		close(commits)
		<-committed
	}()
	tick := time.NewTicker(maintainEvery)
	defer tick.Stop()
	var inflight []*batch // handed over, oldest first
	// settle takes the outcomes of the batches that are done, oldest first;
	// with all, it waits for every batch in flight.
	settle := func(all bool) {
		for len(inflight) > 0 {
			b := inflight[0]
			if all {
				<-b.done
			} else {
				select {
				case <-b.done:
				default:
					return
				}
			}
			if b.err != nil {
				o.recover(inflight)
				inflight = nil
				return
			}
			if o.committed.drainOnly {
				o.log.Info("a commit succeeded again: the outbox leaves drain-only mode")
			}
			o.committed = b.st
			o.forget(b.pruned)
			o.recycle(b)
			inflight = inflight[1:]
		}
	}
	maintain := false
	sinceTrim := 0 // batches built since the last trim step
	for {
		settle(false)
		trim, queued, closing := o.peek()
		switch {
		case trim != nil && (!queued || sinceTrim > 0):
			// Trims and appends take turns, so that neither starves.
			settle(true)
			if o.trimStep(trim) {
				o.qmu.Lock()
				o.trims = o.trims[1:]
				o.qmu.Unlock()
			}
			sinceTrim = 0
			continue
		case queued && len(inflight) == maxInflight:
			// Requests stay queued until there is room in flight, so that
			// the ones a failed commit puts back stay ahead of them.
			<-inflight[0].done
			continue
		case queued:
			if b := o.build(o.take(), inflight); b != nil {
				commits <- b
				inflight = append(inflight, b)
			}
			sinceTrim++
			continue
		case maintain:
			settle(true)
			o.maintain()
			maintain = false
			continue
		case closing:
			settle(true)
			return
		}
		var idle <-chan struct{}
		if len(inflight) > 0 {
			idle = inflight[0].done
		}
		select {
		case <-o.wake:
		case <-tick.C:
			maintain = true
		case <-idle:
		}
	}
}

// peek looks at the queues: the first trim, whether appends wait, and
// whether the outbox is closing.
func (o *Outbox) peek() (trim *trimOp, queued, closing bool) {
	o.qmu.Lock()
	defer o.qmu.Unlock()
	if len(o.trims) > 0 {
		trim = o.trims[0]
	}
	return trim, len(o.queue) > 0, o.closing
}

// take takes the next batch of append requests, whole, up to MaxBatch
// entries (at least one request).
func (o *Outbox) take() []*request {
	o.qmu.Lock()
	defer o.qmu.Unlock()
	n, i := 0, 0
	for ; i < len(o.queue); i++ {
		k := len(o.queue[i].entries)
		if i > 0 && n+k > o.opts.MaxBatch {
			break
		}
		n += k
	}
	reqs := make([]*request, i)
	copy(reqs, o.queue)
	rest := copy(o.queue, o.queue[i:])
	clear(o.queue[rest:])
	o.queue = o.queue[:rest]
	return reqs
}

// recover handles the failure of bs[0]: it waits for the batches handed
// over after it (which the committer aborts), returns the state to the last
// commit, and queues the aborted batches' requests again, first.
func (o *Outbox) recover(bs []*batch) {
	failed := bs[0]
	var again []*request
	for _, b := range bs[1:] {
		<-b.done
		for _, rq := range b.reqs {
			clear(rq.p.results)
		}
		again = append(again, b.reqs...)
	}
	for i := len(bs) - 1; i >= 0; i-- {
		o.undo(bs[i].undo)
	}
	if len(again) > 0 {
		o.qmu.Lock()
		o.queue = append(again, o.queue...)
		o.qmu.Unlock()
	}
	o.w = o.committed
	o.gen++
	if isDiskFull(failed.err) {
		if !o.w.drainOnly {
			o.log.Error("disk full: the outbox enters drain-only mode; appends are refused until a trim frees space",
				"err", failed.err, "head", o.w.head, "backlog", o.w.head-o.w.hwm)
		}
		o.w.drainOnly, o.w.drainRetryAt = true, o.opts.Now().Add(drainRetry)
	} else {
		o.log.Error("commit failed", "err", failed.err, "head", o.w.head)
	}
	o.committed = o.w
	o.publish(o.w, false)
}

func (o *Outbox) undo(undo []dedupUndo) {
	for i := len(undo) - 1; i >= 0; i-- {
		u := undo[i]
		if u.old != 0 {
			o.dedup.replace(u.key, u.seq, u.old)
		} else {
			o.dedup.remove(u.key, u.seq)
		}
	}
}

// committer is the second stage: it writes and commits each batch, then
// releases its callers.
func (o *Outbox) committer(in <-chan *batch, done chan<- struct{}) {
	defer close(done)
	var broken bool
	var brokenGen uint64
	for b := range in {
		if broken && b.gen == brokenGen {
			b.err = errAborted
			close(b.done)
			continue
		}
		broken = false
		b.err = o.write(b)
		if b.err != nil {
			broken, brokenGen = true, b.gen
			err := b.err
			if isDiskFull(err) {
				// Callers that see ErrDiskFull see a drain-only State too.
				// (The builder settles the rest: nothing else publishes
				// while a batch is in flight.)
				o.mu.Lock()
				o.pub.drainOnly = true
				o.mu.Unlock()
				err = fmt.Errorf("%w: %w", ErrDiskFull, err)
			} else {
				err = fmt.Errorf("commit: %w", err)
			}
			for _, rq := range b.reqs {
				rq.p.fail(err)
			}
			close(b.done)
			continue
		}
		if b.shedLog.n > 0 {
			o.log.Warn("telemetry quota reached: shed the oldest telemetry records to tombstones",
				"shed", b.shedLog.n, "first_seq", b.shedLog.first, "last_seq", b.shedLog.last,
				"telemetry_bytes", b.st.telBytes, "telemetry_quota", o.opts.TelemetryQuota, "shed_total", b.st.shed)
		}
		o.mu.Lock()
		if !b.empty() {
			o.commits++
		}
		o.mu.Unlock()
		if !b.empty() {
			o.readMapped(nil, commitReads+b.bytes())
		}
		o.publish(b.st, b.moved)
		for _, rq := range b.reqs {
			rq.p.finish()
		}
		close(b.done) // the builder may reuse b's buffers from here on
	}
}

// write puts a batch's writes into one transaction and commits it.
func (o *Outbox) write(b *batch) error {
	if b.empty() {
		return nil
	}
	tx, err := o.db.Begin(true)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	bk := writeBuckets(tx)
	for _, p := range [...]struct {
		b   *bolt.Bucket
		kvs []kv
	}{{bk.recs, b.recs}, {bk.recs, b.tombs}, {bk.cps, b.cps}, {bk.idx, b.blobs}} {
		for _, x := range p.kvs {
			if err := p.b.Put(x.k, x.v); err != nil {
				return err
			}
		}
	}
	for _, k := range b.idxDel {
		if err := bk.idx.Delete(k); err != nil {
			return err
		}
	}
	st := &b.st
	if err := errors.Join(
		putHead(bk.meta, st.head, st.headHash, st.headTime),
		putU64s(bk.meta, metaBytes, uint64(st.ledgerBytes), uint64(st.telBytes)),
		putU64s(bk.meta, metaShed, st.shed, st.shedUpto),
		putU64s(bk.meta, metaDedupCut, uint64(st.dedupCut), uint64(st.dedupCutAt)),
	); err != nil {
		return err
	}
	if o.commitHook != nil {
		if err := o.commitHook(); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// buckets are a write transaction's buckets, set up for appending.
type buckets struct {
	meta, recs, cps, idx *bolt.Bucket
}

func writeBuckets(tx *bolt.Tx) buckets {
	b := buckets{tx.Bucket(bucketMeta), tx.Bucket(bucketRecords), tx.Bucket(bucketCheckpoints), tx.Bucket(bucketIndex)}
	// Keys only ever grow at the end: full pages split the least.
	b.recs.FillPercent, b.cps.FillPercent, b.idx.FillPercent = 1, 1, 1
	return b
}

// reader is a lazily begun read transaction for the builder's lookups of
// committed data (dedup hits, shedding, pruning).
type reader struct {
	db     *bolt.DB
	tx     *bolt.Tx
	err    error
	shedAt *indexIter // where shed stopped, in tx
}

func (r *reader) get() (*bolt.Tx, error) {
	if r.tx == nil && r.err == nil {
		r.tx, r.err = r.db.Begin(false)
	}
	return r.tx, r.err
}

func (r *reader) close() {
	if r.tx != nil {
		r.tx.Rollback()
	}
}

// runBuilder is a run of records covered by one checkpoint, under
// construction.
type runBuilder struct {
	first uint64
	n     int
	bytes int // segment cost of the run's records
	blob  []byte
}

// build prepares a batch on top of the state o.w (which includes the batch
// in flight, if any): seqs, chain, edge_time, dedup, quotas and shedding,
// one signed checkpoint per run. It changes o.w and the dedup table, and
// records how to undo the latter.
func (o *Outbox) build(reqs []*request, inflight []*batch) *batch {
	now := o.opts.Now()
	o.batchNow = now // the wall clock of every edge_time in the batch
	b := &batch{gen: o.gen, reqs: reqs, done: make(chan struct{})}
	if o.w.drainOnly && now.Before(o.w.drainRetryAt) {
		for _, rq := range reqs {
			rq.p.fail(fmt.Errorf("%w (next try at %s)", ErrDiskFull, o.w.drainRetryAt.Format(time.RFC3339)))
		}
		return nil
	}
	rd := &reader{db: o.db}
	defer rd.close()
	cutoff := o.cutoff(now)
	st := o.w
	st.drainOnly = false // a retry: if it commits, the disk has room again
	b.first = st.head + 1
	// Records not yet visible to a read transaction start here.
	visible := b.first
	if len(inflight) > 0 {
		visible = inflight[0].first
	}
	// Size the batch's buffers, and warm the dedup table (see warm).
	n, size, blobSize := 0, 0, indexHeaderLen
	for _, rq := range reqs {
		n += len(rq.entries)
		for i := range rq.entries {
			e := &rq.entries[i]
			size += len(e.Device) + len(e.Event.ID) + len(e.Event.Type) + len(e.Event.Body)
			blobSize += 11 + len(e.Device) + len(e.Event.ID)
			if rq.prep[i].err == nil {
				o.dedup.warm(rq.prep[i].key)
			}
		}
	}
	var bufs batchBufs
	if k := len(o.spare); k > 0 {
		bufs, o.spare = o.spare[k-1], o.spare[:k-1]
	}
	keys := slices.Grow(bufs.keys, 8*n)
	var arena []byte
	if o.codec != nil {
		arena = slices.Grow(bufs.arena, size+n*o.codec.fixed)
	}
	b.recs = slices.Grow(bufs.recs, n)
	b.entries = slices.Grow(bufs.entries, n)
	b.undo = slices.Grow(bufs.undo, n)
	defer func() { b.keys, b.arena = keys, arena }()
	var run runBuilder
	fail := func(err error) *batch {
		// Reading committed data failed: refuse the whole batch.
		o.undo(b.undo)
		for _, rq := range reqs {
			rq.p.fail(fmt.Errorf("commit: %w", err))
		}
		o.log.Error("prepare commit", "err", err)
		return nil
	}
	for _, rq := range reqs {
		for i := range rq.entries {
			pe, e, res := &rq.prep[i], &rq.entries[i], &rq.p.results[i]
			if pe.err != nil {
				res.Err = pe.err
				continue
			}
			prior, dup, err := o.findPair(rd, pe.key, e, cutoff, b, inflight)
			if err != nil {
				return fail(err)
			}
			if dup {
				*res = Result{Seq: prior, Duplicate: true}
				continue
			}
			seq := st.head + 1
			et := o.hlc.Next()
			var raw []byte
			if o.codec != nil {
				ext := o.codec.encode(arena, e, pe.class, seq, et, st.headHash)
				raw, arena = ext[len(arena):len(ext):len(ext)], ext
			} else {
				raw = encodeRecord(o.stream, e, seq, et, st.headHash)
			}
			size := int64(len(raw))
			if len(raw) > protocol.MaxRecordBytes {
				res.Err = fmt.Errorf("device %q event %q: record is %d bytes; the limit is %d: %w",
					e.Device, e.Event.ID, len(raw), protocol.MaxRecordBytes, ErrInvalid)
				continue
			}
			if pe.class == classLedger {
				if st.ledgerBytes+size > o.opts.LedgerQuota {
					res.Err = fmt.Errorf("%w (%d of %d bytes used)", ErrLedgerQuota, st.ledgerBytes, o.opts.LedgerQuota)
					continue
				}
			} else if st.telBytes+size > o.opts.TelemetryQuota {
				if err := o.shed(rd, b, &st, size, visible); err != nil {
					return fail(err)
				}
				if st.telBytes+size > o.opts.TelemetryQuota {
					res.Err = fmt.Errorf("%w (%d of %d bytes used)", ErrTelemetryQuota, st.telBytes, o.opts.TelemetryQuota)
					continue
				}
			}
			cost := segmentCost(len(raw))
			if run.n > 0 && (segmentFixed+run.bytes+cost > o.opts.SegmentBytes || run.n == protocol.MaxSegmentRecs) {
				o.closeRun(b, &run, &st)
			}
			keys = binary.BigEndian.AppendUint64(keys, seq)
			b.recs = append(b.recs, kv{keys[len(keys)-8:], raw})
			if run.n == 0 {
				if run.blob == nil {
					run.blob = make([]byte, 0, blobSize)
				}
				run = runBuilder{first: seq, blob: append(run.blob[:0], make([]byte, indexHeaderLen)...)}
			}
			run.n++
			run.bytes += cost
			run.blob = appendIndexEntry(run.blob, et, pe.class, e.Device, e.Event.ID)
			if st.head == st.hwm {
				st.oldestUnsent = et
			}
			st.head, st.headHash, st.headTime = seq, protocol.HashBytes(raw), et
			if pe.class == classLedger {
				st.ledgerBytes += size
			} else {
				st.telBytes += size
			}
			b.entries = append(b.entries, batchEntry{device: e.Device, id: e.Event.ID, edgeTime: et})
			if prior != 0 {
				o.dedup.replace(pe.key, prior, seq)
			} else {
				o.dedup.insert(pe.key, seq)
			}
			b.undo = append(b.undo, dedupUndo{key: pe.key, seq: seq, old: prior})
			*res = Result{Seq: seq}
		}
	}
	if run.n > 0 {
		o.closeRun(b, &run, &st)
	}
	if err := o.pruneIndex(rd, b, &st, cutoff, pruneBlobs); err != nil {
		return fail(err)
	}
	b.moved = st.head != o.w.head
	b.st = st
	o.w = st
	return b
}

// findPair looks up e's (device, id) in the dedup table: the seq of the
// pair's slot (0 when it has none), and whether that seq is inside the
// window, which makes e a duplicate. Each candidate of key is confirmed
// against its record's (device, id), found in the batch being built, in a
// batch in flight, or in the committed index.
func (o *Outbox) findPair(rd *reader, key uint64, e *Entry, cutoff protocol.HLCTime, b *batch, inflight []*batch) (seq uint64, dup bool, err error) {
	o.dedup.candidates(key, func(cand uint64) bool {
		var same, fresh bool
		same, fresh, err = o.pairOf(rd, cand, e, cutoff, b, inflight)
		if same {
			seq, dup = cand, fresh
		}
		return !same && err == nil
	})
	return seq, dup, err
}

// pairOf reports whether the record at seq is e's (device, id), and whether
// its edge_time is inside the window.
func (o *Outbox) pairOf(rd *reader, seq uint64, e *Entry, cutoff protocol.HLCTime, b *batch, inflight []*batch) (same, fresh bool, err error) {
	var be *batchEntry
	for _, x := range append(inflight, b) {
		if seq >= x.first && seq < x.first+uint64(len(x.entries)) {
			be = &x.entries[seq-x.first]
		}
	}
	if be != nil {
		return be.device == e.Device && be.id == e.Event.ID, be.edgeTime >= cutoff, nil
	}
	tx, err := rd.get()
	if err != nil {
		return false, false, err
	}
	o.readMapped(tx, 4096)
	ie, ok, err := lookupIndex(tx.Bucket(bucketIndex), seq)
	if err != nil || !ok {
		return false, false, err
	}
	return string(ie.device) == e.Device && string(ie.id) == e.Event.ID, ie.edgeTime >= cutoff, nil
}

// closeRun signs the checkpoint for the run's last record and adds it to
// the batch with the run's index blob.
func (o *Outbox) closeRun(b *batch, run *runBuilder, st *wstate) {
	blob := run.blob
	blob[0] = indexVersion
	binary.BigEndian.PutUint64(blob[1:], run.first)
	binary.BigEndian.PutUint32(blob[9:], uint32(run.n))
	cp := o.opts.Signer.SignCheckpoint(protocol.Checkpoint{
		Edge: o.stream.Edge, Epoch: o.stream.Epoch, Seq: st.head, Head: st.headHash, EdgeTime: st.headTime,
	})
	k := seqKey(st.head)
	b.cps = append(b.cps, kv{k, cp})
	b.blobs = append(b.blobs, kv{k, blob})
	if st.idxOldest == 0 {
		st.idxOldest, st.idxOldestTime = st.head, st.headTime
	}
	// The batch keeps the blob: the next run needs a new one.
	*run = runBuilder{blob: make([]byte, 0, len(blob))}
}

// shed replaces the oldest telemetry records (below limit: committed ones
// only) by their tombstones until size more bytes fit in the telemetry
// quota, or none is left.
func (o *Outbox) shed(rd *reader, b *batch, st *wstate, size int64, limit uint64) error {
	tx, err := rd.get()
	if err != nil {
		return err
	}
	recs := tx.Bucket(bucketRecords)
	from := max(st.shedUpto, st.base) + 1
	// A batch that sheds, sheds for each telemetry record it adds: the
	// walk goes on from where the last one stopped, not from the start of
	// that index blob.
	it := rd.shedAt
	if it == nil || it.e.seq != from {
		if it, err = newIndexIter(tx.Bucket(bucketIndex), from); err != nil {
			return err
		}
		rd.shedAt = it
	}
	for ; it.e.seq != 0; err = it.next() {
		if err != nil {
			return err
		}
		e := &it.e
		if e.seq >= limit || st.telBytes+size <= o.opts.TelemetryQuota {
			return nil
		}
		st.shedUpto = e.seq
		if e.class != classTelemetry {
			continue
		}
		raw := recs.Get(seqKey(e.seq))
		if raw == nil {
			return fmt.Errorf("shed: record %d is missing: %w", e.seq, ErrCorrupt)
		}
		tomb, err := protocol.Tombstone(raw)
		if err != nil {
			return fmt.Errorf("shed: record %d: %w: %w", e.seq, ErrCorrupt, err)
		}
		o.readMapped(tx, len(raw))
		tb := tomb.Encode()
		freed := int64(len(raw) - len(tb))
		if freed <= 0 {
			continue // a tombstone would be no smaller: a tiny body, or one already
		}
		b.tombs = append(b.tombs, kv{seqKey(e.seq), tb})
		st.telBytes -= freed
		if e.seq <= st.hwm {
			st.ackedBytes -= freed
		}
		st.shed++
		if b.shedLog.n == 0 {
			b.shedLog.first = e.seq
		}
		b.shedLog.n++
		b.shedLog.last = e.seq
	}
	return err
}

// indexEntryKey is a dedup table slot to forget once its blob is pruned.
type indexEntryKey struct {
	key uint64
	seq uint64
}

// pruneIndex adds to b the deletion of up to limit index blobs whose records
// are all trimmed and older than the dedup window. Their table slots are
// forgotten (forget) only after the commit.
func (o *Outbox) pruneIndex(rd *reader, b *batch, st *wstate, cutoff protocol.HLCTime, limit int) error {
	for n := 0; n < limit && st.idxOldest != 0 && st.idxOldest <= st.base && st.idxOldestTime < cutoff; n++ {
		tx, err := rd.get()
		if err != nil {
			return err
		}
		idx := tx.Bucket(bucketIndex)
		k := seqKey(st.idxOldest)
		ib, err := parseIndexBlob(st.idxOldest, idx.Get(k))
		if err != nil {
			return err
		}
		if err := ib.each(0, func(e *indexEntry) bool {
			b.pruned = append(b.pruned, indexEntryKey{dedupKey(o.seed, e.device, e.id), e.seq})
			return true
		}); err != nil {
			return err
		}
		b.idxDel = append(b.idxDel, k)
		if err := refreshOldest(idx, st, st.idxOldest+1); err != nil {
			return err
		}
	}
	return nil
}

// forget drops pruned pairs from the dedup table, unless the slot has moved
// on to a later record of the same pair.
func (o *Outbox) forget(pruned []indexEntryKey) {
	for _, p := range pruned {
		o.dedup.remove(p.key, p.seq)
	}
}

// maintain runs on a timer, with nothing in flight: it prunes the dedup
// index when appends have not done it.
func (o *Outbox) maintain() {
	cutoff := o.cutoff(o.opts.Now())
	st := o.w
	if st.idxOldest == 0 || st.idxOldest > st.base || st.idxOldestTime >= cutoff {
		return
	}
	b := &batch{}
	rd := &reader{db: o.db}
	err := o.pruneIndex(rd, b, &st, cutoff, 1<<30)
	rd.close()
	if err == nil {
		b.st = st
		err = o.write(b)
	}
	if err != nil {
		o.log.Warn("prune the dedup index", "err", err)
		return
	}
	o.w, o.committed = st, st
	o.forget(b.pruned)
	o.publish(st, false)
}
