package simulator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/simulator/fleet"
	"github.com/outpost-edge/outpost/simulator/oracle"
	"github.com/outpost-edge/outpost/simulator/ota"
	"github.com/outpost-edge/outpost/simulator/verify"
)

// Millis is a duration that is milliseconds in JSON.
type Millis time.Duration

// MarshalJSON writes the duration in milliseconds.
func (m Millis) MarshalJSON() ([]byte, error) { return json.Marshal(verify.Millis(time.Duration(m))) }

// UnmarshalJSON reads milliseconds.
func (m *Millis) UnmarshalJSON(b []byte) error {
	var ms float64
	if err := json.Unmarshal(b, &ms); err != nil {
		return err
	}
	*m = Millis(ms * float64(time.Millisecond))
	return nil
}

func (m Millis) String() string { return time.Duration(m).Round(time.Millisecond).String() }

// Report is the machine-readable account of a run (the --report file).
type Report struct {
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`
	Dir     string    `json:"dir"`
	Path    string    `json:"-"` // where it was saved
	API     string    `json:"api"`
	// AdminToken is the API token the run made; it is not written to the
	// report file.
	AdminToken string `json:"-"`

	Config struct {
		Stores         int     `json:"stores"`
		Devices        int     `json:"devices_per_store"`
		Rate           float64 `json:"rate_per_device"`
		Duration       Millis  `json:"duration_ms"`
		Events         int     `json:"events_limit,omitempty"`
		Seed           uint64  `json:"seed"`
		Faults         string  `json:"faults"`
		QuotaEdges     int     `json:"quota_edges"`
		TelemetryQuota int64   `json:"telemetry_quota,omitempty"`
		Retransmit     float64 `json:"retransmit"`
		Duplicate      float64 `json:"duplicate"`
		Skewed         float64 `json:"skewed"`
		LateTills      int     `json:"late_tills,omitempty"`
		LateDays       int     `json:"late_days,omitempty"`
		DuplicateTxn   float64 `json:"duplicate_txn,omitempty"`
	} `json:"config"`

	Traffic struct {
		Devices     map[string]int `json:"devices"`     // by transport: MQTT 3.1.1, MQTT 5, HTTP
		Events      int            `json:"events"`      // distinct events sent
		Acked       int            `json:"acked"`       // acknowledged by an edge
		Sends       int            `json:"sends"`       // publishes and requests, every copy
		Retransmits int            `json:"retransmits"` // payloads sent again
		Duplicates  int            `json:"duplicates"`  // payloads published twice at once
		Dropped     int            `json:"dropped"`     // readings given up after refusals
		Refusals    uint64         `json:"refusals"`    // refusals the edges explained
		Invalid     int            `json:"invalid"`     // payloads refused as bad input
		ZReports    int            `json:"z_reports"`   // till.closed acknowledged
		Late        int            `json:"late"`        // events a holding till sent after the traffic (Config.LateTills)
		Time        Millis         `json:"time_ms"`     // from the first send to the last acknowledgement
		AckedPerSec float64        `json:"acked_per_s"` // acknowledged events per second over Time
		AckLatency  verify.Latency `json:"ack_latency"` // first send to the edge's acknowledgement
	} `json:"traffic"`

	Commit struct {
		Records    int     `json:"records"`
		PerSec     float64 `json:"per_s"` // records per second, from the start of the traffic to the last commit
		DrainAfter Millis  `json:"drain_after_traffic_ms"`
	} `json:"commit"`

	Streams []StreamResult `json:"streams"`
	Faults  []FaultResult  `json:"faults"`
	Edges   []EdgeResult   `json:"edges"`
	Cloud   struct {
		Starts int `json:"starts"`
	} `json:"cloud"`

	Verdict *verify.Verdict `json:"verdict"`
	// OTA is the OTA scenario's account (Config.OTA); a problem in it
	// fails the verdict.
	OTA *ota.Result `json:"ota,omitempty"`
}

// StreamResult is one stream of the ledger.
type StreamResult struct {
	Edge    string `json:"edge"`
	Epoch   string `json:"epoch"`
	HWM     uint64 `json:"hwm"`
	Records int    `json:"records"`
}

// EdgeResult is one edge's account.
type EdgeResult struct {
	Edge           string `json:"edge"`
	Starts         int    `json:"starts"`
	TelemetryQuota int64  `json:"telemetry_quota,omitempty"`
	Shed           uint64 `json:"shed"` // telemetry records it shed to tombstones
	Duplicates     uint64 `json:"duplicates"`
	Head           uint64 `json:"head"`
}

func (r *run) report(ctx context.Context, led *verify.Ledger, v *verify.Verdict, entries []oracle.Entry, drained time.Duration) *Report {
	rep := &Report{Started: r.out.start, Ended: time.Now(), Dir: r.cfg.Dir, API: r.cloud.API, AdminToken: r.cloud.AdminToken, Verdict: v}
	c := &rep.Config
	c.Stores, c.Devices, c.Rate, c.Duration, c.Events, c.Seed = r.cfg.Stores, r.cfg.Devices, r.cfg.Rate, Millis(r.cfg.Duration), r.cfg.Events, r.cfg.Seed
	c.Faults, c.QuotaEdges, c.Retransmit, c.Duplicate, c.Skewed = scheduleText(r.cfg.Faults), r.cfg.QuotaEdges, r.cfg.Retransmit, r.cfg.Duplicate, r.cfg.Skewed
	if r.cfg.LateTills > 0 {
		c.LateTills, c.LateDays = r.cfg.LateTills, r.cfg.LateDays
	}
	c.DuplicateTxn = r.cfg.DuplicateTxn
	if c.QuotaEdges > 0 {
		c.TelemetryQuota = r.cfg.TelemetryQuota
	}

	t := &rep.Traffic
	oc := r.oracle.Counts()
	t.Events, t.Acked, t.Sends = oc.Events, oc.Acked, oc.Sends
	t.Devices = map[string]int{}
	for _, d := range r.devices {
		t.Devices[fleet.String(d.sender)]++
	}
	t.Retransmits, t.Duplicates, t.Dropped = int(r.c.retransmits.Load()), int(r.c.duplicates.Load()), int(r.c.dropped.Load())
	t.Invalid, t.ZReports = int(r.c.invalid.Load()), int(r.c.zReports.Load())
	t.Late = int(r.c.late.Load())
	for _, d := range r.devices {
		t.Refusals += d.sender.Refusals()
	}
	t.Time = Millis(r.trafficTime)
	if r.trafficTime > 0 {
		t.AckedPerSec = float64(t.Acked) / r.trafficTime.Seconds()
	}
	var acks []time.Duration
	for _, e := range entries {
		if e.IsAcked() {
			acks = append(acks, e.Acked.Sub(e.FirstSent))
		}
	}
	t.AckLatency = verify.Percentiles(acks)

	for _, s := range led.Streams {
		rep.Streams = append(rep.Streams, StreamResult{Edge: s.Stream.Edge, Epoch: s.Stream.Epoch.String(), HWM: s.HWM, Records: len(s.Rows)})
	}
	rep.Commit.Records = v.Records
	if !v.LastCommit.IsZero() {
		rep.Commit.PerSec = float64(v.Records) / v.LastCommit.Sub(r.start).Seconds()
	}
	rep.Commit.DrainAfter = Millis(drained)

	r.mu.Lock()
	rep.Faults = slices.Clone(r.faults)
	r.mu.Unlock()
	slices.SortFunc(rep.Faults, func(a, b FaultResult) int { return a.Started.Compare(b.Started) })
	for i := range rep.Faults {
		f := &rep.Faults[i]
		for j := range f.Edges {
			h := &f.Edges[j]
			ep, err := protocol.ParseEpoch(h.Epoch)
			if err != nil || h.Head == 0 {
				continue
			}
			if at, ok := v.CommittedAt(protocol.Stream{Edge: h.Edge, Epoch: ep}, h.Head); ok && at.After(f.Ended) {
				h.Drain = Millis(at.Sub(f.Ended))
			}
			f.Drain = max(f.Drain, h.Drain)
		}
	}

	for _, e := range r.edges {
		er := EdgeResult{Edge: e.ID(), Starts: e.Proc.Starts(), TelemetryQuota: e.TelemetryQuota()}
		if st, err := e.State(ctx); err == nil {
			er.Shed, er.Duplicates, er.Head = st.Shed, st.Intake.Dups, st.Head()
		}
		rep.Edges = append(rep.Edges, er)
	}
	rep.Cloud.Starts = r.cloud.Proc.Starts()
	return rep
}

// Save writes the report as indented JSON.
func (rep *Report) Save(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Print writes the verdict and the figures for people.
func (rep *Report) Print(w io.Writer) {
	v := rep.Verdict
	fmt.Fprintln(w)
	if v.OK {
		fmt.Fprintln(w, "VERDICT: PASS. Every acknowledged event is in the cloud's ledger exactly once; every stream is gapless, chained and signed.")
	} else {
		fmt.Fprintf(w, "VERDICT: FAIL. %d discrepancies:", v.Failures())
		for _, k := range verify.Kinds {
			if n := v.Counts[k]; n > 0 {
				fmt.Fprintf(w, " %s %d", k, n)
			}
		}
		if rep.OTA != nil && len(rep.OTA.Problems) > 0 {
			fmt.Fprintf(w, "; %d OTA problems", len(rep.OTA.Problems))
		}
		fmt.Fprintln(w)
	}
	t := rep.Traffic
	fmt.Fprintf(w, "  events    %d sent by %d devices, %d acknowledged by the edges; %d retransmits, %d duplicate publishes",
		t.Events, rep.Config.Stores*rep.Config.Devices, t.Acked, t.Retransmits, t.Duplicates)
	if t.Dropped > 0 {
		fmt.Fprintf(w, ", %d readings given up under the quota", t.Dropped)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  ledger    %d acknowledged events present exactly once of %d; %d shed to tombstones (counted, not lost); %d unacknowledged but stored\n",
		v.Present, v.Acked, v.ShedAcked, v.Unacked)
	fmt.Fprintf(w, "  proofs    %d streams, %d records, %d checkpoint signatures verified, chains checked; %d Z reports match the ledger\n",
		v.Streams, v.Records, v.Checkpoints, v.TillsExact)
	switch {
	case v.Reports != nil:
		fmt.Fprintf(w, "  reports   %s\n", v.Reports)
	case v.ReportsSkipped != "":
		fmt.Fprintf(w, "  reports   not checked: %s\n", v.ReportsSkipped)
	}
	fmt.Fprintf(w, "  rate      %.0f events/s acknowledged by the edges over %s; %.0f records/s committed by the cloud\n",
		t.AckedPerSec, t.Time, rep.Commit.PerSec)
	fmt.Fprintf(w, "  latency   device publish → cloud commit: %s\n", v.Latency)
	fmt.Fprintf(w, "            device publish → edge ack:     %s\n", t.AckLatency)
	if len(rep.Faults) == 0 {
		fmt.Fprintln(w, "  faults    none")
	}
	for i, f := range rep.Faults {
		label := "          "
		if i == 0 {
			label = "  faults  "
		}
		line := fmt.Sprintf("%s  %-48s at %6.1fs, lasted %s", label, f.What, f.Started.Sub(rep.Started).Seconds(), f.Ended.Sub(f.Started).Round(10*time.Millisecond))
		switch {
		case !f.Fault.Kind.IsOutage():
		case f.Drain == 0:
			line += "; nothing left to drain"
		default:
			line += fmt.Sprintf("; drained %s after", f.Drain)
		}
		if f.Error != "" {
			line += "; error: " + f.Error
		}
		fmt.Fprintln(w, line)
	}
	printOTA(w, rep.OTA)
	var sheds []string
	for _, e := range rep.Edges {
		if e.Shed > 0 {
			sheds = append(sheds, fmt.Sprintf("%s %d", e.Edge, e.Shed))
		}
	}
	if len(sheds) > 0 {
		fmt.Fprintf(w, "  quota     telemetry shed by the edges: %s\n", strings.Join(sheds, ", "))
	}
	if len(v.Discrepancies) > 0 {
		fmt.Fprintln(w, "  first discrepancies:")
		for _, d := range v.Discrepancies {
			fmt.Fprintf(w, "    %s\n", d)
		}
	}
	if rep.Path != "" {
		fmt.Fprintf(w, "  report    %s\n", rep.Path)
	}
}

// BackOffice is the line that sends a person to the back office of the
// run's cloud: its page URL (cloud serve serves the pages under / of the
// API's listener) and the token to log in with.
func (rep *Report) BackOffice() string {
	return fmt.Sprintf("Back office: open %s/today in a browser and log in with the admin token %s (the TOKEN above); docs/BACKOFFICE.md shows the pages",
		strings.TrimSuffix(rep.API, "/"), rep.AdminToken)
}
