package outbox

import (
	"fmt"

	"github.com/outpost-edge/outpost/protocol"
)

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
