package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/cloud/release"
	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/flagenv"
)

const rolloutsUsage = `Usage: cloud rollouts <command> [flags]

Staged OTA rollouts (docs/OTA.md, "Operating rollouts"). Every command takes
--database-url and --json.

Commands:
  create --release V [--channel C] --to all|tag:T|stores:S1,S2 [--stages 1,5%,25%,100%]
         [--max-failures 2%|N] [--silence 30m] [--window 02:00-05:00] [--expires 72h]
         [--id ID] [--tenant T] [--release-dir DIR]      start a rollout; prints its id
  list                      every rollout, newest first
  status ID                 a rollout's stages and edges
  pause ID                  stop assigning; withdraw what no edge started
  resume ID                 run a paused rollout again, accepting its failures so far
  abort ID                  end a rollout for good
  rebuild                   recompute the OTA state projection from the ledger, compare, swap in
  check                     recompute and compare without swapping (exit 1 on a difference)

Edges are tagged with: cloud edges tag EDGE TAG... [--remove]
`

// errOTAStateDiffers is what `cloud rollouts check` returns when the live
// OTA state is not what the ledger folds to.
var errOTAStateDiffers = errors.New("the OTA state projection differs from its rebuild")

// splitArgs separates the flags of fs (with their values) from the
// positional arguments, wherever they are: `status ID --json` and
// `status --json ID` are the same.
func splitArgs(fs *flag.FlagSet, args []string) (flags, pos []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(pos, args[i+1:]...)
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue // flag.Parse says what is wrong
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return flags, pos
}

// runRollouts is `cloud rollouts ...`.
func runRollouts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, rolloutsUsage)
		return nil
	}
	sub := args[0]
	var c Config
	fs := flag.NewFlagSet("cloud rollouts "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs, &c)
	asJSON := fs.Bool("json", false, "print JSON")
	var spec rollout.Spec
	var releaseDir string
	nargs := 1
	synopsis := "Usage: cloud rollouts " + sub + " ID [flags]"
	switch sub {
	case "create":
		nargs = 0
		synopsis = "Usage: cloud rollouts create --release V --to all|tag:T|stores:S1,S2 [flags]"
		fs.StringVar(&spec.ID, "id", "", "the rollout's id (1 to 48 of A-Z a-z 0-9 _ -); default r-<hex>")
		fs.StringVar(&spec.Release, "release", "", "the version to roll out (cloud release status lists the published ones)")
		fs.StringVar(&spec.Channel, "channel", rollout.DefaultChannel, "the TUF channel the release is signed for")
		fs.StringVar(&spec.To, "to", "", "the target set: all, tag:TAG (cloud edges tag) or stores:S1,S2")
		fs.StringVar(&spec.Stages, "stages", rollout.DefaultStages, "cumulative stage sizes, counts or percentages of the target set; the last stage takes every edge left")
		fs.StringVar(&spec.MaxFailures, "max-failures", rollout.DefaultMaxFailures, "pause by itself when failures (rolled back, refused, silent) exceed this count or percentage of the target set")
		flagenv.DurationVar(fs, &spec.Silence, "silence", rollout.DefaultSilence, flagenv.Durations(time.Second, 0, ""), "an assigned edge without an ota event this long is silent: a failure, never a success")
		fs.StringVar(&spec.Window, "window", "", "maintenance window HH:MM-HH:MM in each store's time zone: edges are assigned only inside it (empty: any time)")
		flagenv.DurationVar(fs, &spec.Expires, "expires", rollout.DefaultExpires, flagenv.Durations(time.Minute, 0, ""), "how long an assignment is valid (the edge starts no install after it)")
		fs.StringVar(&spec.Tenant, "tenant", "", "only this tenant's edges (default: every tenant's)")
		fs.StringVar(&releaseDir, "release-dir", "", "the release repository cloud serve publishes (--release-dir): check that the release has a signed target (empty: the controller checks)")
	case "list", "rebuild", "check":
		nargs = 0
		synopsis = "Usage: cloud rollouts " + sub + " [flags]"
	case "status", "pause", "resume", "abort":
	default:
		return usagef("cloud rollouts: unknown command %q\n\n%s", sub, rolloutsUsage)
	}
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", synopsis)
	flags, pos := splitArgs(fs, args[1:])
	if err := flagenv.Parse(fs, flags, "OUTPOST_", "config"); err != nil {
		return err
	}
	if len(pos) != nargs {
		if nargs == 0 {
			return usagef("cloud rollouts %s takes flags only, not %q", sub, strings.Join(pos, " "))
		}
		return usagef("cloud rollouts %s needs the rollout's id (cloud rollouts list shows them)", sub)
	}
	pool, closeDB, err := openMigratedDB(ctx, &c)
	if err != nil {
		return err
	}
	defer closeDB()
	out := func(v any, text func()) error {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			return enc.Encode(v)
		}
		text()
		return nil
	}
	show := func(id string) error {
		s, err := rollout.Get(ctx, pool, id, time.Now())
		if err != nil {
			return rolloutCLIErr(err)
		}
		return out(s, func() { printRollout(stdout, s) })
	}
	switch sub {
	case "create":
		if spec.To == "" {
			return usagef("cloud rollouts create needs --to: all, tag:TAG or stores:S1,S2")
		}
		if releaseDir != "" {
			if err := checkReleaseTargets(releaseDir, spec.Release, spec.Channel); err != nil {
				return err
			}
		}
		spec.CreatedBy = "cli"
		id, err := rollout.Create(ctx, pool, spec)
		if err != nil {
			return rolloutCLIErr(err)
		}
		if *asJSON {
			return show(id)
		}
		fmt.Fprintln(stdout, id)
		return nil
	case "list":
		rs, err := rollout.List(ctx, pool, time.Now(), 0)
		if err != nil {
			return err
		}
		return out(map[string]any{"rollouts": rs}, func() {
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tRELEASE\tCHANNEL\tTO\tSTATE\tSTAGE\tEDGES\tFAILURES\tREASON")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%d/%d\t%s\n", r.ID, r.Release, r.Channel, r.To, r.State,
					r.Stage+1, len(r.Stages), r.Total, r.Failures, r.Budget, r.Reason)
			}
			tw.Flush()
		})
	case "status":
		return show(pos[0])
	case "pause", "resume", "abort":
		id := pos[0]
		var err error
		switch sub {
		case "resume":
			err = rollout.Resume(ctx, pool, id, "cli", time.Now())
		default:
			var cmds rollout.Commands
			if cmds, err = cliCommands(c.DataDir); err != nil {
				return err
			}
			if sub == "pause" {
				err = rollout.Pause(ctx, pool, cmds, id, "cli")
			} else {
				err = rollout.Abort(ctx, pool, cmds, id, "cli")
			}
		}
		if err != nil {
			return rolloutCLIErr(err)
		}
		return show(id)
	case "rebuild", "check":
		return rebuildOTAState(ctx, pool, sub == "rebuild", *asJSON, stdout)
	}
	return nil
}

