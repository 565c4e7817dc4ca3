package load

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Report is what a load run measured and found.
type Report struct {
	Config  ReportConfig `json:"config"`
	Started time.Time    `json:"started"`
	OK      bool         `json:"ok"`
	// Problems say what failed: the check, edges not drained, quarantine,
	// protocol violations by the cloud.
	Problems []string `json:"problems,omitempty"`

	ConnectSpan float64 `json:"connect_span_s"` // from the first edge's first connect to the last's
	Busy        float64 `json:"busy_s"`         // from the first connect to the last edge drained
	Records     int64   `json:"records"`        // receipted
	// CommitsPerSec is records receipted per second over Busy; Sustained
	// is records receipted per second during the traffic window (connect
	// spread plus duration), when the run had live traffic.
	CommitsPerSec float64 `json:"commits_per_s"`
	Sustained     float64 `json:"sustained_per_s,omitempty"`

	Segments       int64          `json:"segments"` // published, every copy
	Resent         int64          `json:"resent"`   // segments that carried records published before
	Nacks          map[string]int `json:"nacks"`
	StaleNacks     int            `json:"stale_nacks"`     // about segments no longer in flight; ignored
	StaleReceipts  int            `json:"stale_receipts"`  // below the watermark, came late; ignored
	Timeouts       int64          `json:"ack_timeouts"`    // no receipt for AckTimeout with segments in flight (then a hello)
	AckWaits       int64          `json:"ack_waits"`       // of the ack timeouts, those whose hello found the cloud moving (nothing resent)
	DuplicateWaits int64          `json:"duplicate_waits"` // of the ack timeouts, those stuck inside the broker's duplicate window (nothing resent)
	DuplicateAcks  int64          `json:"duplicate_acks"`  // publishes the broker dropped as duplicates (NATS)
	HelloTimeouts  int64          `json:"hello_timeouts"`  // hellos unanswered for HelloTimeout (then a new session)
	Reconnects     int            `json:"reconnects"`      // sessions after an edge's first
	DialFailures   int64          `json:"dial_failures"`
	NeverConnected int            `json:"never_connected"` // edges that had no session in the whole run
	Quarantined    int            `json:"quarantined"`
	// SessionEnds counts why sessions ended before their edge was done,
	// and DialErrors why connects failed.
	SessionEnds  map[string]int `json:"session_ends,omitempty"`
	DialErrors   map[string]int `json:"dial_errors,omitempty"`
	ResendShare  float64        `json:"resend_share"` // (resent + nacks) / distinct segments
	Latency      Percentiles    `json:"latency_ms"`   // every receipt's latency
	EdgeP99      Spread         `json:"edge_p99_ms"`  // each edge's p99 receipt latency
	Drain        Spread         `json:"drain_s"`      // each edge's time from first connect to drained
	Edges        []EdgeFigures  `json:"edges,omitempty"`
	Connect      Spread         `json:"connect_s"` // each edge's time from its scheduled first connect to its first session
	CloudPeakRSS uint64         `json:"cloud_peak_rss_bytes,omitempty"`
	// CPU seconds used during the load by the cloud process (when known)
	// and by this load generator, and the cloud's per 1,000 records.
	CloudCPU     float64 `json:"cloud_cpu_s,omitempty"`
	LoadCPU      float64 `json:"load_cpu_s"`
	CloudCPUPerK float64 `json:"cloud_cpu_ms_per_1000_records,omitempty"`
	// DatabaseCPU is the Postgres server's CPU seconds during the load,
	// when the run started it, and DatabaseCPUPerK per 1,000 records.
	DatabaseCPU     float64 `json:"database_cpu_s,omitempty"`
	DatabaseCPUPerK float64 `json:"database_cpu_ms_per_1000_records,omitempty"`
	// Ceiling is the COPY ceiling measured before the load, CeilingAfter
	// the one measured after; Ratio is to their mean.
	Ceiling      *Ceiling     `json:"ceiling,omitempty"`
	CeilingAfter *Ceiling     `json:"ceiling_after,omitempty"`
	Ratio        *Ratios      `json:"ratio_to_copy,omitempty"`
	Check        *CheckResult `json:"check,omitempty"`
	nackCodes    map[protocol.NackCode]int
}

// ReportConfig is the run's shape, as reported.
type ReportConfig struct {
	Transport      string  `json:"transport"`
	Edges          int     `json:"edges"`
	Backlog        int     `json:"backlog"`
	Rate           float64 `json:"rate"`
	Saturate       bool    `json:"saturate"`
	Duration       float64 `json:"duration_s"`
	ConnectWithin  float64 `json:"connect_within_s"`
	SegmentRecords int     `json:"segment_records"`
	SegmentBytes   int     `json:"segment_bytes"`
	Window         int     `json:"window"`
	Workers        int     `json:"workers"`
}

