// Command outpost-verify checks an Outpost proof file offline: that one
// ledger record is what its edge signed and that the cloud committed it
// (docs/PROTOCOL.md, "Proof files"). It needs no network and no database,
// and is small enough to hand to an auditor. `cloud verify-proof` is the
// same command.
//
//	outpost-verify [--cloud-key KEY] FILE
package main

import (
	"io"
	"os"

	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/proofcli"
)

func main() {
	os.Exit(Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Run runs the command line args and returns the exit code: 0 when the
// proof verifies, 1 when it does not, 2 for a usage mistake.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return cli.ExitCode("outpost-verify", proofcli.Run("outpost-verify", args, stdin, stdout, stderr), stderr)
}
