// Command edge is Outpost's edge daemon and its tools. It runs on a branch
// gateway: devices publish events to it over MQTT or HTTP, it acknowledges
// each only once it is durable in the local outbox, and it forwards the
// outbox to the cloud, forgetting records only on a signed receipt.
//
//	edge run               run the daemon
//	edge enroll            register with the cloud using a one-time token
//	edge key show          print this edge's public key
//	edge key rotate        make a new key, register it, then switch to it
//	edge devices add|list|remove   manage device credentials
//	edge outbox verify|inspect|export|compact   offline outbox tools
//	edge status            print the running daemon's status
//	edge supervise         run the current release, commit or roll back updates
//	edge ota init|adopt|status|check|install   the updater (docs/OTA.md)
//
// Every flag can also be set through an OUTPOST_* environment variable
// (--edge-id is OUTPOST_EDGE_ID) or a config file (--config).
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/outpost-edge/outpost/internal/cli"
)

func main() {
	os.Exit(Run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: edge <command> [flags]

Commands:
  run                                   run the edge daemon
  enroll   --cloud URL --token TOKEN    register with the cloud (one-time token from an admin)
  key show                              print this edge's public key and key id
  key rotate --token ADMIN [--cloud URL]  make a new key, register it with the cloud, then switch to it
  devices add --id ID [--secret S]      add a device (prints its generated secret once)
  devices list                          list devices
  devices remove --id ID                remove a device
  outbox verify                         check the outbox's chain and signatures offline
  outbox inspect                        summarize the outbox (counts, bytes, backlog, quotas)
  outbox export [--from N] [--to N]     print records as JSON lines
  outbox compact                        give the file's free space back to the volume (edge stopped)
  status                                print the running daemon's status
  supervise [-- edge run flags]         run the current release under the updater's probation and rollback
  ota init|adopt|status|check|install   the updater's trust and releases (edge ota --help; docs/OTA.md)

Run 'edge <command> --help' for the flags of a command.
`

// usagef reports a mistake in how the command was called (exit code 2).
var usagef = cli.Usagef

// Run runs the command line args and returns the exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	if code, ok := cli.Help(args, usage, stdout); ok {
		return code
	}
	ctx, stop := cli.SignalContext("edge")
	defer stop()
	var err error
	switch cmd := args[0]; cmd {
	case "run":
		err = cli.RunProgram(ctx, NewMain(stdout, stderr), args[1:])
	case "enroll", "key", "devices", "outbox", "status":
		err = runTool(ctx, args, stdout, stderr)
	case "ota":
		err = runOTA(ctx, args[1:], stdout, stderr)
	case "supervise":
		err = runSupervise(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "edge: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	return cli.ExitCode("edge", err, stderr)
}
