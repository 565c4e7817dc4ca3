package pgview

import (
	"fmt"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
)

// BenchmarkCommitWithProjections measures the commit of POS traffic
// (projectiontest.Random: sales, returns, voids, duplicates, Z reports,
// stock movements, telemetry) through ledger.Commit with every projection
// on, against the same commits into a ledger without projections, in the
// same run on the same machine. The figure is on/off, the throughput with
// projections as a share of the throughput without (goal: 0.8 or more);
// records/s are the commit throughput with projections.
func BenchmarkCommitWithProjections(b *testing.B) {
	const records = 3000
	recs := projectiontest.Random(b, 5, records).Recs
	for _, size := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			var on, off time.Duration
			for range b.N {
				b.StopTimer()
				plain := newRig(b)
				plain.l = ledger.New(plain.pool, ledger.Options{})
				folded := newRig(b)
				b.StartTimer()
				off += commitAll(plain, recs, size)
				on += commitAll(folded, recs, size)
			}
			b.ReportMetric(off.Seconds()/on.Seconds(), "on/off")
			b.ReportMetric(float64(b.N*len(recs))/on.Seconds(), "records/s")
			b.ReportMetric(float64(b.N*len(recs))/off.Seconds(), "records/s-without")
			// The projection step, the section the checkpoint lock
			// serialises: what a batch costs more with projections.
			batches := b.N * ((len(recs) + size - 1) / size)
			b.ReportMetric(float64((on-off).Milliseconds())/float64(batches), "ms/batch-projection")
		})
	}
}

func commitAll(r *rig, recs []projection.Record, size int) time.Duration {
	start := time.Now()
	for i := 0; i < len(recs); i += size {
		r.commit(recs[i:min(i+size, len(recs))]...)
	}
	return time.Since(start)
}
