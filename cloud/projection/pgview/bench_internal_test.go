package pgview

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
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

// BenchmarkCommitFollowed is BenchmarkCommitWithProjections with the
// projection folded behind the commits (mode=follow: a Follower, woken by
// every commit, folding what has arrived since its last fold) and, for
// comparison, in the commit (mode=commit), by workers goroutines at once,
// each committing its own edges' batches. The two ledgers take 1000
// records (or workers batches, when more) in turn, the first of the pair
// alternating; with a Follower a turn ends only when the Follower has
// folded it, so records/s is the throughput commits and fold sustain
// together, not the commits' alone (commits-on/off is theirs: the
// commits' own time while the follower folds beside them, without the
// wait for it). records/fold is how many records a fold transaction took
// on average. traffic=faults is the traffic of
// BenchmarkCommitWithProjections (projectiontest.Random: each record from
// a random edge, so 40% name a store of the other edge's tenant and are
// foreign_store anomalies, and a fifth of the sales name no known store);
// traffic=own is the same records each sent by the edge of the store it
// names (s1 by e1, s2 by e2), as tills send them.
func BenchmarkCommitFollowed(b *testing.B) {
	const records = 3000
	faults := projectiontest.Random(b, 5, records).Recs
	warm := projectiontest.Random(b, 6, 200).Recs
	type run struct{ size, workers int }
	runs := []run{{10, 1}, {100, 1}, {500, 1}, {100, 2}, {100, 4}}
	for _, traffic := range []string{"faults", "own"} {
		recs := faults
		if traffic == "own" {
			recs = ownStores(b, faults)
		}
		for _, mode := range []string{"commit", "follow"} {
			for _, rn := range runs {
				size, workers := rn.size, rn.workers
				b.Run(fmt.Sprintf("traffic=%s/mode=%s/batch=%d/workers=%d", traffic, mode, size, workers), func(b *testing.B) {
					var on, off, onCommits, cpuOn, cpuOff, clientOn, clientOff time.Duration
					var folds int64
					cpuKnown := true
					for range b.N {
						b.StopTimer()
						plain := newRig(b)
						plain.l = ledger.New(plain.pool, ledger.Options{})
						plain.addWorkerEdges(workers)
						folded := newRig(b)
						folded.addWorkerEdges(workers)
						var f *Follower
						if mode == "follow" {
							var stop func()
							f, stop = folded.follow()
							defer stop()
						}
						if _, err := commitChunks(plain, folded, f, warm, size, workers); err != nil {
							b.Fatal(err)
						}
						f0s := int64(0)
						if f != nil {
							f0s = f.Folds()
						}
						p0, ok0 := backendCPU(plain)
						f0, ok1 := backendCPU(folded)
						b.StartTimer()
						tt, err := commitChunks(plain, folded, f, recs, size, workers)
						b.StopTimer()
						if err != nil {
							b.Fatal(err)
						}
						p1, ok2 := backendCPU(plain)
						f1, ok3 := backendCPU(folded)
						b.StartTimer()
						if f != nil {
							folds += f.Folds() - f0s
						}
						off, on, onCommits = off+tt.a, on+tt.b, onCommits+tt.bCommits
						clientOff, clientOn = clientOff+tt.cpuA, clientOn+tt.cpuB
						cpuKnown = cpuKnown && ok0 && ok1 && ok2 && ok3
						cpuOff, cpuOn = cpuOff+p1.since(p0), cpuOn+f1.since(f0)
					}
					batches := b.N * ((len(recs) + size - 1) / size)
					b.ReportMetric(off.Seconds()/on.Seconds(), "on/off")
					if cpuKnown && cpuOn > 0 {
						b.ReportMetric(cpuOff.Seconds()/cpuOn.Seconds(), "server-cpu-off/on")
						b.ReportMetric(float64((cpuOn-cpuOff).Microseconds())/1000/float64(batches), "server-cpu-ms/batch-projection")
						// All the CPU the commits (and the fold) cost, the
						// benchmark's process and the server's backends:
						// the share a machine whose CPU is the bottleneck
						// gives, whatever else runs on it.
						b.ReportMetric((cpuOff+clientOff).Seconds()/(cpuOn+clientOn).Seconds(), "cpu-off/on")
					}
					b.ReportMetric(float64(b.N*len(recs))/on.Seconds(), "records/s")
					b.ReportMetric(float64(b.N*len(recs))/off.Seconds(), "records/s-without")
					b.ReportMetric(float64((on-off).Milliseconds())/float64(batches), "ms/batch-projection")
					if folds > 0 {
						b.ReportMetric(float64(b.N*len(recs))/float64(folds), "records/fold")
						// The commits' own time, while the follower folds
						// beside them: the commit throughput, apart from
						// the wait for the fold to catch up.
						b.ReportMetric(off.Seconds()/onCommits.Seconds(), "commits-on/off")
					}
				})
			}
		}
	}
}

