package outbox

import (
	"errors"
	"fmt"

	"github.com/outpost-edge/outpost/protocol"
	bolt "go.etcd.io/bbolt"
)

// trimOp is a Trim on its way through the commit loop.
type trimOp struct {
	r       protocol.Receipt
	done    chan error
	started bool // the receipt is checked and the watermark stored
	freed   bool // records were deleted
}

// Trim records the cloud's acknowledgement r and deletes the records it
// covers. The caller has verified r's signature (protocol.VerifyReply
// against the pinned cloud key). Trim checks that r is for this stream, that
// r.HWM is not beyond the head and that r.Head is the stored record's link
// hash at r.HWM; otherwise it returns ErrReceipt and changes nothing.
//
// Records up to r.HWM are deleted, except those younger than
// Options.Retain, which a later Trim deletes once they have aged. A receipt
// at or below the stored watermark changes nothing (beyond that aging), so
// Trim is idempotent. Checkpoints go with their records: a resend starts at
// hwm+1 and ends on a later checkpoint, so none at or below the base is
// needed. Trim returns when the deletion is durable; a large one is done in
// chunks, with appends committed in between.
func (o *Outbox) Trim(r protocol.Receipt) error {
	if r.Stream() != o.Stream() {
		return fmt.Errorf("trim: receipt is for stream %s, this outbox is %s: %w", r.Stream(), o.Stream(), ErrReceipt)
	}
	op := &trimOp{r: r, done: make(chan error, 1)}
	o.qmu.Lock()
	if o.closing {
		o.qmu.Unlock()
		return ErrClosed
	}
	o.trims = append(o.trims, op)
	o.qmu.Unlock()
	o.poke()
	return <-op.done
}

// trimStep runs one transaction of op and reports whether op is finished.
func (o *Outbox) trimStep(op *trimOp) bool {
	if op.r.Stream() != o.Stream() { // NewEpoch ran since Trim was called
		op.done <- fmt.Errorf("trim: receipt is for stream %s, this outbox is now %s: %w", op.r.Stream(), o.Stream(), ErrReceipt)
		return true
	}
	now := o.opts.Now()
	dedupCut := o.cutoff(now)
	st := o.w
	finished := false
	pb := &batch{}
	err := o.db.Update(func(tx *bolt.Tx) error {
		b := writeBuckets(tx)
		if !op.started {
			if err := o.advanceHWM(b, &st, op.r); err != nil {
				return err
			}
			op.started = true
		}
		target := st.hwm
		if o.opts.Retain > 0 {
			cutoff := protocol.HLCFromTime(now.Add(-o.opts.Retain))
			target = st.base
			if err := walkIndex(b.idx, st.base+1, func(e *indexEntry) bool {
				if e.seq > st.hwm || e.edgeTime >= cutoff {
					return false
				}
				target = e.seq
				return true
			}); err != nil {
				return err
			}
		}
		end := min(target, st.base+trimChunk)
		finished = end == target
		if end > st.base {
			if err := o.deleteThrough(b, &st, end); err != nil {
				return err
			}
			op.freed = true
		}
		// The write transaction serves as the reader; it is not closed here.
		if err := o.pruneIndex(&reader{tx: tx}, pb, &st, dedupCut, pruneBlobs); err != nil {
			return err
		}
		for _, k := range pb.idxDel {
			if err := b.idx.Delete(k); err != nil {
				return err
			}
		}
		return putU64s(b.meta, metaDedupCut, uint64(st.dedupCut), uint64(st.dedupCutAt))
	})
	if err != nil {
		if isDiskFull(err) {
			err = fmt.Errorf("%w: %w", ErrDiskFull, err)
		}
		o.log.Warn("trim failed", "hwm", op.r.HWM, "err", err)
		op.done <- fmt.Errorf("trim to %d: %w", op.r.HWM, err)
		return true
	}
	if op.freed && st.drainOnly {
		o.log.Info("trim freed space: outbox leaves drain-only mode", "base", st.base)
		st.drainOnly = false
	}
	o.w, o.committed = st, st
	o.forget(pb.pruned)
	o.publish(st, false)
	if finished {
		op.done <- nil
	}
	return finished
}

// advanceHWM checks r against the stored chain and stores it as the new
// watermark when it is ahead of the old one.
func (o *Outbox) advanceHWM(b buckets, st *wstate, r protocol.Receipt) error {
	if r.HWM <= st.hwm {
		return nil
	}
	if r.HWM > st.head {
		return fmt.Errorf("receipt watermark %d is beyond the head %d: %w", r.HWM, st.head, ErrReceipt)
	}
	raw := b.recs.Get(seqKey(r.HWM))
	if raw == nil {
		return fmt.Errorf("record %d is missing: %w", r.HWM, ErrCorrupt)
	}
	h, err := linkHash(raw)
	if err != nil {
		return err
	}
	if h != r.Head {
		return fmt.Errorf("receipt head %s at %d differs from the stored record's hash %s: %w", r.Head, r.HWM, h, ErrReceipt)
	}
	c := b.recs.Cursor()
	for k, v := c.Seek(seqKey(st.hwm + 1)); k != nil && keySeq(k) <= r.HWM; k, v = c.Next() {
		st.ackedBytes += int64(len(v))
		o.readMapped(b.recs.Tx(), len(v))
	}
	st.hwm, st.hwmHead = r.HWM, r.Head
	if err := refreshOldestUnsent(b.idx, st); err != nil {
		return err
	}
	return putHWM(b.meta, r)
}

// deleteThrough deletes the records base+1..end and the checkpoints up to
// end, and moves the base to end.
func (o *Outbox) deleteThrough(b buckets, st *wstate, end uint64) error {
	raw := b.recs.Get(seqKey(end))
	if raw == nil {
		return fmt.Errorf("record %d is missing: %w", end, ErrCorrupt)
	}
	baseHash, err := linkHash(raw)
	if err != nil {
		return err
	}
	var werr error
	if err := walkIndex(b.idx, st.base+1, func(e *indexEntry) bool {
		if e.seq > end {
			return false
		}
		k := seqKey(e.seq)
		n := int64(len(b.recs.Get(k)))
		o.readMapped(b.recs.Tx(), int(n))
		if e.class == classLedger {
			st.ledgerBytes -= n
		} else {
			st.telBytes -= n
		}
		st.ackedBytes -= n
		werr = b.recs.Delete(k)
		return werr == nil
	}); err != nil || werr != nil {
		return errors.Join(err, werr)
	}
	if k, _ := b.recs.Cursor().First(); k != nil && keySeq(k) <= end {
		return fmt.Errorf("record %d has no index entry: %w", keySeq(k), ErrCorrupt)
	}
	var cps [][]byte
	c := b.cps.Cursor()
	for k, _ := c.First(); k != nil && keySeq(k) <= end; k, _ = c.Next() {
		cps = append(cps, seqKey(keySeq(k)))
	}
	for _, k := range cps {
		if err := b.cps.Delete(k); err != nil {
			return err
		}
	}
	st.base, st.baseHash = end, baseHash
	return errors.Join(
		putBase(b.meta, end, baseHash),
		putU64s(b.meta, metaBytes, uint64(st.ledgerBytes), uint64(st.telBytes)),
	)
}

// linkHash is the hash the next record's prev holds: of the bytes, or for a
// tombstone of the record it replaced.
func linkHash(raw []byte) (protocol.Hash, error) {
	r, err := protocol.DecodeRecord(raw)
	if err != nil {
		return protocol.Hash{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return r.LinkHash(raw), nil
}
