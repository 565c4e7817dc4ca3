// Package verify is the simulator's end-to-end verifier: it holds the
// cloud's ledger, read back over the cloud's HTTP API (raw record bytes and
// the edges' signed checkpoints), against the oracle, the simulator's own
// record of what its devices sent and which events the edges acknowledged.
//
// Check finds, and names by kind:
//
//   - lost: an acknowledged event that is not in the ledger;
//   - duplicate: an event (device, id) in the ledger more than once;
//   - duplicate_row: a stream's seq stored more than once;
//   - gap: seqs missing from a stream, below its highest stored seq or
//     its watermark;
//   - watermark: rows above the stream's watermark;
//   - signature: a checkpoint that does not verify with the edge's keys;
//   - chain: records that do not chain to each other or to the signed
//     checkpoint heads (protocol.VerifyChain), such as altered bytes;
//   - uncovered: records above the last checkpoint, which no signature
//     covers;
//   - unexpected: an event in the ledger that no device sent;
//   - altered: an event whose type, device clock or body differs from what
//     was sent, or that came in through another edge;
//   - ledger_shed: a ledger-class record replaced by a tombstone (only
//     telemetry may be shed);
//   - rejected: intake.rejected records, refusals of what the devices sent
//     (the simulator sends only valid events);
//   - z_report: a till.closed whose totals differ from the sales, returns
//     and voids of that till and business day in the ledger;
//   - report: a figure of the cloud's reports (GET /v1/reports/*) that
//     differs from what the ledger's events make it (CheckReports).
//
// Any of them makes the verdict fail. Shed telemetry (tombstones of
// acknowledged readings) is present, not lost, and is counted. Events the
// devices sent but saw no acknowledgement for may or may not be in the
// ledger (the acknowledgement may have been lost in a crash); they are
// counted, not judged.
//
// Check is pure: it takes the ledger and the oracle as data, so that it is
// tested with ledgers forged in memory. Client reads a ledger from the API.
package verify

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
	"github.com/outpost-edge/outpost/simulator/oracle"
)

// Ledger is the cloud's ledger as the verifier reads it.
type Ledger struct {
	Streams []Stream
	// Keys are each edge's public keys by key id, revoked ones included:
	// a checkpoint signed before a revocation still names its key.
	Keys map[string]protocol.KeyMap
	// Earlier counts the streams left out as earlier runs' (Client.Since).
	Earlier int
}

// Stream is one stream's stored rows and checkpoints.
type Stream struct {
	Stream      protocol.Stream
	HWM         uint64
	Rows        []Row
	Checkpoints []Checkpoint
}

// Row is one stored ledger row.
type Row struct {
	Seq         uint64
	Pos         int64
	CommittedAt time.Time
	Raw         []byte
}

// Checkpoint is one stored, signed checkpoint (COSE_Sign1).
type Checkpoint struct {
	Seq       uint64
	Signature []byte
}

// Kind names a discrepancy.
type Kind string

const (
	Lost         Kind = "lost"
	Duplicate    Kind = "duplicate"
	DuplicateRow Kind = "duplicate_row"
	Gap          Kind = "gap"
	Watermark    Kind = "watermark"
	Signature    Kind = "signature"
	Chain        Kind = "chain"
	Uncovered    Kind = "uncovered"
	Unexpected   Kind = "unexpected"
	Altered      Kind = "altered"
	LedgerShed   Kind = "ledger_shed"
	Rejected     Kind = "rejected"
	ZReport      Kind = "z_report"
	ReportFigure Kind = "report"
)

// Kinds lists every kind, in the order a verdict prints them.
var Kinds = []Kind{Lost, Duplicate, DuplicateRow, Gap, Watermark, Signature, Chain, Uncovered, Unexpected, Altered, LedgerShed, Rejected, ZReport, ReportFigure}

// Discrepancy is one thing the verifier found wrong.
type Discrepancy struct {
	Kind   Kind   `json:"kind"`
	Stream string `json:"stream,omitempty"` // edge/epoch
	Seq    uint64 `json:"seq,omitempty"`
	Device string `json:"device,omitempty"`
	ID     string `json:"id,omitempty"`
	Detail string `json:"detail"`
}

func (d Discrepancy) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:", d.Kind)
	if d.Stream != "" {
		fmt.Fprintf(&b, " stream %s", d.Stream)
		if d.Seq != 0 {
			fmt.Fprintf(&b, " seq %d", d.Seq)
		}
	}
	if d.Device != "" {
		fmt.Fprintf(&b, " event %s/%s", d.Device, d.ID)
	}
	fmt.Fprintf(&b, ": %s", d.Detail)
	return b.String()
}

