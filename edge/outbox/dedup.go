package outbox

import (
	"hash/maphash"

	"github.com/outpost-edge/outpost/protocol"
)

// The dedup table maps a 64-bit hash of (device, id) to the seq that pair
// got. It lives in memory and is rebuilt at Open from the index blobs, which
// are written in seq order (appends to a B-tree are cheap; inserts at random
// keys, as a persistent (device, id) index would need, are not). A hit is
// confirmed against the index entry, so a hash collision can never turn a
// new event into a duplicate; at worst it makes one pair forget an earlier
// twin. The table costs roughly 40 bytes per (device, id) inside the window.

func dedupKey(seed maphash.Seed, device, id []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	h.Write(device)
	h.WriteByte(0) // device ids cannot contain NUL
	h.Write(id)
	return h.Sum64()
}

func dedupKeyString(seed maphash.Seed, device, id string) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	h.WriteString(device)
	h.WriteByte(0)
	h.WriteString(id)
	return h.Sum64()
}

// dedupUndo restores one dedup table slot when a commit fails.
type dedupUndo struct {
	key     uint64
	seq     uint64
	existed bool
}

// batchEntry is an accepted record of the commit in progress, for dedup
// within the batch.
type batchEntry struct {
	device, id string
	edgeTime   protocol.HLCTime
}
