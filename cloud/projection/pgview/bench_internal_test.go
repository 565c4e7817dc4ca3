package pgview

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
// records/s are the commit throughput with projections. The two ledgers
// commit the same batches in turn (one batch into one, the same batch into
// the other, the first of the pair alternating), so that a machine whose
// load changes during the run slows both alike and the ratio stays
// comparable between runs. server-cpu-off/on is the same share in the CPU
// time the server's backends spent (read from /proc, so only when the
// server runs on this machine): on a loaded machine it moves less than
// wall time does.
func BenchmarkCommitWithProjections(b *testing.B) {
	const records = 3000
	recs := projectiontest.Random(b, 5, records).Recs
	// Other traffic, committed into both ledgers before the run: a server
	// commits on connections that have run every statement before, so
	// the run measures commits, not the first preparing of statements
	// and loading of table metadata on new connections.
	warm := projectiontest.Random(b, 6, 200).Recs
	for _, size := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			var on, off, cpuOn, cpuOff time.Duration
			cpuKnown := true
			for range b.N {
				b.StopTimer()
				plain := newRig(b)
				plain.l = ledger.New(plain.pool, ledger.Options{})
				folded := newRig(b)
				commitInTurn(plain, folded, warm, size)
				p0, ok0 := backendCPU(plain)
				f0, ok1 := backendCPU(folded)
				b.StartTimer()
				o, f := commitInTurn(plain, folded, recs, size)
				b.StopTimer()
				p1, ok2 := backendCPU(plain)
				f1, ok3 := backendCPU(folded)
				b.StartTimer()
				off, on = off+o, on+f
				cpuKnown = cpuKnown && ok0 && ok1 && ok2 && ok3
				cpuOff, cpuOn = cpuOff+p1.since(p0), cpuOn+f1.since(f0)
			}
			b.ReportMetric(off.Seconds()/on.Seconds(), "on/off")
			if cpuKnown && cpuOn > 0 {
				b.ReportMetric(cpuOff.Seconds()/cpuOn.Seconds(), "server-cpu-off/on")
				b.ReportMetric(float64((cpuOn-cpuOff).Microseconds())/1000/float64(b.N*((len(recs)+size-1)/size)), "server-cpu-ms/batch-projection")
			}
			b.ReportMetric(float64(b.N*len(recs))/on.Seconds(), "records/s")
			b.ReportMetric(float64(b.N*len(recs))/off.Seconds(), "records/s-without")
			// The projection step, the section the checkpoint lock
			// serialises: what a batch costs more with projections.
			batches := b.N * ((len(recs) + size - 1) / size)
			b.ReportMetric(float64((on-off).Milliseconds())/float64(batches), "ms/batch-projection")
		})
	}
}

// commitInTurn commits recs in batches of size into a and b in turn and
// returns the time each took.
func commitInTurn(a, b *rig, recs []projection.Record, size int) (ta, tb time.Duration) {
	timed := func(r *rig, batch []projection.Record) time.Duration {
		start := time.Now()
		r.commit(batch...)
		return time.Since(start)
	}
	for i, n := 0, 0; i < len(recs); i, n = i+size, n+1 {
		batch := recs[i:min(i+size, len(recs))]
		if n%2 == 0 {
			ta += timed(a, batch)
			tb += timed(b, batch)
		} else {
			tb += timed(b, batch)
			ta += timed(a, batch)
		}
	}
	return ta, tb
}

// cpuTimes is the CPU time each backend of a database has used, by pid.
type cpuTimes map[int]time.Duration

// since is the CPU time used from then to t: a backend not in then started
// after it.
func (t cpuTimes) since(then cpuTimes) time.Duration {
	var d time.Duration
	for pid, c := range t {
		d += c - then[pid]
	}
	return d
}

// backendCPU reads the CPU time (user and system) of every backend
// connected to r's database from /proc; false when it cannot (a server on
// another machine, or not Linux).
func backendCPU(r *rig) (cpuTimes, bool) {
	rows, err := r.pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		r.tb.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		r.tb.Fatal(err)
	}
	t := cpuTimes{}
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil, false
		}
		// Fields after the command (which is in parentheses and may hold
		// spaces): utime and stime are the 12th and 13th, in clock ticks
		// (100 a second on Linux).
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			return nil, false
		}
		u, err1 := strconv.ParseInt(f[11], 10, 64)
		s, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, false
		}
		t[pid] = time.Duration(u+s) * 10 * time.Millisecond
	}
	return t, true
}
