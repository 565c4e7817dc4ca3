package outbox

import (
	"errors"
	"fmt"
	"time"

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
//
// The builder hands a batch over early, while another is in flight, only
// when at least earlyBuild entries are queued. Handing over at once was
// slower for a client whose publishes arrive one by one (one device with
// 64 in flight): the batch went over with the first few, and the rest
// waited for the commit after it, so each commit carried about a third of
// what was in flight instead of half. Building a few entries costs little
// of the disk's time once the commit in flight is done; building many is
// worth overlapping with it.
const maxInflight = 2

// earlyBuild is the least number of queued entries the builder hands over
// while a batch is in flight (a quarter of the default MaxBatch).
const earlyBuild = DefaultMaxBatch / 4

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
		trim, epoch, queued, many, closing := o.peek()
		switch {
		case epoch != nil:
			settle(true)
			ch, err := o.newEpoch(epoch)
			o.qmu.Lock()
			o.epochs = o.epochs[1:]
			o.qmu.Unlock()
			epoch.done <- epochResult{ch, err}
			continue
		case trim != nil && (!queued || sinceTrim > 0):
			// Trims and appends take turns, so that neither starves.
			settle(true)
			if o.trimStep(trim) {
				o.qmu.Lock()
				o.trims = o.trims[1:]
				o.qmu.Unlock()
				if trim.freed {
					o.maybeShrink()
				}
			}
			sinceTrim = 0
			continue
		case queued && len(inflight) == maxInflight:
			// Requests stay queued until there is room in flight, so that
			// the ones a failed commit puts back stay ahead of them.
			<-inflight[0].done
			continue
		case queued && len(inflight) > 0 && !many:
			// Few queued: they wait (below) for the commit in flight, and
			// gather what arrives meanwhile (see earlyBuild).
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
			o.maybeShrink()
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

// peek looks at the queues: the first trim and new epoch, whether appends
// wait and whether at least earlyBuild (or MaxBatch) entries do, and whether
// the outbox is closing.
func (o *Outbox) peek() (trim *trimOp, epoch *epochOp, queued, many, closing bool) {
	o.qmu.Lock()
	defer o.qmu.Unlock()
	if len(o.trims) > 0 {
		trim = o.trims[0]
	}
	if len(o.epochs) > 0 {
		epoch = o.epochs[0]
	}
	many = o.queued >= min(earlyBuild, o.opts.MaxBatch)
	return trim, epoch, len(o.queue) > 0, many, o.closing
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
	o.queued -= n
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
		for _, rq := range again {
			o.queued += len(rq.entries)
		}
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
