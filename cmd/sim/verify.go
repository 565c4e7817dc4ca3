package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/outpost-edge/outpost/internal/flagenv"
	"github.com/outpost-edge/outpost/simulator/oracle"
	"github.com/outpost-edge/outpost/simulator/verify"
)

// runVerify is `sim verify`: read a running cloud's ledger over its API
// and check it, against an oracle file when one is given.
func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sim verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cloud := fs.String("cloud", "http://127.0.0.1:18080", "the cloud's API URL")
	token := fs.String("token", "", "an admin API token (cloud tokens create --admin --name NAME)")
	oracleFile := fs.String("oracle", "", "a run's oracle.jsonl: what the devices sent and which events were acknowledged (default: check only the ledger's own consistency: chains, signatures, gaps, duplicates, Z reports)")
	report := fs.String("report", "", "write the verdict as JSON to this file")
	examples := fs.Int("examples", 5, "discrepancies of each kind to list")
	noReports := fs.Bool("no-reports", false, "do not compare the cloud's reports (GET /v1/reports/*) with the ledger's events (for a cloud older than the reports)")
	since := fs.String("since", "", "only the streams the cloud first saw at or after this RFC 3339 time (a run's start, when several runs share a database)")
	cfg := fs.String("config", "", "optional config file of `name = value` lines")
	_ = cfg
	fs.Usage = flagenv.Usage(fs, envPrefix, "Usage: sim verify --cloud URL --token TOKEN [--oracle FILE]\n\nVerifies a cloud's ledger. Exit status: 0 when the verdict passes, 1 when it fails.")
	if err := flagenv.Parse(fs, args, envPrefix, "config"); err != nil {
		return err
	}
	if *token == "" {
		return usagef("sim verify needs --token: an admin API token (cloud tokens create --admin --name NAME)")
	}
	var entries []oracle.Entry
	if *oracleFile != "" {
		var err error
		if entries, err = oracle.Load(*oracleFile); err != nil {
			return err
		}
	}
	cl := &verify.Client{URL: *cloud, Token: *token}
	if *since != "" {
		t, err := time.Parse(time.RFC3339Nano, *since)
		if err != nil {
			return usagef("--since %q is not an RFC 3339 time such as 2026-11-22T09:00:00Z", *since)
		}
		cl.Since = t
	}
	led, err := cl.Ledger(ctx)
	if err != nil {
		return err
	}
	v := verify.Check(led, entries, verify.Options{Examples: *examples})
	if !*noReports {
		if err := cl.CheckReports(ctx, led, v, nil, verify.Options{Examples: *examples}); err != nil {
			return fmt.Errorf("read the reports: %w", err)
		}
	}
	printVerdict(stdout, v, *oracleFile != "")
	if *report != "" {
		b, _ := json.MarshalIndent(v, "", "  ")
		if err := os.WriteFile(*report, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if !v.OK {
		return errFailed
	}
	return nil
}

func printVerdict(w io.Writer, v *verify.Verdict, withOracle bool) {
	if v.OK {
		fmt.Fprintln(w, "VERDICT: PASS")
	} else {
		fmt.Fprintf(w, "VERDICT: FAIL, %d discrepancies:", v.Failures())
		for _, k := range verify.Kinds {
			if n := v.Counts[k]; n > 0 {
				fmt.Fprintf(w, " %s %d", k, n)
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  ledger   %d streams, %d records, %d distinct events, %d checkpoint signatures verified, %d shed to tombstones, %d Z reports match\n",
		v.Streams, v.Records, v.Events, v.Checkpoints, v.Shed, v.TillsExact)
	if withOracle {
		fmt.Fprintf(w, "  oracle   %d events sent, %d acknowledged, %d of them present exactly once, %d unacknowledged but stored\n",
			v.Sent, v.Acked, v.Present, v.Unacked)
		fmt.Fprintf(w, "  latency  device publish → cloud commit: %s\n", v.Latency)
	} else {
		fmt.Fprintln(w, "  no --oracle: lost and unexpected events are not checked")
	}
	switch {
	case v.Reports != nil:
		fmt.Fprintf(w, "  reports  %s\n", v.Reports)
	case v.ReportsSkipped != "":
		fmt.Fprintf(w, "  reports  not checked: %s\n", v.ReportsSkipped)
	}
	for _, d := range v.Discrepancies {
		fmt.Fprintf(w, "  %s\n", d)
	}
}
