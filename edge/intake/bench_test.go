package intake_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/outpost-edge/outpost/edge/intake/intaketest"
)

var benchShapes = []struct{ pubs, window int }{{1, 1}, {1, 64}, {64, 1}, {64, 16}}

// BenchmarkAckLatency measures QoS 1 ack latency through the intake, with
// a fake appender that group-commits with one real fsync per commit. The
// raw fsync latency measured in the same run is reported (fsync-p50-µs)
// and the latencies as ratios to it. BenchmarkPlainMochi is the ceiling:
// the same clients against mochi acking at once, with no fsync behind it.
// cmd-level benchmarks run intaketest.AckLatency with the real outbox.
func BenchmarkAckLatency(b *testing.B) {
	dir := b.TempDir()
	fsync := intaketest.Percentile(intaketest.FsyncLatency(b, dir, 200), 0.5)
	for _, c := range benchShapes {
		b.Run(fmt.Sprintf("publishers=%d/window=%d", c.pubs, c.window), func(b *testing.B) {
			file, err := os.CreateTemp(dir, "commit-*")
			if err != nil {
				b.Fatal(err)
			}
			f := intaketest.NewFakeAppender()
			f.SyncFile = file
			b.Cleanup(func() { f.Close(); file.Close() })
			lat := intaketest.AckLatency(b, f, c.pubs, c.window)
			if len(lat) == 0 {
				return
			}
			b.ReportMetric(float64(fsync.Microseconds()), "fsync-p50-µs")
			b.ReportMetric(float64(intaketest.Percentile(lat, 0.5))/float64(fsync), "p50/fsync")
			b.ReportMetric(float64(intaketest.Percentile(lat, 0.99))/float64(fsync), "p99/fsync")
		})
	}
}

// BenchmarkPlainMochi is the baseline for BenchmarkAckLatency: a bare
// mochi broker that acknowledges QoS 1 publishes at once, without a hook,
// a decoder or an fsync, driven by the same clients.
func BenchmarkPlainMochi(b *testing.B) {
	for _, c := range benchShapes {
		b.Run(fmt.Sprintf("publishers=%d/window=%d", c.pubs, c.window), func(b *testing.B) {
			intaketest.Publish(b, intaketest.StartPlainMochi(b), "dev-1", "x", c.pubs, c.window)
		})
	}
}

// BenchmarkVersusMochi is the intake's throughput as a ratio to plain
// mochi's measured in the same run (ratio_to_mochi), for the two shapes the
// goal is set for: one publisher with 64 in flight, and 64 with 16 each.
// The appender group-commits with one real fsync per commit; cmd/edge's
// BenchmarkIntakeVersusMochi runs the same with the real outbox.
func BenchmarkVersusMochi(b *testing.B) {
	for _, c := range [...]struct{ pubs, window int }{{1, 64}, {64, 16}} {
		b.Run(fmt.Sprintf("publishers=%d/window=%d", c.pubs, c.window), func(b *testing.B) {
			file, err := os.CreateTemp(b.TempDir(), "commit-*")
			if err != nil {
				b.Fatal(err)
			}
			f := intaketest.NewFakeAppender()
			f.SyncFile = file
			b.Cleanup(func() { f.Close(); file.Close() })
			intaketest.VersusMochi(b, f, c.pubs, c.window)
		})
	}
}
