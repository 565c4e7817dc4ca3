package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection/pgview"
	"github.com/outpost-edge/outpost/internal/flagenv"
)

// errProjectionDiffers is what `cloud projections check` returns when the
// live rows are not what the ledger folds to: the first differing row of
// each table is on stdout, and the exit code is 1.
var errProjectionDiffers = errors.New("the projection differs from its rebuild")

// runProjections is `cloud projections rebuild|check`: recompute the read
// models from the ledger beside the live ones while ingest runs, compare
// them with the live ones, and (rebuild) swap them in.
func runProjections(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "rebuild" && args[0] != "check") {
		return usagef("cloud projections: say rebuild or check (cloud projections rebuild [--name %s], cloud projections check)", pgview.Name)
	}
	sub := args[0]
	var c Config
	fs := flag.NewFlagSet("cloud projections "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs, &c)
	name := fs.String("name", pgview.Name, "the projection to "+sub+" (there is one: "+pgview.Name+", every read model of docs/REPORTS.md)")
	var page int
	flagenv.IntVar(fs, &page, "page", 2000, flagenv.Range{Min: 1, Max: 1_000_000}, "ledger records folded per transaction while catching up")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: cloud projections "+sub+" [--name N] [flags]")
	if err := flagenv.Parse(fs, args[1:], "OUTPOST_", "config"); err != nil {
		return err
	}
	if *name != pgview.Name {
		return usagef("--name %q: no such projection; the one projection is %q (every read model shares one fold)", *name, pgview.Name)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pool, cl, err := openDB(ctx, &c, log)
	if err != nil {
		return err
	}
	defer func() {
		pool.Close()
		if cl != nil {
			cl.Stop()
		}
	}()
	if err := ledger.CheckSchema(ctx, pool); err != nil {
		return fmt.Errorf("%w (run `cloud migrate` first)", err)
	}
	res, err := pgview.Rebuild(ctx, pool, pgview.RebuildOptions{Swap: sub == "rebuild", Page: page, Logger: log})
	if err != nil {
		return err
	}
	for _, d := range res.Diffs {
		fmt.Fprintln(stdout, d)
	}
	if res.LiveDigest != res.RebuiltDigest {
		fmt.Fprintf(stdout, "digest: live %x, rebuilt %x (they folded different records)\n", res.LiveDigest[:8], res.RebuiltDigest[:8])
	}
	verdict := "equal to the live rows"
	if !res.Equal() {
		verdict = fmt.Sprintf("%d tables differ from the live rows", len(res.Diffs))
	}
	if res.Swapped {
		fmt.Fprintf(stdout, "rebuilt projection %s through ledger position %d from %d records (%s before); swapped in\n",
			*name, res.Through, res.Records, verdict)
		return nil
	}
	fmt.Fprintf(stdout, "checked projection %s through ledger position %d from %d records: %s\n", *name, res.Through, res.Records, verdict)
	if !res.Equal() {
		return fmt.Errorf("%w (each line above names the table and its first differing row; `cloud projections rebuild` replaces the live rows)", errProjectionDiffers)
	}
	return nil
}

// rebuildInBackground is serve's start-up rebuild of a projection that
// needs one (pgview.NeedsRebuild): ingest keeps committing, and folding,
// meanwhile; the rebuilt rows replace the live ones at the end. A failure
// is logged, not fatal: the live projection goes on, and the next start
// (or `cloud projections rebuild`) tries again.
func rebuildInBackground(ctx context.Context, pool *pgxpool.Pool, dir *pgview.Directory, why string, rebuilding *atomic.Int64, log *slog.Logger) {
	rebuilding.Store(1)
	defer rebuilding.Store(0)
	log = log.With("component", "projection-rebuild", "projection", pgview.Name)
	log.Info("rebuilding the projection in the background", "why", why)
	res, err := pgview.Rebuild(ctx, pool, pgview.RebuildOptions{Swap: true, Dir: dir, Logger: log})
	switch {
	case errors.Is(err, pgview.ErrBusy):
		log.Info("another replica is rebuilding the projection; leaving it to that one")
	case ctx.Err() != nil:
		log.Info("projection rebuild stopped by shutdown; the next start tries again")
	case err != nil:
		log.Error("projection rebuild failed; the live projection goes on, the next start tries again (or run cloud projections rebuild)", "err", err)
	default:
		log.Info("projection rebuilt and swapped in", "through", res.Through, "records", res.Records, "tables_that_differed", len(res.Diffs))
	}
}

// registerProjectionMetrics registers the projection's metrics; rebuilding
// is 1 while serve's background rebuild runs.
func registerProjectionMetrics(reg *prometheus.Registry, p *pgview.Projection, applySeconds prometheus.Histogram, rebuilding *atomic.Int64) {
	reg.MustRegister(applySeconds)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_cloud_projection_records_total",
		Help: "Records this process folded into the read models."}, func() float64 { return float64(p.Stats().Records) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_cloud_projection_last_pos",
		Help: "The highest ledger position this process folded into the read models."}, func() float64 { return float64(p.Stats().LastPos) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_cloud_projection_rebuilding",
		Help: "1 while the start-up rebuild of the read models runs in the background."}, func() float64 { return float64(rebuilding.Load()) }))
}
