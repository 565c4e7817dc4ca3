package ledger_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// benchStream hands out consecutive segments of one stream.
type benchStream struct {
	e    *testEdge
	c    *chain
	next uint64 // first seq of the next segment
}

func (s *benchStream) segments(tb testing.TB, n, size int) []*protocol.Segment {
	s.c.extend(tb, n*size, time.Now(), "")
	out := make([]*protocol.Segment, n)
	for i := range out {
		out[i] = s.c.segment(s.e, s.next, s.next+uint64(size)-1)
		s.next += uint64(size)
	}
	return out
}

// copyRows is the ledger rows of segs as a plain COPY would write them.
func copyRows(tb testing.TB, segs []*protocol.Segment) [][]any {
	var rows [][]any
	now := time.Now()
	for _, seg := range segs {
		for _, raw := range seg.Records {
			r, err := protocol.DecodeRecord(raw)
			if err != nil {
				tb.Fatal(err)
			}
			h := r.LinkHash(raw)
			rows = append(rows, []any{seg.Edge, seg.Epoch[:], int64(r.Seq), int64(0), now, r.Device, r.ID, r.Type,
				string(r.Class), time.UnixMilli(r.TS), r.EdgeTime.Time(), int64(r.EdgeTime), r.IsTombstone(), h[:], raw})
		}
	}
	return rows
}

var ledgerColumns = []string{"edge", "epoch", "seq", "pos", "committed_at", "device", "event_id", "type",
	"class", "device_ts", "edge_time", "hlc", "shed", "hash", "raw"}

func plainCopy(tb testing.TB, conn *pgx.Conn, rows [][]any) {
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"ledger"}, ledgerColumns, pgx.CopyFromRows(rows)); err != nil {
		tb.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkCommit measures cloud commit throughput (signature and chain
// verification included) against plain COPY of the same rows into the same
// table, alternating the two in the same run so that both see the same
// table size. One op is one batch: segs segments of size records, from
// segs different streams (an ingest worker's batch across edges).
func BenchmarkCommit(b *testing.B) {
	for _, shape := range []struct{ segs, size int }{{10, 100}, {4, 250}, {1, 100}} {
		b.Run(fmt.Sprintf("segs=%d/size=%d", shape.segs, shape.size), func(b *testing.B) {
			url := MustMigratedDB(b)
			l := MustLedger(b, url, ledger.Options{})
			copyConn := MustConn(b, url)
			streams := make([]*benchStream, shape.segs)
			for i := range streams {
				e := MustAddEdge(b, l, fmt.Sprintf("edge-%d", i))
				streams[i] = &benchStream{e: e, c: &chain{Stream: protocol.Stream{Edge: e.ID, Epoch: newEpoch(b)}}, next: 1}
			}
			ctx := context.Background()
			var commitDur, copyDur time.Duration
			rows := 0
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				var segs []*protocol.Segment
				for _, s := range streams {
					segs = append(segs, s.segments(b, 1, shape.size)...)
				}
				in := inputs(segs...)
				crows := copyRows(b, segs)
				b.StartTimer()

				t0 := time.Now()
				out, err := l.Commit(ctx, in)
				commitDur += time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
				for _, o := range out {
					if o.Kind != ledger.KindCommitted {
						b.Fatalf("outcome %+v", o)
					}
				}
				t0 = time.Now()
				plainCopy(b, copyConn, crows)
				copyDur += time.Since(t0)
				rows += len(crows)
			}
			b.ReportMetric(copyDur.Seconds()/commitDur.Seconds(), "ratio_to_copy")
			b.ReportMetric(float64(rows)/commitDur.Seconds(), "rows/s")
			b.ReportMetric(float64(rows)/copyDur.Seconds(), "copy_rows/s")
		})
	}
}

// BenchmarkCommitLatency measures commit latency at half of the throughput
// one committer reaches: it first commits flat out to find that rate, then
// offers batches at half of it, on schedule (open loop: a late commit does
// not push the schedule back), and reports the p50 and p99 of the time
// from a batch's scheduled arrival to the end of its commit. One op is one
// batch of 4 segments of 100 records from 4 streams.
func BenchmarkCommitLatency(b *testing.B) {
	const nseg, size = 4, 100
	url := MustMigratedDB(b)
	l := MustLedger(b, url, ledger.Options{})
	streams := make([]*benchStream, nseg)
	for i := range streams {
		e := MustAddEdge(b, l, fmt.Sprintf("edge-%d", i))
		streams[i] = &benchStream{e: e, c: &chain{Stream: protocol.Stream{Edge: e.ID, Epoch: newEpoch(b)}}, next: 1}
	}
	ctx := context.Background()
	batch := func() []ledger.Input {
		var segs []*protocol.Segment
		for _, s := range streams {
			segs = append(segs, s.segments(b, 1, size)...)
		}
		return inputs(segs...)
	}
	commit := func(in []ledger.Input) {
		if _, err := l.Commit(ctx, in); err != nil {
			b.Fatal(err)
		}
	}

	// Flat out, to find the rate (batches made beforehand).
	const warm = 30
	pre := make([][]ledger.Input, warm)
	for i := range pre {
		pre[i] = batch()
	}
	t0 := time.Now()
	for _, in := range pre {
		commit(in)
	}
	interval := 2 * time.Since(t0) / warm

	pre = make([][]ledger.Input, b.N)
	for i := range pre {
		pre[i] = batch()
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for i, in := range pre {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d) // pacing the offered load, not waiting for a condition
		}
		commit(in)
		lat = append(lat, time.Since(due))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	b.ReportMetric(float64(nseg*size)/interval.Seconds(), "offered_rows/s")
}
