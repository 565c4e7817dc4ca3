// Command cloud is Outpost's cloud service: it verifies the segments edges
// send, commits them exactly once and in order to the Postgres ledger,
// answers with signed receipts, and serves the back-office API.
//
//	cloud serve     run the service (ingest, embedded broker, API)
//	cloud migrate   bring the database schema up to date
//	cloud tenants   add, list tenants
//	cloud stores    add, list stores
//	cloud edges     add, list, revoke edges; rotate their keys
//	cloud tokens    create enrollment and API tokens
//	cloud key show  print the cloud's public key (edges pin it)
//	cloud release   make release keys, sign and publish OTA releases
//	cloud rollouts  staged OTA rollouts: create, status, pause, resume, abort
//	cloud audit     check the stored ledger's chains and signatures
//	cloud commands list  the commands the cloud keeps for an edge
//	cloud projections rebuild|check   recompute the read models from the ledger
//	cloud verify-proof  check a proof file offline (no network, no database)
//
// Every flag can also be set through an OUTPOST_* environment variable
// (--database-url is OUTPOST_DATABASE_URL) or a config file (--config).
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/proofcli"
)

func main() {
	os.Exit(Run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: cloud <command> [flags]

Commands:
  serve          run the cloud service
  migrate        apply database migrations and exit
  tenants add    --id ID --name NAME        create a tenant
  tenants list                              list tenants
  stores add     --tenant T --id ID --name NAME --time-zone ZONE --currency CUR   create a store
  stores list    [--tenant T]               list stores
  edges add      --id ID --public-key KEY [--tenant T [--store S]]   register an edge
  edges list                                list edges and their keys
  edges revoke   --id ID                    revoke an edge (all its keys)
  edges rotate-key --id ID --public-key KEY add a new key to an edge (edge key rotate does it for you)
  edges revoke-key --id ID --kid KID        revoke one key of an edge
  edges tag      EDGE TAG... [--remove]     tag an edge (for rollouts --to tag:TAG)
  tokens create  --edge ID [--ttl 24h] [--tenant T [--store S]]   make a one-time enrollment token
  tokens create  --admin --name NAME [--role admin|reader] [--tenant T]   make an API token (global, or scoped to a tenant)
  key show                                  print the cloud's public key
  release keys init|rotate, sign ARTIFACT, publish, status   sign and publish OTA releases (docs/OTA.md)
  rollouts create|list|status|pause|resume|abort|rebuild|check   staged OTA rollouts (docs/OTA.md)
  audit          [--edge ID] [--since T]    check the stored ledger's chains and signatures (exit 1 on a fault)
  commands list  --edge ID [--json]         the commands the cloud keeps for an edge and where each stands
  projections rebuild [--name pos]          recompute the read models from the ledger beside the live ones, compare, swap in
  projections check   [--name pos]          recompute and compare without swapping (exit 1 on a difference)
  verify-proof   [--cloud-key KEY] [--json] FILE  check a proof file offline (exit 1 when it does not verify)

Run 'cloud <command> --help' for the flags of a command.
`

// Run runs the command line args and returns the exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	if code, ok := cli.Help(args, usage, stdout); ok {
		return code
	}
	ctx, stop := cli.SignalContext("cloud")
	defer stop()
	var err error
	switch cmd := args[0]; cmd {
	case "serve":
		err = cli.RunProgram(ctx, NewMain(stdout, stderr), args[1:])
	case "edges":
		if len(args) > 1 && args[1] == "tag" {
			err = runEdgesTag(ctx, args[2:], stdout, stderr)
			break
		}
		err = runAdmin(ctx, args, stdout, stderr)
	case "migrate", "tokens", "key", "tenants", "stores":
		err = runAdmin(ctx, args, stdout, stderr)
	case "rollouts":
		err = runRollouts(ctx, args[1:], stdout, stderr)
	case "release":
		err = runRelease(ctx, args[1:], stdout, stderr)
	case "audit":
		err = runAudit(ctx, args[1:], stdout, stderr)
	case "commands":
		err = runCommands(ctx, args[1:], stdout, stderr)
	case "projections":
		err = runProjections(ctx, args[1:], stdout, stderr)
	case "verify-proof":
		err = proofcli.Run("cloud verify-proof", args[1:], os.Stdin, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "cloud: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	return cli.ExitCode("cloud", err, stderr)
}

// usagef reports a mistake in how the command was called (exit code 2).
var usagef = cli.Usagef
