package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
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
	st, err := firmware.OpenState(filepath.Join(dir, "trust", "state.json"))
	if err != nil {
		log.Error("no probation: trust state", "err", err)
		return
	}
	client := &http.Client{Timeout: 2 * time.Second}
	url := "http://" + statusAddr + "/healthz"
	spool := otaSpool(dir)
	s := &ota.Supervisor{
		Layout: l, State: st, Probation: probation, Logger: log.With("component", "ota"),
		Health: func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
			}
			return nil
		},
		OnEvent: func(e ota.Event) {
			if err := spool.Add(e); err != nil {
				log.Error("could not record an ota event for the ledger", "kind", e.Kind, "err", err)
			}
		},
	}
	g.Go(func() error { return s.SelfProbation(ctx) })
}