func reportConfig(c *Config) ReportConfig {
	return ReportConfig{Transport: c.Transport, Edges: c.Edges, Backlog: c.Backlog, Rate: c.Rate, Saturate: c.Saturate,
		Duration: c.Duration.Seconds(), ConnectWithin: c.ConnectWithin.Seconds(), SegmentRecords: c.SegmentRecords,
		SegmentBytes: c.SegmentBytes, Window: c.Window, Workers: c.Workers}
}

// Ratios are the run's rates over the COPY ceiling measured in it.
type Ratios struct {
	// Commits is CommitsPerSec over one COPY stream's rows/s, and
	// CommitsSameWorkers over Workers concurrent COPY streams'.
	Commits            float64 `json:"commits"`
	CommitsSameWorkers float64 `json:"commits_same_workers"`
	Sustained          float64 `json:"sustained,omitempty"`
}

// Percentiles of a latency distribution, in milliseconds.
type Percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Spread is how one per-edge figure varies across edges: the median
// edge's, the worst edge's, and worst over median.
type Spread struct {
	Median float64 `json:"median"`
	P99    float64 `json:"p99"`
	Max    float64 `json:"max"`
	Ratio  float64 `json:"max_over_median"`
	Worst  string  `json:"worst,omitempty"` // the edge with Max
}

// EdgeFigures are one edge's figures (in the JSON report).
type EdgeFigures struct {
	Edge     string      `json:"edge"`
	Records  uint64      `json:"records"`
	Latency  Percentiles `json:"latency_ms"`
	Drain    float64     `json:"drain_s"`
	Segments int         `json:"segments"`
	Resent   int         `json:"resent"`
	Nacks    int         `json:"nacks"`
	Sessions int         `json:"sessions"`
	Errors   []string    `json:"errors,omitempty"`
}

func percentiles(v []float32) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	at := func(q float64) float64 { return float64(s[min(len(s)-1, int(q*float64(len(s))))]) }
	return Percentiles{N: len(s), P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: float64(s[len(s)-1])}
}

func spread(vals []float64, names []string) Spread {
	if len(vals) == 0 {
		return Spread{}
	}
	idx := make([]int, len(vals))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return vals[idx[a]] < vals[idx[b]] })
	med := vals[idx[len(idx)/2]]
	worst := idx[len(idx)-1]
	sp := Spread{Median: med, P99: vals[idx[min(len(idx)-1, int(0.99*float64(len(idx))))]], Max: vals[worst], Worst: names[worst]}
	if med > 0 {
		sp.Ratio = sp.Max / med
	}
	return sp
}

