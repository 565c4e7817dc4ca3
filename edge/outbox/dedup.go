package outbox

import (
	"hash/maphash"

	"github.com/outpost-edge/outpost/protocol"
)

// The dedup table maps a 64-bit hash of (device, id) to the seq that pair
// got. It lives in memory and is rebuilt at Open from the index blobs, which
// are written in seq order (appends to a B-tree are cheap; inserts at random
// keys, as a persistent (device, id) index would need, are not).
//
// It is sized for a backlog of millions. A slot is 8 bytes: 24 bits of the
// hash as a tag and the seq's low 40 bits (see seqOf), and a table is kept
// between 20% and 80% full, so a pair costs 10 to 16 bytes (a Go map costs
// about 42). On Linux the slots live outside the Go heap (memory_linux.go),
// so that the garbage collector's headroom, a multiple of the live heap, is
// not sized by the table. The table is split by 6 more bits of the hash
// into 64 shards that grow and shrink on their own, so that a resize
// copies and holds twice only 1/64 of the table, and pauses the builder
// for as little. Slots are placed by linear probing in Robin Hood order: a
// slot's home is its tag scaled to the shard's size, so a shard can be
// resized from its tags alone, and a miss, the common case, stops after a
// few slots.
//
// The table is a multimap: a tag names candidates, never a pair. Every
// candidate is confirmed against the pair's index entry (or the batch being
// built) before it counts, and a new pair gets its own slot even when its
// tag is taken, so a hash collision costs one index look-up and can neither
// turn a new event into a duplicate nor make a pair forget its twin. A pair
// holds at most one slot: a repeat of a pair outside the window moves the
// pair's slot to the new seq.
type dedupTable struct {
	shards [dedupShards]dedupShard
	n      int    // slots in use
	top    uint64 // the highest seq ever stored (see seqOf)
	sink   uint64 // what warm reads, so that the reads stay
}

type dedupShard struct {
	slots []uint64 // tag << 40 | seq's low 40 bits; 0 is empty
	mem   []byte   // the mapping slots live in, when off the heap
	n     int
}

const (
	dedupShards = 64
	seqBits     = 40
	seqMask     = 1<<seqBits - 1
	// A shard has at least a page of slots, grows by half when 80% full and
	// shrinks to half full when less than 20% full.
	dedupMinSlots = 512
	dedupMaxLoad  = 0.8
	dedupMinLoad  = 0.2
)

// split returns key's shard and tag.
func split(key uint64) (shard int, tag uint64) { return int(key >> 58), key >> 34 & 0xffffff }

func mkslot(tag, seq uint64) uint64 { return tag<<seqBits | seq&seqMask }

// seqOf returns the seq a slot holds. A slot keeps the seq's low 40 bits;
// the seq is the one at or below top with those bits. Every seq in the
// table is within 2^40 of top: a pair leaves the table once its record is
// trimmed and older than the window, and no outbox holds 2^40 records.
func (t *dedupTable) seqOf(s uint64) uint64 {
	return t.top - (t.top-s)&seqMask
}

// len returns the pairs in the table (after free: those it held).
func (t *dedupTable) len() int { return t.n }

// home is where a tag's slot belongs in sh: the tag scaled to its size.
func (sh *dedupShard) home(tag uint64) int { return int(tag * uint64(len(sh.slots)) >> 24) }

// dist is how far slot i is from its home.
func (sh *dedupShard) dist(i int) int {
	d := i - sh.home(sh.slots[i]>>seqBits)
	if d < 0 {
		d += len(sh.slots)
	}
	return d
}

// candidates calls fn with the seq of every slot whose tag is key's, until
// fn returns false. fn must not change the table.
func (t *dedupTable) candidates(key uint64, fn func(seq uint64) bool) {
	s, tag := split(key)
	sh := &t.shards[s]
	sh.find(tag, func(i int) bool { return fn(t.seqOf(sh.slots[i])) })
}

