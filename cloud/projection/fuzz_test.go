package projection_test

import (
	"reflect"
	"testing"

	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/protocol/pos"
)

var fuzzTypes = []string{pos.TypeSaleCompleted, pos.TypeReturnCompleted, pos.TypeSaleVoided, pos.TypeInventoryAdjusted,
	pos.TypeInventoryCounted, pos.TypeTelemetryReading, pos.TypeTillClosed}

// FuzzFold folds a record with any body, of any POS type, into the tests'
// standard day: the fold must not panic, the figures must still add up,
// and folding in two batches must equal folding in one. Bodies come from
// devices; the ledger keeps what the intake let through, and a projection
// must survive whatever that is (seeds in testdata/fuzz/FuzzFold).
func FuzzFold(f *testing.F) {
	l, _ := shop(f)
	for i, r := range l.recs {
		f.Add(uint8(i), []byte(r.Body))
	}
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		l, _ := shop(t)
		l.pos++
		r := l.recs[0]
		r.Pos, r.ID, r.Type, r.Body = l.pos, "fuzz", fuzzTypes[int(typ)%len(fuzzTypes)], body
		recs := append(l.recs, r)
		whole := projection.NewState()
		whole.Apply(projection.Fold(whole, testStores(t), recs))
		split := projection.NewState()
		split.Apply(projection.Fold(split, testStores(t), recs[:3]))
		split.Apply(projection.Fold(split, testStores(t), recs[3:]))
		checkFigures(t, whole)
		if !reflect.DeepEqual(whole, split) {
			t.Fatalf("folding in two batches differs: %s", firstDiff(whole, split))
		}
	})
}
