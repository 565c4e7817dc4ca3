package intake_test

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
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
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
			srv.AddHook(new(auth.AllowHook), nil)
			srv.AddListener(listeners.NewNet("bench", ln))
			if err := srv.Serve(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { srv.Close() })
			intaketest.Publish(b, ln.Addr().String(), "dev-1", "x", c.pubs, c.window)
		})
	}
}
