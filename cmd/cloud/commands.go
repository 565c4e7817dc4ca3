package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/flagenv"
	"github.com/outpost-edge/outpost/protocol"
)

// runCommands runs `cloud commands list --edge E [--json]`: the commands
// the cloud keeps for an edge (cloud/command), read from the database, the
// same as GET /v1/edges/{id}/commands shows.
func runCommands(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usagef("cloud commands needs a subcommand: list; see cloud --help")
	}
	if args[0] != "list" {
		return usagef("unknown command `cloud commands %s`; see cloud --help", args[0])
	}
	var c Config
	fs := flag.NewFlagSet("cloud commands list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs, &c)
	edge := fs.String("edge", "", "the edge whose commands to list")
	asJSON := fs.Bool("json", false, "print JSON (the shape of GET /v1/edges/{id}/commands)")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: cloud commands list --edge E [--json] [flags]")
	if err := flagenv.Parse(fs, args[1:], "OUTPOST_", "config"); err != nil {
		return err
	}
	if *edge == "" {
		return usagef("cloud commands list needs --edge")
	}
	if err := protocol.ValidateName("edge", *edge); err != nil {
		return usagef("--edge: %v", err)
	}
	if _, err := cli.NewLogger(stderr, c.LogLevel, c.LogFormat); err != nil {
		return err
	}
	pool, closeDB, err := openMigratedDB(ctx, &c)
	if err != nil {
		return err
	}
	defer closeDB()
	if _, err := ledger.New(pool, ledger.Options{}).GetEdge(ctx, *edge); err != nil {
		return err
	}
	st, err := command.List(ctx, pool, *edge)
	if err != nil {
		return err
	}
	views := command.ViewsOf(*edge, st, time.Now())
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		return enc.Encode(views)
	}
	if len(views.Commands) == 0 {
		fmt.Fprintf(stdout, "edge %s has no commands\n", *edge)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tKIND\tREF\tSTATE\tCREATED\tEXPIRES\tDELIVERED\tACKED\tCANCELLED")
	at := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Format(time.RFC3339)
	}
	for _, v := range views.Commands {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Seq, v.Kind, orDash(v.Ref), v.State,
			v.CreatedAt.Format(time.RFC3339), v.ExpiresAt.Format(time.RFC3339), at(v.DeliveredAt), at(v.AckedAt), at(v.CancelledAt))
	}
	return tw.Flush()
}
