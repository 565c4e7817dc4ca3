package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/edge/ota"
)

// startOTAProbation runs this release's own probation when systemd, not
// edge supervise, runs it (the unit sets OUTPOST_OTA_PROBATION to the
// healthy window) and the pending release is this binary's version. A
// rollback ends Run with an error, so that systemd restarts the unit into
// the previous release.
func startOTAProbation(ctx context.Context, g *errgroup.Group, dataDir, statusAddr string, log *slog.Logger) {
	window := os.Getenv("OUTPOST_OTA_PROBATION")
	if window == "" {
		return
	}
	probation, err := time.ParseDuration(window)
	if err != nil {
		log.Error("OUTPOST_OTA_PROBATION is not a duration; no probation runs", "value", window, "err", err)
		return
	}
	dir := otaDirFor(dataDir)
	l := &ota.Layout{Dir: dir}
	p, err := l.Pending()
	if err != nil || p == nil {
		return
	}
	if p.Version != Version {
		log.Warn("the release on probation is not this binary's version; leaving it to the guard", "pending", p.Version, "version", Version)
		return
	}
	st, err := ota.OpenState(filepath.Join(dir, "trust", "state.json"))
	if err != nil {
		log.Error("no probation: trust state", "err", err)
		return
	}
	// The same Supervisor, health probe and probation loop as edge
	// supervise (ota.Supervisor.probation), run from inside the release.
	s := &ota.Supervisor{
		Layout: l, State: st, Probation: probation, Logger: log.With("component", "ota"),
		HealthURL: "http://" + statusAddr + "/healthz",
		OnEvent:   spoolEvents(otaSpool(dir), log),
	}
	g.Go(func() error { return s.SelfProbation(ctx) })
}

// spoolEvents is the OnEvent of both ways a release's probation runs (edge
// supervise, and the release's own under systemd): each event is spooled
// for edge run to move into the outbox.
func spoolEvents(sp ota.Spool, log *slog.Logger) func(ota.Event) {
	return func(e ota.Event) {
		if err := sp.Add(e); err != nil {
			log.Error("could not record an ota event for the ledger", "kind", e.Kind, "err", err)
		}
	}
}
