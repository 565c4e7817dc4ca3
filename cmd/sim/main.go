// Command sim is Outpost's fleet simulator and end-to-end verifier.
//
//	sim run      run a fleet (a cloud, an edge per store, their devices)
//	             under a schedule of faults, then verify the cloud's ledger
//	sim verify   verify a running cloud's ledger, against an oracle file
//	             from a run when one is given
//	sim load     play many synthetic edges in one process against a cloud
//	             and report throughput, latency and resends as ratios to a
//	             COPY ceiling (make bench-fleet)
//
// `make demo` is `sim run --scenario demo` and `make soak` is
// `sim run --scenario soak`. docs/SIMULATOR.md describes both commands,
// the faults and the verdict. Every flag can also be set through an
// OUTPOST_SIM_* environment variable (--stores is OUTPOST_SIM_STORES) or a
// config file (--config); the database URL is also read from
// OUTPOST_DATABASE_URL.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/outpost-edge/outpost/internal/cli"
)

func main() {
	os.Exit(Run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: sim <command> [flags]

Commands:
  run      run a fleet under faults and verify the cloud's ledger against what the devices sent
  verify   verify a running cloud's ledger (with --oracle, against a run's record of what was sent)
  load     play many synthetic edges in one process against a cloud; figures as ratios to a COPY ceiling

Scenarios (sim run --scenario):
  demo     3 stores of 4 devices for about a minute, one uplink outage and one edge crash (make demo)
  soak     every fault type in turns for --duration (make soak, SOAK_DURATION)
  ota      edges under edge supervise: a good release rolled out in stages to all, then a bad
           one (--bad panic|hang|late-health) with a fifth of the edges offline (make demo-ota)

Run 'sim <command> --help' for the flags of a command.
`

// usagef reports a mistake in how the command was called (exit code 2).
var usagef = cli.Usagef

// errFailed is a verdict that failed (exit code 1, after the verdict was
// printed).
var errFailed = errors.New("the verdict failed")

// Run runs the command line args and returns the exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	if code, ok := cli.Help(args, usage, stdout); ok {
		return code
	}
	ctx, stop := cli.SignalContext("sim")
	defer stop()
	var err error
	switch cmd := args[0]; cmd {
	case "run":
		err = cli.RunProgram(ctx, NewMain(stdout, stderr), args[1:])
	case "verify":
		err = runVerify(ctx, args[1:], stdout, stderr)
	case "load":
		err = cli.RunProgram(ctx, NewLoadMain(stdout, stderr), args[1:])
	default:
		fmt.Fprintf(stderr, "sim: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case errors.Is(err, errFailed):
		return 1 // the verdict said why
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "sim: interrupted; stopped everything it started")
		return 130
	}
	return cli.ExitCode("sim", err, stderr)
}

// isTerminal reports whether f is a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	if !ok {
		return false
	}
	fi, err := file.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