func (sh *dedupShard) find(tag uint64, fn func(i int) bool) {
	c := len(sh.slots)
	if c == 0 {
		return
	}
	for i, d := sh.home(tag), 0; ; d++ {
		s := sh.slots[i]
		// Robin Hood order: past a slot nearer its home than ours would be,
		// there is nothing of ours.
		if s == 0 || sh.dist(i) < d {
			return
		}
		if s>>seqBits == tag && !fn(i) {
			return
		}
		if i++; i == c {
			i = 0
		}
	}
}

// warm reads key's home slot. Called for a whole batch before it is looked
// up one by one, it lets the CPU overlap the cache and TLB misses of the
// reads, which are independent of one another; the look-ups then find the
// slots in cache.
func (t *dedupTable) warm(key uint64) {
	s, tag := split(key)
	if sh := &t.shards[s]; len(sh.slots) > 0 {
		t.sink += sh.slots[sh.home(tag)]
	}
}

// index returns the shard and slot holding (key, seq), or -1.
func (t *dedupTable) index(key, seq uint64) (*dedupShard, int) {
	s, tag := split(key)
	sh := &t.shards[s]
	at, want := -1, mkslot(tag, seq)
	sh.find(tag, func(i int) bool {
		if sh.slots[i] == want {
			at = i
			return false
		}
		return true
	})
	return sh, at
}

// insert adds a slot for (key, seq).
func (t *dedupTable) insert(key, seq uint64) {
	s, tag := split(key)
	sh := &t.shards[s]
	if float64(sh.n+1) > dedupMaxLoad*float64(len(sh.slots)) {
		sh.resize(max(dedupMinSlots, len(sh.slots)*3/2))
	}
	sh.put(mkslot(tag, seq))
	sh.n++
	t.n++
	t.top = max(t.top, seq)
}

func (sh *dedupShard) put(s uint64) {
	c := len(sh.slots)
	for i, d := sh.home(s>>seqBits), 0; ; d++ {
		x := &sh.slots[i]
		if *x == 0 {
			*x = s
			return
		}
		if xd := sh.dist(i); xd < d {
			s, *x = *x, s
			d = xd
		}
		if i++; i == c {
			i = 0
		}
	}
}

// replace moves the slot (key, old) to (key, seq) and reports whether it
// was there.
func (t *dedupTable) replace(key, old, seq uint64) bool {
	sh, i := t.index(key, old)
	if i < 0 {
		return false
	}
	_, tag := split(key)
	sh.slots[i] = mkslot(tag, seq)
	t.top = max(t.top, seq)
	return true
}

// remove drops the slot (key, seq) if it is there.
func (t *dedupTable) remove(key, seq uint64) {
	sh, i := t.index(key, seq)
	if i < 0 {
		return
	}
	// Shift the slots after it back by one, up to an empty one or one at
	// its home.
	c := len(sh.slots)
	for {
		j := i + 1
		if j == c {
			j = 0
		}
		if sh.slots[j] == 0 || sh.dist(j) == 0 {
			sh.slots[i] = 0
			break
		}
		sh.slots[i] = sh.slots[j]
		i = j
	}
	sh.n--
	t.n--
	if c > dedupMinSlots && float64(sh.n) < dedupMinLoad*float64(c) {
		sh.resize(max(dedupMinSlots, 2*sh.n))
	}
}

// resize moves the shard's slots to n slots (rounded up to whole pages).
func (sh *dedupShard) resize(n int) {
	n = (n + dedupMinSlots - 1) / dedupMinSlots * dedupMinSlots
	old, oldMem := sh.slots, sh.mem
	sh.slots, sh.mem = allocSlots(n)
	for _, s := range old {
		if s != 0 {
			sh.put(s)
		}
	}
	freeSlots(oldMem)
}

// free releases the slots; the table must not be used after.
func (t *dedupTable) free() {
	for i := range t.shards {
		freeSlots(t.shards[i].mem)
		t.shards[i].slots, t.shards[i].mem = nil, nil
	}
}

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

// dedupUndo restores the dedup table when a commit fails: the slot (key,
// seq) goes back to old, or away when old is 0.
type dedupUndo struct {
	key, seq, old uint64
}

// batchEntry is an accepted record of the commit in progress, for dedup
// within the batch.
type batchEntry struct {
	device, id string
	edgeTime   protocol.HLCTime
}
