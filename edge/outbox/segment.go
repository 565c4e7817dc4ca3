package outbox

import (
	"fmt"

	"github.com/outpost-edge/outpost/protocol"
	bolt "go.etcd.io/bbolt"
)

// Segment builds the segment that starts at seq from: records from..k,
// with k the last seq that has a stored checkpoint and keeps the encoded
// segment within maxBytes (protocol.SegmentOverhead included; 0 or more
// than protocol.MaxSegmentBytes means that limit). It returns nil, nil when
// nothing is stored from from on, and ErrTrimmed when from was trimmed.
//
// When even the first checkpoint after from lies beyond maxBytes, the
// segment runs to that checkpoint anyway: it may exceed maxBytes, never
// protocol.MaxSegmentBytes. The commit loop guarantees that: it signs a
// checkpoint at least every Options.SegmentBytes of records, so with
// maxBytes >= Options.SegmentBytes a segment never exceeds maxBytes.
//
// Shed telemetry records appear as their tombstones. Segment only reads;
// it can run concurrently with appends and with other reads.
func (o *Outbox) Segment(from uint64, maxBytes int) (*protocol.Segment, error) {
	if maxBytes <= 0 || maxBytes > protocol.MaxSegmentBytes {
		maxBytes = protocol.MaxSegmentBytes
	}
	if from == 0 {
		from = 1
	}
	o.qmu.Lock()
	closing := o.closing
	o.qmu.Unlock()
	if closing {
		return nil, ErrClosed
	}
	var seg *protocol.Segment
	o.dbmu.RLock()
	defer o.dbmu.RUnlock()
	err := o.db.View(func(tx *bolt.Tx) error {
		var err error
		seg, err = buildSegment(tx, o.Stream(), from, maxBytes)
		if seg != nil {
			n := len(seg.Checkpoint)
			for _, r := range seg.Records {
				n += len(r)
			}
			o.readMapped(tx, n)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("segment from %d: %w", from, err)
	}
	return seg, nil
}

func buildSegment(tx *bolt.Tx, stream protocol.Stream, from uint64, maxBytes int) (*protocol.Segment, error) {
	m, err := readMeta(tx)
	if err != nil {
		return nil, err
	}
	switch {
	case from <= m.base:
		return nil, fmt.Errorf("first stored record is %d: %w", m.base+1, ErrTrimmed)
	case from > m.head:
		return nil, nil
	}
	recs, cps := tx.Bucket(bucketRecords).Cursor(), tx.Bucket(bucketCheckpoints).Cursor()
	ck, cv := cps.Seek(seqKey(from))
	size := segmentFixed
	var (
		lens     []int
		total    int // record bytes
		fit      int // records up to the last checkpoint that fits
		fitBytes int
		fitCP    []byte
	)
	for k, v := recs.Seek(seqKey(from)); k != nil; k, v = recs.Next() {
		seq := keySeq(k)
		if seq != from+uint64(len(lens)) {
			return nil, fmt.Errorf("record %d missing: %w", from+uint64(len(lens)), ErrCorrupt)
		}
		size += segmentCost(len(v))
		if len(lens) == protocol.MaxSegmentRecs || size > protocol.MaxSegmentBytes || (size > maxBytes && fit > 0) {
			break
		}
		lens = append(lens, len(v))
		total += len(v)
		for ck != nil && keySeq(ck) < seq {
			ck, cv = cps.Next()
		}
		if ck != nil && keySeq(ck) == seq {
			fit, fitBytes, fitCP = len(lens), total, cv
			if size >= maxBytes {
				break
			}
		}
	}
	if fit == 0 {
		return nil, fmt.Errorf("no checkpoint within %d bytes of seq %d: %w", protocol.MaxSegmentBytes, from, ErrCorrupt)
	}
	// Copy out of bbolt's memory map, into one allocation.
	buf := make([]byte, fitBytes+len(fitCP))
	seg := &protocol.Segment{
		V: protocol.SegmentVersion, Edge: stream.Edge, Epoch: stream.Epoch,
		First: from, Last: from + uint64(fit) - 1, Records: make([][]byte, fit),
	}
	off := 0
	i := 0
	for k, v := recs.Seek(seqKey(from)); k != nil && i < fit; k, v = recs.Next() {
		n := copy(buf[off:off+lens[i]], v)
		seg.Records[i] = buf[off : off+n : off+n]
		off += n
		i++
	}
	seg.Checkpoint = buf[off:]
	copy(seg.Checkpoint, fitCP)
	return seg, nil
}
