package ingest

import (
	"crypto/sha256"
	"sync"

	"github.com/outpost-edge/outpost/protocol"
)

// maxSeen bounds what seenSegments remembers; past it, it starts over
// (forgetting only costs a commit transaction for the next resend).
const maxSeen = 1 << 16

// seenSegments remembers the payloads this process's commits found in the
// ledger (committed then, or found committed before), by SHA-256, and each
// stream's highest watermark they reached. An edge that times out waiting
// for its receipts resends its window from the cloud's watermark, and in an
// overloaded cloud (a reconnect storm, saturation) those copies queue
// behind everything else and each cost a commit transaction, which delays
// the receipts of every edge, which makes more edges time out and resend:
// a resend storm. A payload byte for byte the same as one the ledger has
// already taken can only be a duplicate again (the same records, the same
// signed checkpoint, from the same edge), so it is answered with the
// stream's watermark and acked without verification or a transaction. Anything else, including a
// different segment over the same records (a fork), goes to the ledger.
type seenSegments struct {
	mu       sync.Mutex
	payloads map[[sha256.Size]byte]protocol.Stream
	wm       map[protocol.Stream]Watermark
}

// payloadHash is the key of a payload from the edge the broker
// authenticated (its topic's): the same bytes from another edge are that
// edge's business, and go to the ledger (which quarantines them).
func payloadHash(topicEdge string, payload []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(topicEdge))
	h.Write([]byte{0})
	h.Write(payload)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

func newSeenSegments() *seenSegments {
	return &seenSegments{payloads: map[[sha256.Size]byte]protocol.Stream{}, wm: map[protocol.Stream]Watermark{}}
}

// lookup returns the watermark to answer a payload with hash h, when the
// ledger has taken that payload before.
func (s *seenSegments) lookup(h [sha256.Size]byte) (Watermark, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.payloads[h]
	if !ok {
		return Watermark{}, false
	}
	w, ok := s.wm[st]
	return w, ok
}

// note records that the ledger took the payload with hash h, its outcome
// leaving the stream at w.
func (s *seenSegments) note(h [sha256.Size]byte, w Watermark) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.payloads) >= maxSeen {
		s.payloads = map[[sha256.Size]byte]protocol.Stream{}
	}
	if len(s.wm) >= maxSeen {
		s.wm = map[protocol.Stream]Watermark{}
	}
	s.payloads[h] = w.Stream
	if o, ok := s.wm[w.Stream]; !ok || w.HWM > o.HWM {
		s.wm[w.Stream] = w
	}
}