func rebuildOTAState(ctx context.Context, pool *pgxpool.Pool, swap, asJSON bool, stdout io.Writer) error {
	res, err := rollout.RebuildOTAState(ctx, pool, swap)
	if err != nil {
		return err
	}
	if asJSON {
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			return err
		}
	} else {
		for _, d := range res.Diffs {
			fmt.Fprintln(stdout, d)
		}
		verdict := "equal to the live rows"
		if len(res.Diffs) > 0 {
			verdict = fmt.Sprintf("%d rows differ from the live ones", len(res.Diffs))
		}
		if res.Swapped {
			verdict += "; swapped in"
		}
		fmt.Fprintf(stdout, "OTA state folded from %d ota.* records: %s\n", res.Records, verdict)
	}
	if !swap && len(res.Diffs) > 0 {
		return errOTAStateDiffers
	}
	return nil
}

// cliCommands signs the ota.cancel commands of a pause or abort with the
// cloud's key in --data-dir, which must exist: a key made here would not
// be the one the edges pinned.
func cliCommands(dataDir string) (rollout.Commands, error) {
	path := filepath.Join(dataDir, "cloud.key")
	if _, err := os.Stat(path); err != nil {
		return nil, usagef("no cloud key at %s (%v): give the --data-dir of cloud serve, whose key signs the commands that withdraw assignments", path, err)
	}
	s, err := loadCloudKey(dataDir, nil)
	if err != nil {
		return nil, err
	}
	return rollout.CommandQueue{Signer: s}, nil
}