// Latency summarizes durations. In JSON the durations are milliseconds.
type Latency struct {
	N   int
	P50 time.Duration
	P95 time.Duration
	P99 time.Duration
	Max time.Duration
}

type latencyJSON struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// Millis returns d in milliseconds, to the microsecond.
func Millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fromMillis(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// MarshalJSON writes the durations as milliseconds.
func (l Latency) MarshalJSON() ([]byte, error) {
	return json.Marshal(latencyJSON{N: l.N, P50: Millis(l.P50), P95: Millis(l.P95), P99: Millis(l.P99), Max: Millis(l.Max)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (l *Latency) UnmarshalJSON(b []byte) error {
	var j latencyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*l = Latency{N: j.N, P50: fromMillis(j.P50), P95: fromMillis(j.P95), P99: fromMillis(j.P99), Max: fromMillis(j.Max)}
	return nil
}

// Percentiles summarizes ds (nearest rank); it sorts ds.
func Percentiles(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[max(0, min(i, len(ds)-1))]
	}
	return Latency{N: len(ds), P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: ds[len(ds)-1]}
}

func (l Latency) String() string {
	if l.N == 0 {
		return "no samples"
	}
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	if l.Max < 10*time.Millisecond {
		r = func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
	}
	return fmt.Sprintf("p50 %s  p95 %s  p99 %s  max %s  (%d events)", r(l.P50), r(l.P95), r(l.P99), r(l.Max), l.N)
}

// Verdict is what Check found.
type Verdict struct {
	OK          bool `json:"ok"`
	Streams     int  `json:"streams"`
	Records     int  `json:"records"`     // stored rows
	Checkpoints int  `json:"checkpoints"` // that verified
	Events      int  `json:"events"`      // distinct device events in the ledger

	Sent       int `json:"sent"`        // distinct events the devices sent
	Acked      int `json:"acked"`       // of them, acknowledged by an edge
	Present    int `json:"present"`     // acknowledged events found exactly once
	Unacked    int `json:"unacked"`     // sent, not acknowledged, and found anyway
	Shed       int `json:"shed"`        // tombstones of shed telemetry in the ledger
	ShedAcked  int `json:"shed_acked"`  // of the acknowledged events, how many are tombstones
	TillsExact int `json:"tills_exact"` // Z reports that match the ledger
	// EdgeEvents counts the edges' own records (device _edge: the
	// updater's ota.* events) by type. No device sent them, so they are
	// not checked against the oracle, and Events leaves them out.
	EdgeEvents map[string]int `json:"edge_events,omitempty"`

	// Reports is the reports check (CheckReports), when it ran; a
	// mismatch fails the verdict. ReportsSkipped says why it did not.
	Reports        *ReportsVerdict `json:"reports,omitempty"`
	ReportsSkipped string          `json:"reports_skipped,omitempty"`

	Counts        map[Kind]int  `json:"counts"`        // discrepancies by kind
	Discrepancies []Discrepancy `json:"discrepancies"` // the first few of each kind

	// Latency is from a device's first send of an event to its commit in
	// the cloud, over the acknowledged events found.
	Latency     Latency   `json:"latency"`
	FirstCommit time.Time `json:"first_commit,omitzero"`
	LastCommit  time.Time `json:"last_commit,omitzero"`

	commits map[string][]time.Time // stream -> commit time by seq-1
}

// CommittedAt returns when seq of stream (edge/epoch) was committed.
func (v *Verdict) CommittedAt(stream protocol.Stream, seq uint64) (time.Time, bool) {
	ts := v.commits[stream.String()]
	if seq == 0 || seq > uint64(len(ts)) || ts[seq-1].IsZero() {
		return time.Time{}, false
	}
	return ts[seq-1], true
}

// Failures returns the number of discrepancies.
func (v *Verdict) Failures() int {
	n := 0
	for _, c := range v.Counts {
		n += c
	}
	return n
}

// Options tune Check.
type Options struct {
	// Examples is how many discrepancies of each kind the verdict lists
	// (default 5).
	Examples int
}

type occurrence struct {
	stream string
	seq    uint64
	at     time.Time
	rec    protocol.Record
}

type checker struct {
	v        *Verdict
	examples int
	byKind   map[Kind]int
}

func (c *checker) report(d Discrepancy) {
	c.v.Counts[d.Kind]++
	if c.byKind[d.Kind] < c.examples {
		c.byKind[d.Kind]++
		c.v.Discrepancies = append(c.v.Discrepancies, d)
	}
}

// Check verifies l against the oracle's entries.
func Check(l *Ledger, sent []oracle.Entry, o Options) *Verdict {
	if o.Examples <= 0 {
		o.Examples = 5
	}
	v := &Verdict{Counts: map[Kind]int{}, Discrepancies: []Discrepancy{}, commits: map[string][]time.Time{}}
	c := &checker{v: v, examples: o.Examples, byKind: map[Kind]int{}}
	occ := map[oracle.Key][]occurrence{}
	var zs []occurrence
	sales := pos.TillTotals{}
	dupTxn := txnSet{}

	streams := slices.Clone(l.Streams)
	sort.Slice(streams, func(i, j int) bool { return streams[i].Stream.String() < streams[j].Stream.String() })
	for _, s := range streams {
		v.Streams++
		recs := c.stream(s, l.Keys[s.Stream.Edge])
		for _, o := range recs {
			k := oracle.Key{Device: o.rec.Device, ID: o.rec.ID}
			occ[k] = append(occ[k], o)
			if o.rec.Type == pos.TypeTillClosed && !o.rec.IsTombstone() {
				zs = append(zs, o)
			}
			if !o.rec.IsTombstone() && !dupTxn.seen(o.rec.Type, o.rec.Body) {
				sales.Add(o.rec.Type, o.rec.Body)
			}
			if v.FirstCommit.IsZero() || o.at.Before(v.FirstCommit) {
				v.FirstCommit = o.at
			}
			if o.at.After(v.LastCommit) {
				v.LastCommit = o.at
			}
		}
	}

	known := make(map[oracle.Key]*oracle.Entry, len(sent))
	var lats []time.Duration
	for i := range sent {
		e := &sent[i]
		k := oracle.Key{Device: e.Device, ID: e.ID}
		known[k] = e
		v.Sent++
		found := occ[k]
		if e.IsAcked() {
			v.Acked++
		}
		switch {
		case len(found) == 0 && e.IsAcked():
			c.report(Discrepancy{Kind: Lost, Device: e.Device, ID: e.ID,
				Detail: fmt.Sprintf("%s acknowledged by edge %s at %s is not in the ledger", e.Type, e.Edge, e.Acked.Format(time.RFC3339Nano))})
			continue
		case len(found) == 0:
			continue
		case !e.IsAcked():
			v.Unacked++
		}
		first := found[0]
		for _, f := range found[1:] {
			c.report(Discrepancy{Kind: Duplicate, Stream: f.stream, Seq: f.seq, Device: e.Device, ID: e.ID,
				Detail: fmt.Sprintf("also at %s seq %d", first.stream, first.seq)})
		}
		if e.IsAcked() && len(found) == 1 {
			v.Present++
			lats = append(lats, first.at.Sub(e.FirstSent))
		}
		for _, f := range found {
			c.compare(e, f)
			if f.rec.IsTombstone() && e.IsAcked() {
				v.ShedAcked++
			}
		}
	}
	for k, found := range occ {
		if _, ok := known[k]; ok {
			continue
		}
		if k.Device == protocol.EdgeDevice {
			if v.EdgeEvents == nil {
				v.EdgeEvents = map[string]int{}
			}
			// Every edge has its own _edge: an id is one edge's. Its outbox
			// stores an id once, so a spooled event handed over twice must
			// not be doubled either.
			first := map[string]occurrence{}
			for _, f := range found {
				v.EdgeEvents[f.rec.Type]++
				if o, ok := first[f.rec.Edge]; ok {
					c.report(Discrepancy{Kind: Duplicate, Stream: f.stream, Seq: f.seq, Device: k.Device, ID: k.ID,
						Detail: fmt.Sprintf("the edge's own %s also at %s seq %d", f.rec.Type, o.stream, o.seq)})
					continue
				}
				first[f.rec.Edge] = f
			}
			delete(occ, k)
			continue
		}
		for _, f := range found {
			kind, detail := Unexpected, fmt.Sprintf("%s that no device sent", f.rec.Type)
			if f.rec.Type == protocol.TypeIntakeRejected {
				kind, detail = Rejected, "the edge refused a payload of this device: "+rejection(f.rec)
			}
			if len(sent) == 0 && kind == Unexpected {
				continue // no oracle: only the ledger's own consistency is checked
			}
			c.report(Discrepancy{Kind: kind, Stream: f.stream, Seq: f.seq, Device: k.Device, ID: k.ID, Detail: detail})
		}
	}
	for _, z := range zs {
		c.zReport(z, sales)
	}
	v.Events = len(occ)
	v.Latency = Percentiles(lats)
	v.OK = v.Failures() == 0
	slices.SortStableFunc(v.Discrepancies, func(a, b Discrepancy) int {
		return cmp.Compare(slices.Index(Kinds, a.Kind), slices.Index(Kinds, b.Kind))
	})
	return v
}

// compare checks a stored event against what its device sent.
func (c *checker) compare(e *oracle.Entry, f occurrence) {
	r := f.rec
	var diffs []string
	if r.Edge != e.Edge {
		diffs = append(diffs, fmt.Sprintf("came in through edge %s, but the device is attached to %s", r.Edge, e.Edge))
	}
	if r.Type != e.Type {
		diffs = append(diffs, fmt.Sprintf("type %s, sent %s", r.Type, e.Type))
	}
	if r.TS != e.TS {
		diffs = append(diffs, fmt.Sprintf("device time %d, sent %d", r.TS, e.TS))
	}
	if r.IsTombstone() {
		c.v.Shed++
		if r.Class != protocol.ClassTelemetry {
			c.report(Discrepancy{Kind: LedgerShed, Stream: f.stream, Seq: f.seq, Device: e.Device, ID: e.ID,
				Detail: fmt.Sprintf("%s (class %s) was shed to a tombstone; only telemetry may be", r.Type, r.Class)})
		}
	} else if h := sha256.Sum256(r.Body); protocol.Hash(h) != e.BodyHash {
		diffs = append(diffs, "the body differs from the one sent")
	}
	if len(diffs) > 0 {
		c.report(Discrepancy{Kind: Altered, Stream: f.stream, Seq: f.seq, Device: e.Device, ID: e.ID, Detail: strings.Join(diffs, "; ")})
	}
}

func rejection(r protocol.Record) string {
	var b struct {
		Reason string `json:"reason"`
		Error  string `json:"error"`
	}
	if err := protocol.Body(r.Body).Decode(&b); err != nil {
		return "(unreadable body)"
	}
	return b.Reason + ": " + b.Error
}

// stream checks one stream's rows and checkpoints, and returns its
// decodable records (duplicate rows included) for the event checks.
func (c *checker) stream(s Stream, keys protocol.KeyMap) []occurrence {
	name := s.Stream.String()
	if keys == nil {
		keys = protocol.KeyMap{}
	}
	rows := slices.Clone(s.Rows)
	slices.SortStableFunc(rows, func(a, b Row) int {
		return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Pos, b.Pos))
	})
	c.v.Records += len(rows)

	// One row per seq for the chain; doubles reported.
	bySeq := map[uint64]Row{}
	var top uint64
	var out []occurrence
	for _, r := range rows {
		if first, dup := bySeq[r.Seq]; dup {
			same := "the same bytes"
			if string(first.Raw) != string(r.Raw) {
				same = "different bytes"
			}
			c.report(Discrepancy{Kind: DuplicateRow, Stream: name, Seq: r.Seq,
				Detail: fmt.Sprintf("seq stored twice (pos %d and %d), %s", first.Pos, r.Pos, same)})
		} else {
			bySeq[r.Seq] = r
		}
		top = max(top, r.Seq)
		if rec, err := protocol.DecodeRecord(r.Raw); err == nil {
			out = append(out, occurrence{stream: name, seq: r.Seq, at: r.CommittedAt, rec: rec})
		}
	}
	times := make([]time.Time, top)
	for seq, r := range bySeq {
		if seq >= 1 {
			times[seq-1] = r.CommittedAt
		}
	}
	c.v.commits[name] = times

	// Missing seqs, in ranges.
	end := max(top, s.HWM)
	for q := uint64(1); q <= end; q++ {
		if _, ok := bySeq[q]; ok {
			continue
		}
		from := q
		for q+1 <= end {
			if _, ok := bySeq[q+1]; ok {
				break
			}
			q++
		}
		detail := fmt.Sprintf("seq %d is missing", from)
		if q > from {
			detail = fmt.Sprintf("seqs %d..%d are missing (%d records)", from, q, q-from+1)
		}
		c.report(Discrepancy{Kind: Gap, Stream: name, Seq: from, Detail: detail})
	}
	if top > s.HWM {
		c.report(Discrepancy{Kind: Watermark, Stream: name, Seq: s.HWM + 1,
			Detail: fmt.Sprintf("rows up to seq %d are stored above the watermark %d", top, s.HWM)})
	}

	// Checkpoints, then the chain between them.
	cps := slices.Clone(s.Checkpoints)
	slices.SortStableFunc(cps, func(a, b Checkpoint) int { return cmp.Compare(a.Seq, b.Seq) })
	state := protocol.ChainState{Stream: s.Stream}
	known := true // state.Head is verified (or the stream's start)
	segment := func(last uint64, want *protocol.ChainState) bool {
		var raws [][]byte
		for q := state.Seq + 1; q <= last; q++ {
			r, ok := bySeq[q]
			if !ok {
				return false // a gap, reported above
			}
			raws = append(raws, r.Raw)
		}
		if len(raws) == 0 {
			return true
		}
		from := state
		if !known {
			// Check the links inside the range, taking its first
			// record's prev on trust.
			if r, err := protocol.DecodeRecord(raws[0]); err == nil {
				from.Head = r.Prev
			}
		}
		next, _, err := protocol.VerifyChain(from, raws, want)
		if err != nil {
			ce, _ := err.(*protocol.ChainError)
			seq := state.Seq + 1
			if ce != nil {
				seq = ce.Seq
			}
			c.report(Discrepancy{Kind: Chain, Stream: name, Seq: seq, Detail: err.Error()})
			return false
		}
		state, known = next, true
		return true
	}
	var lastCP uint64
	for _, cp := range cps {
		if cp.Seq <= lastCP {
			continue
		}
		ck, err := protocol.VerifyCheckpoint(cp.Signature, keys)
		switch {
		case err != nil:
			c.report(Discrepancy{Kind: Signature, Stream: name, Seq: cp.Seq, Detail: err.Error()})
		case ck.Stream() != s.Stream || ck.Seq != cp.Seq:
			c.report(Discrepancy{Kind: Signature, Stream: name, Seq: cp.Seq,
				Detail: fmt.Sprintf("stored as seq %d of %s, but signed for seq %d of %s", cp.Seq, name, ck.Seq, ck.Stream())})
			err = fmt.Errorf("mismatch")
		}
		lastCP = cp.Seq
		if err != nil {
			// Walk the range unsigned, to keep finding breaks inside it.
			if !segment(min(cp.Seq, top), nil) {
				state, known = protocol.ChainState{Stream: s.Stream, Seq: cp.Seq}, false
			}
			continue
		}
		c.v.Checkpoints++
		want := &protocol.ChainState{Stream: s.Stream, Seq: ck.Seq, Head: ck.Head}
		if !segment(cp.Seq, want) {
			// Start again from the signed head.
			state, known = *want, true
		}
	}
	if top > lastCP {
		from := max(lastCP+1, 1)
		c.report(Discrepancy{Kind: Uncovered, Stream: name, Seq: from,
			Detail: fmt.Sprintf("seqs %d..%d are not covered by any signed checkpoint", from, top)})
		segment(top, nil)
	}
	return out
}

// zReport checks a till.closed against the till's sales, returns and
// voids in the ledger: their counts, totals and net amounts per tender.
func (c *checker) zReport(o occurrence, sums pos.TillTotals) {
	var z pos.TillClosed
	if err := pos.Decode(o.rec.Type, o.rec.Body, &z); err != nil {
		c.report(Discrepancy{Kind: ZReport, Stream: o.stream, Seq: o.seq, Device: o.rec.Device, ID: o.rec.ID, Detail: err.Error()})
		return
	}
	if diffs := pos.Reconcile(&z, sums.Of(&z)); len(diffs) > 0 {
		c.report(Discrepancy{Kind: ZReport, Stream: o.stream, Seq: o.seq, Device: o.rec.Device, ID: o.rec.ID,
			Detail: fmt.Sprintf("till %s/%s day %s: %s", z.Store, z.Terminal, z.BusinessDay, strings.Join(diffs, "; "))})
		return
	}
	c.v.TillsExact++
}

// txnSet is the transactions a till's totals already hold, by (store,
// terminal, business day, txn): a sale sent again under a new event id
// (the duplicate-transaction fault) is one sale, on the till's Z report and
// in the cloud's reports alike.
type txnSet map[[4]string]bool

// seen reports whether a transaction of the same key came before, and
// notes this one.
func (s txnSet) seen(typ string, body []byte) bool {
	var k [4]string
	switch typ {
	case pos.TypeSaleCompleted, pos.TypeReturnCompleted:
		var t pos.Transaction
		if pos.Decode(typ, body, &t) != nil {
			return false
		}
		k = [4]string{t.Store, t.Terminal, t.BusinessDay, t.Txn}
	case pos.TypeSaleVoided:
		var v pos.Void
		if pos.Decode(typ, body, &v) != nil {
			return false
		}
		k = [4]string{v.Store, v.Terminal, v.BusinessDay, v.Txn}
	default:
		return false
	}
	if s[k] {
		return true
	}
	s[k] = true
	return false
}
