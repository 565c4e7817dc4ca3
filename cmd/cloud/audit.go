package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/flagenv"
)

// errAuditFaults is what `cloud audit` returns when it found something
// wrong: the findings are on stdout, and the exit code is 1.
var errAuditFaults = errors.New("the ledger audit found faults")

// runAudit is `cloud audit`: it re-reads the ledger and checks every
// stream's chain and checkpoints (ledger.Audit), prints the first bad row
// of each stream, and fails when there is one.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c Config
	fs := flag.NewFlagSet("cloud audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs, &c)
	edge := fs.String("edge", "", "audit only this edge's streams (default every edge)")
	since := fs.String("since", "", "check each stream from its last checkpoint committed before this time (RFC 3339, such as 2026-03-01T00:00:00Z, or a duration ago, such as 24h); default from seq 1")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: cloud audit [--edge E] [--since T] [flags]")
	if err := flagenv.Parse(fs, args, "OUTPOST_", "config"); err != nil {
		return err
	}
	opts := ledger.AuditOptions{Edge: *edge}
	if *since != "" {
		t, err := parseSince(*since, time.Now())
		if err != nil {
			return err
		}
		opts.Since = t
	}
	pool, closeDB, err := openMigratedDB(ctx, &c)
	if err != nil {
		return err
	}
	defer closeDB()
	rep, err := ledger.New(pool, ledger.Options{}).Audit(ctx, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(auditJSON(rep)); err != nil {
			return err
		}
	} else {
		for _, f := range rep.Faults {
			fmt.Fprintln(stdout, f)
		}
		fmt.Fprintf(stdout, "audited %d streams: %d records, %d checkpoints; %d with faults\n",
			len(rep.Streams), rep.Records, rep.Checkpoints, len(rep.Faults))
	}
	if !rep.OK() {
		return fmt.Errorf("%w in %d streams (each line above names the stream, the first bad seq and what is wrong)", errAuditFaults, len(rep.Faults))
	}
	return nil
}

// parseSince reads --since: an RFC 3339 time, or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("--since %q: want an RFC 3339 time such as 2026-03-01T00:00:00Z, or a positive duration ago such as 24h", s)
}

type auditFaultJSON struct {
	Stream string `json:"stream"`
	Edge   string `json:"edge"`
	Epoch  string `json:"epoch"`
	Seq    uint64 `json:"seq"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

type auditReportJSON struct {
	OK          bool             `json:"ok"`
	Streams     int              `json:"streams"`
	Records     uint64           `json:"records"`
	Checkpoints uint64           `json:"checkpoints"`
	Faults      []auditFaultJSON `json:"faults"`
}

func auditJSON(rep ledger.AuditReport) auditReportJSON {
	out := auditReportJSON{OK: rep.OK(), Streams: len(rep.Streams), Records: rep.Records,
		Checkpoints: rep.Checkpoints, Faults: []auditFaultJSON{}}
	for _, f := range rep.Faults {
		out.Faults = append(out.Faults, auditFaultJSON{Stream: f.Stream.String(), Edge: f.Stream.Edge,
			Epoch: f.Stream.Epoch.String(), Seq: f.Seq, Kind: strings.ReplaceAll(string(f.Kind), " ", "_"), Detail: f.Detail})
	}
	return out
}

// newAuditor returns the scheduled incremental audit of cloud serve with
// its metrics registered, or nil when every is 0 (--audit-every 0).
func newAuditor(reg *prometheus.Registry, led *ledger.Ledger, every time.Duration, log *slog.Logger) *ledger.Auditor {
	if every <= 0 {
		return nil
	}
	a := &ledger.Auditor{Ledger: led, Every: every, Logger: log}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_cloud_audit_faults",
		Help: "Streams whose last scheduled ledger audit found a fault (altered, missing or out-of-order rows, a checkpoint that does not verify). Any value above 0 needs `cloud audit`."},
		func() float64 { return float64(a.Faults()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_cloud_audit_last_success_timestamp_seconds",
		Help: "When the last scheduled ledger audit that read everything it had to ended (Unix seconds; 0 before the first)."},
		func() float64 {
			if t := a.LastSuccess(); !t.IsZero() {
				return float64(t.UnixNano()) / 1e9
			}
			return 0
		}))
	return a
}