// checkReleaseTargets says whether the repository in dir has a target of
// version and channel.
func checkReleaseTargets(dir, version, channel string) error {
	repo := &release.Repo{Dir: dir}
	if err := repo.Open(); err != nil {
		return fmt.Errorf("--release-dir: %w", err)
	}
	st, err := repo.Status()
	if err != nil {
		return fmt.Errorf("--release-dir: %w", err)
	}
	var archs []string
	for _, c := range st.Targets {
		if c.Version == version && c.Channel == channel {
			archs = append(archs, cmpOr(c.Arch, "any arch"))
		}
	}
	if len(archs) == 0 {
		return usagef("--release %s: the repository at %s has no target of version %s in channel %s; publish it first (cloud release publish)", version, dir, version, channel)
	}
	return nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func rolloutCLIErr(err error) error {
	if errors.Is(err, rollout.ErrInvalid) {
		return cli.UsageError{Err: err}
	}
	return err
}

// printRollout writes s for people.
func printRollout(w io.Writer, s rollout.Status) {
	fmt.Fprintf(w, "rollout %s: release %s (channel %s) to %s\n", s.ID, s.Release, s.Channel, s.To)
	fmt.Fprintf(w, "state:    %s: %s\n", s.State, s.Reason)
	fmt.Fprintf(w, "stages:   %s (stage %d of %d active)\n", s.StageSizes, s.Stage+1, len(s.Stages))
	fmt.Fprintf(w, "failures: %d (pauses above %d: --max-failures %s of %d edges); silence %s", s.Failures, s.Budget, s.MaxFailures, s.Total, s.Silence)
	if s.Window != "" {
		fmt.Fprintf(w, "; window %s", s.Window)
	}
	fmt.Fprintln(w)
	if s.Skipped > 0 {
		fmt.Fprintf(w, "skipped:  %d (%s)\n", s.Skipped, s.SkippedWhy)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSTAGE\tSIZE\tSTATE\tEDGES\tASSIGNED\tACCEPTED\tDOWNLOADING\tINSTALLED\tCOMMITTED\tROLLED BACK\tREFUSED\tSILENT\tCANCELLED")
	for _, st := range s.Stages {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", st.Index, st.Size, st.State, st.Edges, st.Assigned, st.Accepted,
			st.Downloading, st.Installed, st.Committed, st.RolledBack, st.Refused, st.Silent, st.Cancelled)
	}
	tw.Flush()
	if len(s.Edges) == 0 {
		return
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nEDGE\tSTAGE\tSTATE\tARCH\tTARGET\tREASON")
	edges := append([]rollout.EdgeStatus(nil), s.Edges...)
	sort.SliceStable(edges, func(i, j int) bool { return edges[i].Stage < edges[j].Stage })
	for _, e := range edges {
		reason := e.Reason
		if e.Excused {
			reason = "accepted by a resume; " + reason
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", e.Edge, e.Stage, e.State, e.Arch, e.Target, reason)
	}
	tw.Flush()
}

// runEdgesTag is `cloud edges tag EDGE TAG... [--remove]`.
func runEdgesTag(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c Config
	fs := flag.NewFlagSet("cloud edges tag", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs, &c)
	remove := fs.Bool("remove", false, "take the tags off instead")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: cloud edges tag EDGE TAG... [--remove]\n\nTags an edge, for cloud rollouts create --to tag:TAG.")
	flags, pos := splitArgs(fs, args)
	if err := flagenv.Parse(fs, flags, "OUTPOST_", "config"); err != nil {
		return err
	}
	if len(pos) < 2 {
		return usagef("cloud edges tag needs an edge and at least one tag: cloud edges tag EDGE TAG...")
	}
	pool, closeDB, err := openMigratedDB(ctx, &c)
	if err != nil {
		return err
	}
	defer closeDB()
	edge := pos[0]
	if err := rollout.Tag(ctx, pool, edge, pos[1:], *remove); err != nil {
		return rolloutCLIErr(err)
	}
	tags, err := rollout.Tags(ctx, pool, edge)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(map[string]any{"edge": edge, "tags": tags})
	}
	fmt.Fprintf(stdout, "edge %s: tags %s\n", edge, cmpOr(strings.Join(tags, " "), "(none)"))
	return nil
}

// registerRolloutMetrics exports the rollout controller's counters.
func registerRolloutMetrics(reg *prometheus.Registry, c *rollout.Controller) {
	counter := func(name, help string, f func(rollout.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_cloud_rollout_" + name, Help: help},
			func() float64 { return float64(f(c.Stats())) }))
	}
	counter("steps_total", "Ticks of this replica's rollout controller.", func(s rollout.Stats) uint64 { return s.Steps })
	counter("step_errors_total", "Ticks that failed (the log says why; retried on the next tick).", func(s rollout.Stats) uint64 { return s.StepErrors })
	counter("assignments_total", "ota.assign commands this replica's controller made.", func(s rollout.Stats) uint64 { return s.Assigned })
	counter("auto_pauses_total", "Rollouts this replica's controller paused because their failures exceeded --max-failures.", func(s rollout.Stats) uint64 { return s.AutoPauses })
	counter("completed_total", "Rollouts this replica's controller completed.", func(s rollout.Stats) uint64 { return s.Completed })
}