// report fills rep from the edges' figures.
func (r *run) report(rep *Report, start, trafficEnd, end time.Time, atTrafficEnd int64) {
	var all []float32
	var p99s, drains []float64
	var names, drainNames, connNames []string
	var conns []float64
	first, lastConnect, lastDrain := time.Time{}, time.Time{}, time.Time{}
	rep.nackCodes = map[protocol.NackCode]int{}
	for _, e := range r.edges {
		st := &e.st
		all = append(all, st.latencies...)
		p := percentiles(st.latencies)
		if p.N > 0 {
			p99s = append(p99s, p.P99)
			names = append(names, e.id)
		}
		f := EdgeFigures{Edge: e.id, Records: e.base, Latency: p, Segments: st.segments, Resent: st.resent,
			Sessions: st.sessions, Errors: st.errors}
		for c, n := range st.nacks {
			rep.nackCodes[c] += n
			f.Nacks += n
		}
		rep.StaleNacks += st.staleNacks
		rep.StaleReceipts += st.staleReceipts
		for k, n := range st.ends {
			if rep.SessionEnds == nil {
				rep.SessionEnds = map[string]int{}
			}
			rep.SessionEnds[k] += n
		}
		for k, n := range st.dialErrors {
			if rep.DialErrors == nil {
				rep.DialErrors = map[string]int{}
			}
			rep.DialErrors[k] += n
		}
		rep.Reconnects += max(st.sessions-1, 0)
		if !st.firstConnect.IsZero() {
			if first.IsZero() || st.firstConnect.Before(first) {
				first = st.firstConnect
			}
			lastConnect = maxTime(lastConnect, st.firstConnect)
			conns = append(conns, st.firstConnect.Sub(st.scheduled).Seconds())
			connNames = append(connNames, e.id)
		}
		if st.firstConnect.IsZero() {
			rep.NeverConnected++
		}
		if !st.drained.IsZero() && !st.firstConnect.IsZero() {
			f.Drain = st.drained.Sub(st.firstConnect).Seconds()
			drains = append(drains, f.Drain)
			drainNames = append(drainNames, e.id)
			lastDrain = maxTime(lastDrain, st.drained)
		}
		for _, msg := range st.errors {
			rep.Problems = append(rep.Problems, fmt.Sprintf("edge %s: %s", e.id, msg))
		}
		rep.Edges = append(rep.Edges, f)
	}
	if len(rep.Problems) > 20 {
		n := len(rep.Problems)
		rep.Problems = append(rep.Problems[:20], fmt.Sprintf("… and %d more protocol violations", n-20))
	}
	rep.Nacks = map[string]int{}
	for c, n := range rep.nackCodes {
		rep.Nacks[c.String()] = n
	}
	if first.IsZero() {
		first = start
	}
	if lastDrain.IsZero() || r.c.drained.Load() < int64(len(r.edges)) {
		lastDrain = end // some edges never drained: busy until the run gave up
	}
	rep.ConnectSpan = lastConnect.Sub(first).Seconds()
	rep.Busy = lastDrain.Sub(first).Seconds()
	rep.Records = r.c.committed.Load()
	if rep.Busy > 0 {
		rep.CommitsPerSec = float64(rep.Records) / rep.Busy
	}
	if atTrafficEnd >= 0 && (r.cfg.Rate > 0 || r.cfg.Saturate) {
		if w := trafficEnd.Sub(first).Seconds(); w > 0 {
			rep.Sustained = float64(atTrafficEnd) / w
		}
	}
	rep.Segments = r.c.segments.Load()
	rep.Resent = r.c.resent.Load()
	rep.Timeouts = r.c.timeouts.Load()
	rep.HelloTimeouts = r.c.helloTimeouts.Load()
	rep.AckWaits = r.c.ackWaits.Load()
	rep.DuplicateWaits = r.c.dupWaits.Load()
	rep.DuplicateAcks = r.c.dupAcks.Load()
	rep.DialFailures = r.c.dialFailures.Load()
	nacks := 0
	for _, n := range rep.Nacks {
		nacks += n
	}
	if distinct := rep.Segments - rep.Resent; distinct > 0 {
		rep.ResendShare = float64(rep.Resent+int64(nacks)) / float64(distinct)
	}
	rep.Latency = percentiles(all)
	rep.EdgeP99 = spread(p99s, names)
	rep.Drain = spread(drains, drainNames)
	rep.Connect = spread(conns, connNames)
	if rep.Records > 0 && rep.CloudCPU > 0 {
		rep.CloudCPUPerK = rep.CloudCPU * 1000 / float64(rep.Records) * 1000
	}
	if rep.Records > 0 && rep.DatabaseCPU > 0 {
		rep.DatabaseCPUPerK = rep.DatabaseCPU * 1000 / float64(rep.Records) * 1000
	}
	rep.ratios()
}

