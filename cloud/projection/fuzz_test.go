package projection_test

import (
	pt "github.com/outpost-edge/outpost/cloud/projection/projectiontest"
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
	for i, r := range l.Recs {
		f.Add(uint8(i), []byte(r.Body))
	}
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		l, _ := shop(t)
		l.Pos++
		r := l.Recs[0]
		r.Pos, r.ID, r.Type, r.Body = l.Pos, "fuzz", fuzzTypes[int(typ)%len(fuzzTypes)], body
		recs := append(l.Recs, r)
		whole := projection.NewState()
		whole.Apply(projection.Fold(whole, pt.Stores(t), recs))
		split := projection.NewState()
		split.Apply(projection.Fold(split, pt.Stores(t), recs[:3]))
		split.Apply(projection.Fold(split, pt.Stores(t), recs[3:]))
		checkFigures(t, whole)
		if !reflect.DeepEqual(whole, split) {
			t.Fatalf("folding in two batches differs: %s", firstDiff(whole, split))
		}
	})
}
