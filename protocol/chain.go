package protocol

import (
	"fmt"
)

// ChainFault is the kind of break a chain check found.
type ChainFault string

const (
	FaultMalformed ChainFault = "malformed" // the record's bytes do not decode
	FaultStream    ChainFault = "stream"    // the record belongs to another edge or epoch
	FaultGap       ChainFault = "gap"       // a seq is missing (or records are out of order)
	FaultFork      ChainFault = "fork"      // prev does not match the hash before it
	FaultAltered   ChainFault = "altered"   // the record's bytes differ from what the chain committed to
	FaultHead      ChainFault = "head"      // the last record is not the signed head
)

// ChainError reports the first bad seq in a chain and why.
type ChainError struct {
	Seq    uint64 // the first seq that is not as it should be
	Fault  ChainFault
	Detail string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("chain broken at seq %d (%s): %s", e.Seq, e.Fault, e.Detail)
}

// ChainState is the point a chain check starts from or reached: the last
// verified seq of a stream and the link hash of that record (zero, and seq
// 0, before the first record).
type ChainState struct {
	Stream Stream
	Seq    uint64
	Head   Hash
}

// VerifyChain checks that records (stored bytes, in order) continue the
// chain from from: each decodes, belongs to from.Stream, has seq one more
// than the one before, and has prev equal to the link hash before it. When
// want is not nil (the seq and head of a verified checkpoint), the last
// record must be that seq and hash to that head.
//
// It returns the state after the last record and the decoded records. On a
// break it returns from and a *ChainError naming the first bad seq. A record whose
// bytes were altered breaks the link to its successor (or to the signed
// head); the check then looks one link further to tell an altered record
// from a forked successor, so the seq it names is the record that changed.
func VerifyChain(from ChainState, records [][]byte, want *ChainState) (ChainState, []Record, error) {
	st := from
	recs := make([]Record, len(records))
	hashes := make([]Hash, len(records))
	first := Record{Edge: from.Stream.Edge}
	for i, raw := range records {
		expect := from.Seq + uint64(i) + 1
		prev := &first // whose strings the record may share
		if i > 0 {
			prev = &recs[i-1]
		}
		r, err := decodeRecordAfter(raw, prev)
		if err != nil {
			return from, nil, &ChainError{Seq: expect, Fault: FaultMalformed, Detail: err.Error()}
		}
		if r.Edge != from.Stream.Edge || r.Epoch != from.Stream.Epoch {
			return from, nil, &ChainError{Seq: expect, Fault: FaultStream,
				Detail: fmt.Sprintf("record is from stream %s, want %s", r.Stream(), from.Stream)}
		}
		if r.Seq != expect {
			return from, nil, &ChainError{Seq: expect, Fault: FaultGap,
				Detail: fmt.Sprintf("expected seq %d, found seq %d", expect, r.Seq)}
		}
		recs[i] = r
		hashes[i] = r.LinkHash(raw)
		if r.Prev != st.Head {
			if i == 0 {
				return from, nil, &ChainError{Seq: r.Seq, Fault: FaultFork,
					Detail: fmt.Sprintf("prev %s does not continue the head %s at seq %d", r.Prev, st.Head, st.Seq)}
			}
			// The link from i-1 to i is broken. If i's own hash still
			// links to what follows, i is intact and i-1 was altered.
			if nextLinks(i, hashes[i], records, want) {
				return from, nil, &ChainError{Seq: st.Seq, Fault: FaultAltered,
					Detail: fmt.Sprintf("hash %s is not the %s that seq %d committed to", hashes[i-1], r.Prev, r.Seq)}
			}
			return from, nil, &ChainError{Seq: r.Seq, Fault: FaultFork,
				Detail: fmt.Sprintf("prev %s does not match hash %s of seq %d", r.Prev, st.Head, st.Seq)}
		}
		st.Seq, st.Head = r.Seq, hashes[i]
	}
	if want != nil {
		switch {
		case want.Stream != from.Stream:
			return from, nil, &ChainError{Seq: st.Seq, Fault: FaultStream,
				Detail: fmt.Sprintf("checkpoint is for stream %s, want %s", want.Stream, from.Stream)}
		case want.Seq != st.Seq:
			return from, nil, &ChainError{Seq: min(want.Seq, st.Seq) + 1, Fault: FaultHead,
				Detail: fmt.Sprintf("checkpoint is for seq %d, records end at %d", want.Seq, st.Seq)}
		case want.Head != st.Head:
			return from, nil, &ChainError{Seq: st.Seq, Fault: FaultAltered,
				Detail: fmt.Sprintf("hash %s is not the signed head %s", st.Head, want.Head)}
		}
	}
	return st, recs, nil
}

// nextLinks reports whether record i's hash h is what record i+1's prev (or
// the signed head, for the last record) says. Undecodable successors count
// as not linking.
func nextLinks(i int, h Hash, records [][]byte, want *ChainState) bool {
	if i+1 < len(records) {
		r, err := DecodeRecord(records[i+1])
		return err == nil && r.Prev == h
	}
	return want != nil && want.Head == h
}
