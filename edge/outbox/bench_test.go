package outbox_test

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkAppend measures durable appends from many concurrent producers,
// each keeping a window of AppendAsync calls in flight the way the intake
// pipelines PUBACKs, and reports the rate as a ratio to the raw ceiling
// measured in the same run: the same record bytes put into a bare bbolt
// bucket in transactions of the same size, one fsync each.
func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		producers, window int
	}{
		{64, 16},
		{64, 32},
		{64, 64},
	} {
		b.Run(fmt.Sprintf("producers=%d/window=%d", bc.producers, bc.window), func(b *testing.B) {
			benchAppend(b, bc.producers, bc.window)
		})
	}
}

func benchAppend(b *testing.B, producers, window int) {
	dir := b.TempDir()
	// The telemetry quota is out of the way: this measures appends, not
	// shedding (which a long run would reach at the default quota).
	o, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{
		Edge: "edge-1", Signer: mustSigner(b), Logger: slog.New(slog.DiscardHandler),
		TelemetryQuota: 1 << 40,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	raw, err := bolt.Open(filepath.Join(dir, "raw.db"), 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	// The machine is shared and its speed drifts, so the outbox and the raw
	// ceiling take turns, a round each, and the ratio is of the sums.
	const rounds = 4
	var outboxTime, rawTime, sameTime, outboxCPU, rawCPU time.Duration
	b.ResetTimer()
	for r := range rounds {
		n := b.N / rounds
		if r == rounds-1 {
			n = b.N - n*(rounds-1)
		}
		first := o.State().Head + 1
		cpu := processCPU()
		commits := o.State().Commits
		outboxTime += appendRound(b, o, producers, window, n)
		outboxCPU += processCPU() - cpu
		b.StopTimer()
		commits = o.State().Commits - commits
		var recs [][]byte
		for from := first; ; {
			seg, err := o.Segment(from, 0)
			if err != nil {
				b.Fatal(err)
			}
			if seg == nil {
				break
			}
			recs = append(recs, seg.Records...)
			from = seg.Last + 1
		}
		if len(recs) != n {
			b.Fatalf("round %d: %d records stored, want %d", r, len(recs), n)
		}
		cpu = processCPU()
		rawTime += rawPuts(b, raw, first, recs, outbox.DefaultMaxBatch)
		rawCPU += processCPU() - cpu
		// The same records again, in as many transactions as the outbox
		// made of them: what the outbox's own work costs over bbolt's,
		// apart from how many events each commit gathered.
		sameTime += rawPuts(b, raw, first+uint64(n), recs, (n+int(commits)-1)/max(int(commits), 1))
		b.StartTimer()
	}
	b.StopTimer()
	st := o.State()
	b.ReportMetric(float64(b.N)/outboxTime.Seconds(), "events/s")
	b.ReportMetric(float64(b.N)/float64(st.Commits), "events/commit")
	b.ReportMetric(rawTime.Seconds()/outboxTime.Seconds(), "ratio_to_raw")
	b.ReportMetric(float64(b.N)/rawTime.Seconds(), "raw_puts/s")
	b.ReportMetric(sameTime.Seconds()/outboxTime.Seconds(), "ratio_to_raw_same_txns")
	// CPU time of the process (all threads, user and system) per event:
	// on a shared machine, the part of the cost that does not depend on
	// how much of it this process gets.
	b.ReportMetric(float64(outboxCPU.Nanoseconds())/float64(b.N), "cpu_ns/event")
	b.ReportMetric(float64(rawCPU.Nanoseconds())/float64(b.N), "raw_cpu_ns/event")
}

// appendRound appends n events from producers goroutines, each keeping up
// to window appends in flight, and returns how long that took.
func appendRound(b *testing.B, o *outbox.Outbox, producers, window, n int) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev := "dev-" + strconv.Itoa(g)
			ring := make([]*outbox.Pending, 0, window)
			check := func(p *outbox.Pending) {
				res, err := p.Results()
				if err == nil && res[0].Err != nil {
					err = res[0].Err
				}
				if err != nil {
					failed.Store(err)
				}
			}
			for {
				i := next.Add(1)
				if i > int64(n) {
					break
				}
				if len(ring) == window {
					check(ring[0])
					ring = append(ring[:0], ring[1:]...)
				}
				id := "ev-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatInt(i, 10)
				ring = append(ring, o.AppendAsync([]outbox.Entry{entry(dev, id, "telemetry.reading")}))
			}
			for _, p := range ring {
				check(p)
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return d
}

// rawPuts is the ceiling: recs put under 8-byte seq keys in transactions of
// batch puts, each committed with an fsync, as fast as bbolt goes.
func rawPuts(b *testing.B, db *bolt.DB, first uint64, recs [][]byte, batch int) time.Duration {
	start := time.Now()
	for i := 0; i < len(recs); i += batch {
		err := db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("records"))
			if err != nil {
				return err
			}
			bk.FillPercent = 1
			for j := i; j < min(i+batch, len(recs)); j++ {
				var k [8]byte
				binary.BigEndian.PutUint64(k[:], first+uint64(j))
				if err := bk.Put(k[:], recs[j]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// BenchmarkAppendSlowDisk runs the append benchmark's producers against a
// disk whose fsync is slow, as an SD card's is (5 ms and 20 ms per fsync;
// bbolt syncs twice per commit, so each commit is made twice that much
// slower, through a test hook in the committer). Group commit is what
// keeps throughput: it reports events/s, events/commit, ms/commit, and
// x_fsync_per_event, the rate as a multiple of what one commit per event
// would reach on that disk (1 / (2 × fsync)).
func BenchmarkAppendSlowDisk(b *testing.B) {
	for _, fsync := range []time.Duration{5 * time.Millisecond, 20 * time.Millisecond} {
		for _, bc := range []struct{ producers, window int }{{1, 64}, {64, 16}} {
			b.Run(fmt.Sprintf("fsync=%s/producers=%d/window=%d", fsync, bc.producers, bc.window), func(b *testing.B) {
				o, err := outbox.Open(filepath.Join(b.TempDir(), "outbox.db"), outbox.Options{
					Edge: "edge-1", Signer: mustSigner(b), Logger: slog.New(slog.DiscardHandler),
					TelemetryQuota: 1 << 40,
				})
				if err != nil {
					b.Fatal(err)
				}
				defer o.Close()
				outbox.SlowSync(o, 2*fsync)
				b.ResetTimer()
				d := appendRound(b, o, bc.producers, bc.window, b.N)
				b.StopTimer()
				st := o.State()
				rate := float64(b.N) / d.Seconds()
				b.ReportMetric(rate, "events/s")
				b.ReportMetric(float64(b.N)/float64(st.Commits), "events/commit")
				b.ReportMetric(d.Seconds()*1e3/float64(st.Commits), "ms/commit")
				b.ReportMetric(rate*(2*fsync).Seconds(), "x_fsync_per_event")
			})
		}
	}
}

// BenchmarkBacklogMemory measures the process's memory with a backlog of
// 1,000,000 events the cloud has not acknowledged (no trim), at three
// points: after 64 producers appended them (durably, each keeping 16
// appends in flight the way the intake does), after an uplink read all of
// them through Segments and encoded them, one 256 KiB segment at a time,
// and after the outbox was closed and opened again
// (state and dedup table rebuilt from the file). At each it reports VmRSS
// and its anonymous and file-backed parts from /proc/self/status, the Go
// heap in use, and the highest RSS since the last point (VmHWM, reset
// through /proc/self/clear_refs).
// The runtime is not asked to collect or return memory before a reading.
// It ignores b.N: the figures are for one backlog of that size; run it
// alone (-bench BacklogMemory -benchtime 1x) so that the peak is its own.
func BenchmarkBacklogMemory(b *testing.B) {
	const (
		n         = 1_000_000
		producers = 64
		window    = 16
	)
	path := filepath.Join(b.TempDir(), "outbox.db")
	// Segments of 256 KiB, as the edge runs by default (--segment-bytes).
	const segBytes = 256 << 10
	opts := outbox.Options{Edge: "edge-1", Signer: mustSigner(b), Logger: slog.New(slog.DiscardHandler), SegmentBytes: segBytes}
	o, err := outbox.Open(path, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { o.Close() }()
	report := func(phase string) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(procStatus("VmRSS"))/(1<<10), phase+"_rss_MiB")
		b.ReportMetric(float64(procStatus("RssAnon"))/(1<<10), phase+"_anon_MiB")
		b.ReportMetric(float64(procStatus("RssFile"))/(1<<10), phase+"_file_MiB")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), phase+"_heap_MiB")
		b.ReportMetric(float64(procStatus("VmHWM"))/(1<<10), phase+"_peak_MiB")
		resetPeakRSS()
	}
	resetPeakRSS()
	b.ResetTimer()
	appendRound(b, o, producers, window, n)
	st := o.State()
	if st.Backlog != n {
		b.Fatalf("backlog %d, want %d", st.Backlog, n)
	}
	report("append")
	read := 0
	for from := uint64(1); ; {
		seg, err := o.Segment(from, segBytes)
		if err != nil {
			b.Fatal(err)
		}
		if seg == nil {
			break
		}
		if _, err := protocol.EncodeSegment(seg, false); err != nil {
			b.Fatal(err)
		}
		read += len(seg.Records)
		from = seg.Last + 1
	}
	if read != n {
		b.Fatalf("read %d records, want %d", read, n)
	}
	report("read")
	if err := o.Close(); err != nil {
		b.Fatal(err)
	}
	if o, err = outbox.Open(path, opts); err != nil {
		b.Fatal(err)
	}
	if st := o.State(); st.Backlog != n {
		b.Fatalf("backlog after reopen %d, want %d", st.Backlog, n)
	}
	report("reopen")
	b.StopTimer()
	b.ReportMetric(float64(st.BacklogBytes)/(1<<20), "backlog_MiB")
	fi, _ := os.Stat(path)
	b.ReportMetric(float64(fi.Size())/(1<<20), "db_file_MiB")
}

// resetPeakRSS resets VmHWM to the current RSS.
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// procStatus returns a field of /proc/self/status in KiB (0 off Linux).
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
