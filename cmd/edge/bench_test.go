package main

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/outpost-edge/outpost/edge/intake/intaketest"
	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
)

// BenchmarkAckLatency measures what a device sees through the whole edge
// write path: an MQTT QoS 1 publish to the embedded broker, the real bbolt
// outbox with its group commit and fsync, and the PUBACK. It reports p50 and
// p99 of publish-to-PUBACK, msgs/s, and fsync's own p50 measured in the same
// run on the same disk, as the floor any durable ack pays.
func BenchmarkAckLatency(b *testing.B) {
	for _, c := range []struct{ publishers, window int }{{1, 1}, {1, 64}, {64, 1}, {64, 16}} {
		b.Run(fmt.Sprintf("publishers=%d/inflight=%d", c.publishers, c.window), func(b *testing.B) {
			dir := b.TempDir()
			fs := intaketest.FsyncLatency(b, dir, 200)
			_, key, _ := ed25519.GenerateKey(nil)
			s, _ := protocol.NewSigner(key)
			ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{Edge: "bench", Signer: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			defer ob.Close()
			lat := intaketest.AckLatency(b, outboxAppender{ob}, c.publishers, c.window)
			fsync := intaketest.Percentile(fs, 0.5)
			b.ReportMetric(float64(fsync.Microseconds()), "fsync-p50-µs")
			if p50 := intaketest.Percentile(lat, 0.5); fsync > 0 {
				b.ReportMetric(float64(p50)/float64(fsync), "p50/fsync")
			}
		})
	}
}

// BenchmarkIntakeVersusMochi is the whole edge write path (the intake and
// the real outbox with its fsync) as a ratio to plain mochi acking at once,
// measured in the same run, taking turns (ratio_to_mochi).
func BenchmarkIntakeVersusMochi(b *testing.B) {
	for _, c := range []struct{ publishers, window int }{{1, 64}, {64, 16}} {
		b.Run(fmt.Sprintf("publishers=%d/inflight=%d", c.publishers, c.window), func(b *testing.B) {
			dir := b.TempDir()
			_, key, _ := ed25519.GenerateKey(nil)
			s, _ := protocol.NewSigner(key)
			ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{Edge: "bench", Signer: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), TelemetryQuota: 1 << 40})
			if err != nil {
				b.Fatal(err)
			}
			defer ob.Close()
			intaketest.VersusMochi(b, outboxAppender{ob}, c.publishers, c.window)
			if st := ob.State(); st.Commits > 0 {
				b.ReportMetric(float64(st.Head)/float64(st.Commits), "events/commit")
			}
		})
	}
}

// BenchmarkHTTPBatches is the HTTP intake with the real outbox: concurrent
// clients POST batches of 100 events; it reports events/s.
func BenchmarkHTTPBatches(b *testing.B) {
	for _, posters := range []int{1, 8} {
		b.Run(fmt.Sprintf("posters=%d/batch=100", posters), func(b *testing.B) {
			_, key, _ := ed25519.GenerateKey(nil)
			s, _ := protocol.NewSigner(key)
			ob, err := outbox.Open(filepath.Join(b.TempDir(), "outbox.db"), outbox.Options{Edge: "bench", Signer: s, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), TelemetryQuota: 1 << 40})
			if err != nil {
				b.Fatal(err)
			}
			defer ob.Close()
			intaketest.HTTPBatches(b, outboxAppender{ob}, posters, 100)
			st := ob.State()
			if st.Head != uint64(b.N) {
				b.Fatalf("outbox head %d after %d events", st.Head, b.N)
			}
			if st.Commits > 0 {
				b.ReportMetric(float64(st.Head)/float64(st.Commits), "events/commit")
			}
		})
	}
}
