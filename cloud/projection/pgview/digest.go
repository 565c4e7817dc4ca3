package pgview

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/outpost-edge/outpost/protocol"
)

// Digest is the projection checkpoint's digest: the sum, modulo 2^256, of
// SHA-256(pos as 8 big-endian bytes ‖ link hash) over every record folded.
// A sum, not a chain, so that it names the set of records folded whatever
// order the commits applied them in: an incremental projection and its
// rebuild have the same digest exactly when they folded the same records.
type Digest [32]byte

// Add adds one record to d.
func (d *Digest) Add(pos int64, h protocol.Hash) {
	var b [8 + len(h)]byte
	binary.BigEndian.PutUint64(b[:8], uint64(pos))
	copy(b[8:], h[:])
	x := sha256.Sum256(b[:])
	var carry uint16
	for i := len(d) - 1; i >= 0; i-- {
		s := uint16(d[i]) + uint16(x[i]) + carry
		d[i], carry = byte(s), s>>8
	}
}
