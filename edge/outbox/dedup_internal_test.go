package outbox

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestDedupTable drives the table with random inserts, moves and removals
// against a plain model, through growth and shrinking: with keys spread
// over shards and tags, with many keys sharing a few tags, and with seqs
// past 2^40.
func TestDedupTable(t *testing.T) {
	spread := func(k uint64) uint64 { return k * 0x9e3779b97f4a7c15 }
	for _, tc := range []struct {
		name  string
		first uint64 // the first seq
		key   func(k uint64) uint64
	}{
		{"spread", 1, spread},
		{"colliding", 1, func(k uint64) uint64 { return k%16<<58 | k/16%16<<34 | k }}, // 256 shard-tags
		{"past 2^40", 1<<seqBits - 5000, spread},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			var tab dedupTable
			defer tab.free()
			type pair struct{ key, seq uint64 }
			var pairs []pair
			// Keys of one shard and tag are each other's candidates.
			group := func(k uint64) uint64 { s, tag := split(k); return uint64(s)<<24 | tag }
			groups := map[uint64]map[uint64]bool{}
			add := func(p pair) {
				g := groups[group(p.key)]
				if g == nil {
					g = map[uint64]bool{}
					groups[group(p.key)] = g
				}
				g[p.seq] = true
			}
			check := func(k uint64) {
				t.Helper()
				var got, want []uint64
				tab.candidates(k, func(seq uint64) bool { got = append(got, seq); return true })
				for seq := range groups[group(k)] {
					want = append(want, seq)
				}
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Fatalf("candidates of %x: %v, want %v", k, got, want)
				}
			}
			next := tc.first
			for step := range 30000 {
				r := rng.IntN(10)
				switch {
				case len(pairs) == 0 || r < 6 && step < 20000 || r < 2:
					p := pair{tc.key(rng.Uint64N(1 << 20)), next}
					next++
					tab.insert(p.key, p.seq)
					pairs = append(pairs, p)
					add(p)
					check(p.key)
				case r < 7:
					p := &pairs[rng.IntN(len(pairs))]
					if !tab.replace(p.key, p.seq, next) {
						t.Fatalf("replace %v: not found", *p)
					}
					delete(groups[group(p.key)], p.seq)
					p.seq = next
					next++
					add(*p)
					check(p.key)
				default:
					i := rng.IntN(len(pairs))
					p := pairs[i]
					pairs[i] = pairs[len(pairs)-1]
					pairs = pairs[:len(pairs)-1]
					tab.remove(p.key, p.seq)
					tab.remove(p.key, p.seq) // a second time: nothing
					delete(groups[group(p.key)], p.seq)
					check(p.key)
				}
				if tab.len() != len(pairs) {
					t.Fatalf("step %d: len %d, want %d", step, tab.len(), len(pairs))
				}
			}
			for _, p := range pairs {
				check(p.key)
			}
			slots := 0
			for i := range tab.shards {
				slots += len(tab.shards[i].slots)
			}
			if slots > 2*dedupShards*dedupMinSlots && float64(len(pairs)) < dedupMinLoad*float64(slots) {
				t.Errorf("%d slots for %d pairs: the table did not shrink", slots, len(pairs))
			}
		})
	}
}
