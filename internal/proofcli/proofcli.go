// Package proofcli is the command that checks a proof file offline:
// `cloud verify-proof` and the standalone `outpost-verify` both run it, so
// the two can never disagree. It reads one file, checks it with
// protocol/proof (no network, no database) and prints what it proves.
package proofcli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/flagenv"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/proof"
)

// ErrNotVerified is what Run returns for a proof that does not verify:
// what failed is on stderr, and the exit code is 1.
var ErrNotVerified = errors.New("the proof does not verify")

// Run is the command named name (for its usage text) with args: it reads
// the proof file named by the one argument ("-" for stdin), verifies it and
// prints what it proves to stdout. It returns a cli.UsageError for a bad
// command line, and an error wrapping ErrNotVerified, naming the check that
// failed, for a proof that does not verify.
func Run(name string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cloudKey := fs.String("cloud-key", "", "pin the cloud's Ed25519 public key (64 hex digits or base64, as `cloud key show` or GET /v1/cloud-key prints it): "+
		"the proof must be signed by it; without it the proof's own cloud key is used, and the output says so")
	asJSON := fs.Bool("json", false, "print what the proof proves as one JSON object (proof.Summary) instead of sentences")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: "+name+" [--cloud-key KEY] [--json] FILE\n\n"+
		"Checks a proof file (GET /v1/events/{edge}/{epoch}/{seq}/proof) offline: the hash chain from the record to\n"+
		"the edge's signed checkpoint, the edge key and its registration, and the cloud's statement and receipt.\n"+
		"FILE may be - for stdin. Flags come before FILE. Exit status 0: verified; 1: it does not verify; 2: usage.")
	if err := flagenv.ParseArgs(fs, args, "OUTPOST_", "", 1); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cli.Usagef("give the proof file to check (or - for stdin): %s [--cloud-key KEY] FILE", name)
	}
	var o proof.Options
	if *cloudKey != "" {
		k, err := protocol.ParsePublicKey(*cloudKey)
		if err != nil {
			return cli.Usagef("--cloud-key: %v", err)
		}
		o.CloudKey = k
	}
	path := fs.Arg(0)
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, proof.MaxFileBytes+1))
	} else {
		b, err = readFile(path)
	}
	if err != nil {
		return fmt.Errorf("read proof file: %w", err)
	}
	res, err := proof.Verify(b, o)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", path, ErrNotVerified, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res.Summary())
	}
	_, err = io.WriteString(stdout, res.Text())
	return err
}

// readFile reads at most one byte more than a proof may hold, so a huge
// file is refused by the decoder's size check without being read whole.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, proof.MaxFileBytes+1))
}