// ratios sets Ratio from the ceilings measured.
func (rep *Report) ratios() {
	c := rep.Ceiling
	if c == nil || c.OneStream <= 0 {
		return
	}
	one, same := c.OneStream, c.SameWorkers
	if a := rep.CeilingAfter; a != nil && a.OneStream > 0 {
		one, same = (one+a.OneStream)/2, (same+a.SameWorkers)/2
	}
	rep.Ratio = &Ratios{Commits: rep.CommitsPerSec / one}
	if same > 0 {
		rep.Ratio.CommitsSameWorkers = rep.CommitsPerSec / same
	}
	if rep.Sustained > 0 {
		rep.Ratio.Sustained = rep.Sustained / one
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Save writes the report as JSON.
func (rep *Report) Save(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Print writes the report's figures for a person.
func (rep *Report) Print(w io.Writer) {
	c := rep.Config
	fmt.Fprintf(w, "load report: %d edges over %s", c.Edges, c.Transport)
	if c.Backlog > 0 {
		fmt.Fprintf(w, ", backlog %d each, connecting within %.0fs", c.Backlog, c.ConnectWithin)
	}
	if c.Rate > 0 {
		fmt.Fprintf(w, ", %.3g events/s each for %.0fs", c.Rate, c.Duration)
	}
	if c.Saturate {
		fmt.Fprintf(w, ", saturating for %.0fs", c.Duration)
	}
	fmt.Fprintf(w, " (window %d, segments ≤ %d records, cloud workers %d)\n", c.Window, c.SegmentRecords, c.Workers)
	fmt.Fprintf(w, "  records receipted  %d in %.1fs: %.0f/s", rep.Records, rep.Busy, rep.CommitsPerSec)
	if rep.Sustained > 0 {
		fmt.Fprintf(w, "; sustained during the traffic %.0f/s", rep.Sustained)
	}
	fmt.Fprintln(w)
	if ce := rep.Ceiling; ce != nil {
		fmt.Fprintf(w, "  COPY ceiling       before: %.0f rows/s (1 stream), %.0f rows/s (%d streams), %d rows", ce.OneStream, ce.SameWorkers, ce.Workers, ce.Rows)
		if a := rep.CeilingAfter; a != nil {
			fmt.Fprintf(w, "; after: %.0f, %.0f", a.OneStream, a.SameWorkers)
		}
		fmt.Fprintln(w)
	}
	if ra := rep.Ratio; ra != nil {
		fmt.Fprintf(w, "  ratio to COPY      %.2f (1 stream), %.2f (same workers), to the mean ceiling", ra.Commits, ra.CommitsSameWorkers)
		if ra.Sustained > 0 {
			fmt.Fprintf(w, "; sustained %.2f", ra.Sustained)
		}
		fmt.Fprintln(w)
	}
	l := rep.Latency
	fmt.Fprintf(w, "  receipt latency    p50 %.0fms p90 %.0fms p99 %.0fms max %.0fms (%d receipts)\n", l.P50, l.P90, l.P99, l.Max, l.N)
	fmt.Fprintf(w, "  per-edge p99       median edge %.0fms, worst %.0fms (%s): %.2f × median\n", rep.EdgeP99.Median, rep.EdgeP99.Max, rep.EdgeP99.Worst, rep.EdgeP99.Ratio)
	fmt.Fprintf(w, "  drain per edge     median %.1fs, worst %.1fs (%s): %.2f × median; connects spread over %.1fs\n", rep.Drain.Median, rep.Drain.Max, rep.Drain.Worst, rep.Drain.Ratio, rep.ConnectSpan)
	var nk []string
	for k, v := range rep.Nacks {
		nk = append(nk, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(nk)
	fmt.Fprintf(w, "  segments           %d published, %d resent, nacks [%s] (%d stale), %d ack timeouts (%d of them waited: the cloud moving; %d inside the duplicate window), %d late receipts, %d dropped by the broker as duplicates: resends and nacks %.2f%% of segments\n",
		rep.Segments, rep.Resent, strings.Join(nk, ", "), rep.StaleNacks, rep.Timeouts, rep.AckWaits, rep.DuplicateWaits, rep.StaleReceipts, rep.DuplicateAcks, 100*rep.ResendShare)
	fmt.Fprintf(w, "  connects           each edge's first session after its turn: median %.2fs, worst %.2fs; %d reconnects (%d after a hello unanswered), %d failed connects, %d edges never connected\n",
		rep.Connect.Median, rep.Connect.Max, rep.Reconnects, rep.HelloTimeouts, rep.DialFailures, rep.NeverConnected)
	if len(rep.SessionEnds) > 0 {
		fmt.Fprintf(w, "  sessions ended     %s\n", top(rep.SessionEnds))
	}
	if len(rep.DialErrors) > 0 {
		fmt.Fprintf(w, "  connects failed    %s\n", top(rep.DialErrors))
	}
	fmt.Fprintf(w, "  quarantined        %d\n", rep.Quarantined)
	if rep.CloudCPU > 0 {
		fmt.Fprintf(w, "  CPU                cloud %.1fs (%.0f ms per 1,000 records)", rep.CloudCPU, rep.CloudCPUPerK)
		if rep.DatabaseCPU > 0 {
			fmt.Fprintf(w, ", Postgres %.1fs (%.0f ms per 1,000 records)", rep.DatabaseCPU, rep.DatabaseCPUPerK)
		}
		fmt.Fprintf(w, ", load generator %.1fs\n", rep.LoadCPU)
	}
	if rep.CloudPeakRSS > 0 {
		fmt.Fprintf(w, "  cloud peak RSS     %.1f MiB\n", float64(rep.CloudPeakRSS)/(1<<20))
	}
	if ch := rep.Check; ch != nil {
		fmt.Fprintf(w, "  check              %d streams, %d records read back: %s\n", ch.Streams, ch.Records, okText(ch.OK))
	}
	if rep.OK {
		fmt.Fprintln(w, "  verdict            PASS")
		return
	}
	fmt.Fprintln(w, "  verdict            FAIL")
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "    - %s\n", p)
	}
}

func okText(ok bool) string {
	if ok {
		return "gapless, complete, no doubles, chains end in the edges' heads"
	}
	return "FAILED"
}

// top formats the three most frequent of counts.
func top(counts map[string]int) string {
	type kv struct {
		k string
		n int
	}
	var all []kv
	for k, n := range counts {
		all = append(all, kv{k, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n || all[i].n == all[j].n && all[i].k < all[j].k })
	var parts []string
	for i, x := range all {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %d more kinds", len(all)-3))
			break
		}
		parts = append(parts, fmt.Sprintf("%d× %s", x.n, x.k))
	}
	return strings.Join(parts, "; ")
}
