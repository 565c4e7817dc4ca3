package load

import (
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

func testEdge(tb testing.TB) *edge {
	tb.Helper()
	_, priv, _ := protocol.GenerateKey()
	signer, _ := protocol.NewSigner(priv)
	epoch, _ := protocol.NewEpoch(nil)
	r := &run{cfg: Config{EdgePrefix: "e", Seed: 1}}
	r.makePool()
	e := &edge{id: "e-1", r: r, signer: signer, stream: protocol.Stream{Edge: "e-1", Epoch: epoch}, device: "till-1", pool: r.pool}
	e.hlc.Now = func() time.Time { return e.clock }
	return e
}

// BenchmarkMakeRecord is the load generator's cost of one record: a POS
// event, its record's CBOR and link hash.
func BenchmarkMakeRecord(b *testing.B) {
	e := testEdge(b)
	now := time.Now()
	for b.Loop() {
		e.makeRecord(now, true)
		if len(e.raws) > 1000 {
			e.raws, e.links, e.times, e.sentAt = e.raws[:0], e.links[:0], e.times[:0], e.sentAt[:0]
			e.base = e.head
		}
	}
}
