package projection_test

import (
	"testing"

	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
)

// BenchmarkFold folds POS traffic in batches of 100 on the state so far,
// as commits do: the in-memory part of a commit's projection step.
func BenchmarkFold(b *testing.B) {
	recs := projectiontest.Random(b, 5, 3000).Recs
	stores := projectiontest.Stores(b)
	b.ResetTimer()
	for range b.N {
		s := projection.NewState()
		for i := 0; i < len(recs); i += 100 {
			s.Apply(projection.Fold(s, stores, recs[i:min(i+100, len(recs))]))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs))/1000, "µs/record")
}
