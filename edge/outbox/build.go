package outbox

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

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
// records how to undo the latter. The steps are a builder's methods: begin
// (the clock, the buffers), add for each entry (admit: dedup; encode;
// fit: size and quota; place: the chain, the run, the state and the dedup
// table), and finish (the last run, pruning).
func (o *Outbox) build(reqs []*request, inflight []*batch) *batch {
	now := o.opts.Now()
	o.batchNow = now // the wall clock of every edge_time in the batch
	if o.w.drainOnly && now.Before(o.w.drainRetryAt) {
		for _, rq := range reqs {
			rq.p.fail(fmt.Errorf("%w (next try at %s)", ErrDiskFull, o.w.drainRetryAt.Format(time.RFC3339)))
		}
		return nil
	}
	bd := o.begin(now, reqs, inflight)
	defer bd.rd.close()
	for _, rq := range reqs {
		for i := range rq.entries {
			if err := bd.add(&rq.prep[i], &rq.entries[i], &rq.p.results[i]); err != nil {
				return bd.fail(err)
			}
		}
	}
	if err := bd.finish(); err != nil {
		return bd.fail(err)
	}
	return bd.b
}

// builder is one batch under construction.
type builder struct {
	o        *Outbox
	b        *batch
	inflight []*batch
	rd       *reader
	st       wstate // the state as of the records added so far
	cutoff   protocol.HLCTime
	visible  uint64 // records from here on are not visible to a read transaction
	keys     []byte // the records' keys, in one buffer
	arena    []byte // the records' bytes, in one buffer (with a codec)
	blobSize int    // about the size of one index blob
	run      runBuilder
}

// begin starts a batch of reqs: the dedup cutoff, the state it builds on,
// and buffers sized for it (reused from a committed batch when there is
// one). It also warms the dedup table (see warm).
func (o *Outbox) begin(now time.Time, reqs []*request, inflight []*batch) *builder {
	bd := &builder{o: o, inflight: inflight, rd: &reader{db: o.db}}
	bd.b = &batch{gen: o.gen, reqs: reqs, done: make(chan struct{})}
	bd.cutoff = o.cutoff(now)
	bd.st = o.w
	bd.st.drainOnly = false // a retry: if it commits, the disk has room again
	bd.b.first = bd.st.head + 1
	bd.visible = bd.b.first
	if len(inflight) > 0 {
		bd.visible = inflight[0].first
	}
	n, size := 0, 0
	bd.blobSize = indexHeaderLen
	for _, rq := range reqs {
		n += len(rq.entries)
		for i := range rq.entries {
			e := &rq.entries[i]
			size += len(e.Device) + len(e.Event.ID) + len(e.Event.Type) + len(e.Event.Body)
			bd.blobSize += 11 + len(e.Device) + len(e.Event.ID)
			if rq.prep[i].err == nil {
				o.dedup.warm(rq.prep[i].key)
			}
		}
	}
	var bufs batchBufs
	if k := len(o.spare); k > 0 {
		bufs, o.spare = o.spare[k-1], o.spare[:k-1]
	}
	bd.keys = slices.Grow(bufs.keys, 8*n)
	if o.codec != nil {
		bd.arena = slices.Grow(bufs.arena, size+n*o.codec.fixed)
	}
	bd.b.recs = slices.Grow(bufs.recs, n)
	bd.b.entries = slices.Grow(bufs.entries, n)
	bd.b.undo = slices.Grow(bufs.undo, n)
	return bd
}

// add makes one entry a record of the batch, or gives it its result
// without one (a duplicate, a refusal). An error is a failure to read
// committed data, which fails the whole batch.
func (bd *builder) add(pe *prepared, e *Entry, res *Result) error {
	if pe.err != nil {
		res.Err = pe.err
		return nil
	}
	prior, dup, err := bd.o.findPair(bd.rd, pe.key, e, bd.cutoff, bd.b, bd.inflight)
	if err != nil || dup {
		*res = Result{Seq: prior, Duplicate: dup}
		return err
	}
	seq := bd.st.head + 1
	et := bd.o.hlc.Next()
	raw := bd.encode(e, pe.class, seq, et)
	if ok, err := bd.fit(e, pe.class, raw, res); !ok || err != nil {
		return err
	}
	bd.place(pe, e, seq, et, raw, prior)
	*res = Result{Seq: seq}
	return nil
}

// encode writes the record's bytes, into the arena when there is a codec.
func (bd *builder) encode(e *Entry, class byte, seq uint64, et protocol.HLCTime) []byte {
	o := bd.o
	if o.codec == nil {
		return encodeRecord(o.Stream(), e, seq, et, bd.st.headHash)
	}
	ext := o.codec.encode(bd.arena, e, class, seq, et, bd.st.headHash)
	raw := ext[len(bd.arena):len(ext):len(ext)]
	bd.arena = ext
	return raw
}