// ownStores returns recs with each record of store s1 sent by e1 and of s2
// by e2 (the rest as they were).
func ownStores(tb testing.TB, recs []projection.Record) []projection.Record {
	out := make([]projection.Record, len(recs))
	for i, r := range recs {
		var h struct {
			Store string `cbor:"store"`
		}
		if err := cbor.Unmarshal(r.Body, &h); err != nil {
			tb.Fatal(err)
		}
		switch h.Store {
		case "s1":
			r.Edge = "e1"
		case "s2":
			r.Edge = "e2"
		}
		out[i] = r
	}
	return out
}

// commitChunks commits recs into a and b, in turns of 1000 records (or
// workers batches, when more), the first of each pair alternating, each
// turn by workers goroutines that commit batches of size each to their
// own edges; it returns the time each ledger took. When f is not nil it
// folds b, and b's turn lasts until f has folded every record of it.
func commitChunks(a, b *rig, f *Follower, recs []projection.Record, size, workers int) (t turns, err error) {
	chunk := max(1000, size*workers)
	timedA := func(part []projection.Record) error {
		c0 := processCPU()
		d, err := a.commitWorkers(part, size, workers, nil)
		t.a, t.cpuA = t.a+d, t.cpuA+processCPU()-c0
		return err
	}
	timedB := func(part []projection.Record) error {
		c0 := processCPU()
		d, dc, err := b.commitWorkersTimed(part, size, workers, f)
		t.b, t.bCommits, t.cpuB = t.b+d, t.bCommits+dc, t.cpuB+processCPU()-c0
		return err
	}
	for i, n := 0, 0; i < len(recs) && err == nil; i, n = i+chunk, n+1 {
		part := recs[i:min(i+chunk, len(recs))]
		if n%2 == 0 {
			if err = timedA(part); err == nil {
				err = timedB(part)
			}
		} else {
			if err = timedB(part); err == nil {
				err = timedA(part)
			}
		}
	}
	return t, err
}

// turns are what commitChunks measured: the wall time of a's and b's
// turns, of b's commits alone, and the CPU time this process used in
// each one's turns.
type turns struct {
	a, b, bCommits, cpuA, cpuB time.Duration
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// commitWorkers commits recs in batches of size by workers goroutines
// (batch k by worker k mod workers, to that worker's edges) and, when f
// is not nil, waits until f has folded the last position committed. It
// returns how long that took.
func (r *rig) commitWorkers(recs []projection.Record, size, workers int, f *Follower) (time.Duration, error) {
	d, _, err := r.commitWorkersTimed(recs, size, workers, f)
	return d, err
}

// commitWorkersTimed is commitWorkers, and also returns how long the
// commits alone took (without the wait for f).
func (r *rig) commitWorkersTimed(recs []projection.Record, size, workers int, f *Follower) (total, commits time.Duration, err error) {
	var batches [][]projection.Record
	for i := 0; i < len(recs); i += size {
		batches = append(batches, recs[i:min(i+size, len(recs))])
	}
	start := time.Now()
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for k := w; k < len(batches); k += workers {
				batch := make([]projection.Record, len(batches[k]))
				for j, rec := range batches[k] {
					rec.Edge = workerEdge(rec.Edge, w)
					batch[j] = rec
				}
				if err := r.commitErr(batch...); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		err = errors.Join(err, <-errs)
	}
	commits = time.Since(start)
	if err != nil || f == nil {
		return commits, commits, err
	}
	top, err := ledger.LastPos(context.Background(), r.pool)
	if err != nil {
		return 0, 0, err
	}
	for deadline := time.Now().Add(time.Minute); f.Through() < top; time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("the follower folded through position %d, not %d, in a minute", f.Through(), top)
		}
	}
	return time.Since(start), commits, nil
}

// workerEdge is the edge worker w commits edge's records as: worker 0 the
// edge itself, the others a copy of it of the same tenant
// (addWorkerEdges).
func workerEdge(edge string, w int) string {
	if w == 0 {
		return edge
	}
	return fmt.Sprintf("%s-w%d", edge, w)
}

// addWorkerEdges adds, for workers 1 to workers-1, a copy of e1 and e2 of
// the same tenants.
func (r *rig) addWorkerEdges(workers int) {
	r.tb.Helper()
	for w := 1; w < workers; w++ {
		for e, t := range map[string]string{"e1": "t1", "e2": "t2"} {
			name := workerEdge(e, w)
			s := protocoltest.NewSigner(r.tb)
			if _, err := r.l.AddEdge(context.Background(), name, s.Public()); err != nil {
				r.tb.Fatal(err)
			}
			r.chains[name] = protocoltest.NewStream(r.tb, name, s)
			r.exec(`UPDATE edges SET tenant = $2 WHERE id = $1`, name, t)
		}
	}
}

// follow makes r's ledger commit without folding and folds it behind the
// commits with a running Follower, woken by every commit; stop ends it.
func (r *rig) follow() (f *Follower, stop func()) {
	f = NewFollower(r.p, nil, r.pool)
	r.l = ledger.New(r.pool, ledger.Options{Committed: f.Wake})
	f.Ledger = r.l
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	return f, func() {
		cancel()
		if err := <-done; err != nil {
			r.tb.Error(err)
		}
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
