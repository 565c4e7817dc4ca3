package pgview

import (
	"sync"

	"github.com/outpost-edge/outpost/cloud/projection"
)

// maxCached bounds the rows a rowCache keeps: past it, the cache is
// emptied and fills again from the rows the next Applies read and write.
// Most keyed rows of a busy day are touched again the same day (its
// sales, SKU, hour, tender and till rows, the stores' on-hand rows); the
// transactions are the many, and they are only read again by a void or a
// duplicate. A variable for tests.
var maxCached = 100_000

// rowCache is what a Projection keeps of its rows between Applies: every
// row it read or wrote, as it stands after the last Apply this Projection
// made. A fold reads a key from it before asking the database, so a batch
// whose keys the Projection touched before reads only the others.
//
// It holds only while no other writer has written the tables since: it is
// valid when the checkpoint row, locked by the next Apply, is still the
// version this Projection's last Apply wrote: the same xmin (the
// transaction that wrote it), last_pos and digest. Every writer of the
// tables updates the checkpoint row in the same transaction (see the
// package's invariants), so a commit that rolled back after its Apply, an
// Apply of another process (a replica, a follower), or a rebuild's swap
// all leave another version, and the cache is dropped.
//
// Lock order: the checkpoint row (in the database), then mu, which an
// Apply holds from the checkpoint lock to its last write; before the
// lock, mu is held only for a fold in memory, never across a round trip.
// Both are let go in a defer, so an Apply that panics leaves it free.
type rowCache struct {
	mu      sync.Mutex
	rows    *cache
	n       int // entries in rows
	xmin    int64
	lastPos int64
	digest  Digest
	// gen changes whenever rows do, so an Apply knows whether the fold it
	// made before the lock saw the rows it finds after it.
	gen uint64
}

// attach makes c read rc's rows after its own; rc.mu must be held while c
// folds.
func (rc *rowCache) attach(c *cache) {
	if rc.rows == nil {
		rc.rows = newCache()
	}
	b := rc.rows
	c.sales.base, c.sku.base, c.hour.base, c.tenders.base = &b.sales, &b.sku, &b.hour, &b.tenders
	c.onHand.base, c.telemetry.base, c.tills.base, c.txns.base = &b.onHand, &b.telemetry, &b.tills, &b.txns
}

// valid reports whether the rows are those of checkpoint row cp, whose
// xmin is xmin; when not, it drops them.
func (rc *rowCache) valid(cp Checkpoint, xmin int64) bool {
	if rc.rows != nil && rc.xmin == xmin && rc.lastPos == cp.LastPos && rc.digest == cp.Digest {
		return true
	}
	rc.drop()
	return false
}

func (rc *rowCache) drop() {
	if rc.rows == nil && rc.n == 0 {
		return
	}
	rc.rows, rc.n = nil, 0
	rc.gen++
}

// keep adds the rows an Apply read (c) and wrote (d), with the checkpoint
// row it wrote: cp, in the transaction xmin.
func (rc *rowCache) keep(c *cache, d *projection.Delta, cp Checkpoint, xmin int64) {
	if rc.rows == nil || rc.n+len(d.Txns)+len(c.txns.m) > maxCached {
		rc.rows, rc.n = newCache(), 0
	}
	b := rc.rows
	rc.n += merge(&b.sales, c.sales.m, d.Tables.Sales, nil)
	rc.n += merge(&b.sku, c.sku.m, d.Tables.SKU, nil)
	rc.n += merge(&b.hour, c.hour.m, d.Tables.Hour, nil)
	rc.n += merge(&b.tenders, c.tenders.m, d.Tables.Tenders, nil)
	rc.n += merge(&b.onHand, c.onHand.m, d.Tables.OnHand, nil)
	rc.n += merge(&b.telemetry, c.telemetry.m, d.Tables.Telemetry, nil)
	rc.n += merge(&b.tills, c.tills.m, d.Tills, cloneTill)
	rc.n += merge(&b.txns, c.txns.m, d.Txns, nil)
	rc.xmin, rc.lastPos, rc.digest = xmin, cp.LastPos, cp.Digest
	rc.gen++
}

// merge puts the entries read (absent ones too: they were absent under
// the checkpoint lock) and then the rows written into t, and returns how
// many keys t gained.
func merge[K comparable, V any](t *tab[K, V], read map[K]entry[V], wrote map[K]V, clone func(V) V) int {
	n := len(t.m)
	for k, e := range read {
		t.m[k] = e
	}
	for k, v := range wrote {
		if clone != nil {
			v = clone(v)
		}
		t.m[k] = entry[V]{v: v, ok: true}
	}
	return len(t.m) - n
}