// fit checks the record's size and its class's quota, shedding old
// telemetry to make room for new. It reports false, with res set, when
// the record is refused.
func (bd *builder) fit(e *Entry, class byte, raw []byte, res *Result) (bool, error) {
	o, st := bd.o, &bd.st
	size := int64(len(raw))
	if len(raw) > protocol.MaxRecordBytes {
		res.Err = fmt.Errorf("device %q event %q: record is %d bytes; the limit is %d: %w",
			e.Device, e.Event.ID, len(raw), protocol.MaxRecordBytes, ErrInvalid)
		return false, nil
	}
	if class == classLedger {
		if st.ledgerBytes+size > o.opts.LedgerQuota {
			res.Err = fmt.Errorf("%w (%d of %d bytes used)", ErrLedgerQuota, st.ledgerBytes, o.opts.LedgerQuota)
			return false, nil
		}
		return true, nil
	}
	if st.telBytes+size <= o.opts.TelemetryQuota {
		return true, nil
	}
	if err := o.shed(bd.rd, bd.b, st, size, bd.visible); err != nil {
		return false, err
	}
	if st.telBytes+size > o.opts.TelemetryQuota {
		res.Err = fmt.Errorf("%w (%d of %d bytes used)", ErrTelemetryQuota, st.telBytes, o.opts.TelemetryQuota)
		return false, nil
	}
	return true, nil
}

// place adds the record to the batch: its key, its run (closing the run
// before it when the record would not fit in the same segment), the state
// (head, chain, bytes) and the dedup table (with how to undo it).
func (bd *builder) place(pe *prepared, e *Entry, seq uint64, et protocol.HLCTime, raw []byte, prior uint64) {
	o, b, st, run := bd.o, bd.b, &bd.st, &bd.run
	cost := segmentCost(len(raw))
	if run.n > 0 && (segmentFixed+run.bytes+cost > o.opts.SegmentBytes || run.n == protocol.MaxSegmentRecs) {
		o.closeRun(b, run, st)
	}
	bd.keys = binary.BigEndian.AppendUint64(bd.keys, seq)
	b.recs = append(b.recs, kv{bd.keys[len(bd.keys)-8:], raw})
	if run.n == 0 {
		if run.blob == nil {
			run.blob = make([]byte, 0, bd.blobSize)
		}
		*run = runBuilder{first: seq, blob: append(run.blob[:0], make([]byte, indexHeaderLen)...)}
	}
	run.n++
	run.bytes += cost
	run.blob = appendIndexEntry(run.blob, et, pe.class, e.Device, e.Event.ID)
	if st.head == st.hwm {
		st.oldestUnsent = et
	}
	st.head, st.headHash, st.headTime = seq, protocol.HashBytes(raw), et
	if pe.class == classLedger {
		st.ledgerBytes += int64(len(raw))
	} else {
		st.telBytes += int64(len(raw))
	}
	b.entries = append(b.entries, batchEntry{device: e.Device, id: e.Event.ID, edgeTime: et})
	if prior != 0 {
		o.dedup.replace(pe.key, prior, seq)
	} else {
		o.dedup.insert(pe.key, seq)
	}
	b.undo = append(b.undo, dedupUndo{key: pe.key, seq: seq, old: prior})
}

// finish closes the last run, prunes the dedup index, and makes the
// batch's state the builder's.
func (bd *builder) finish() error {
	o, b := bd.o, bd.b
	b.keys, b.arena = bd.keys, bd.arena
	if bd.run.n > 0 {
		o.closeRun(b, &bd.run, &bd.st)
	}
	if err := o.pruneIndex(bd.rd, b, &bd.st, bd.cutoff, pruneBlobs); err != nil {
		return err
	}
	b.moved = bd.st.head != o.w.head
	b.st = bd.st
	o.w = bd.st
	return nil
}

// fail refuses the whole batch after reading committed data failed, and
// undoes its changes to the dedup table.
func (bd *builder) fail(err error) *batch {
	o := bd.o
	bd.b.keys, bd.b.arena = bd.keys, bd.arena
	o.undo(bd.b.undo)
	for _, rq := range bd.b.reqs {
		rq.p.fail(fmt.Errorf("commit: %w", err))
	}
	o.log.Error("prepare commit", "err", err)
	return nil
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
		Edge: o.Stream().Edge, Epoch: o.Stream().Epoch, Seq: st.head, Head: st.headHash, EdgeTime: st.headTime,
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
