package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
)

// otaDevice is the device name of the edge's own ota.* events in its
// outbox. The cloud must take ota.* events only from it (a device could
// send an event of type ota.committed under its own name).
const otaDevice = protocol.EdgeDevice

// otaDrainEvery is how often `edge run` moves the updater's spooled events
// into its outbox.
const otaDrainEvery = 5 * time.Second

// otaDirFor is the updater's directory for a data dir: OUTPOST_OTA_DIR
// (what `edge supervise --ota-dir` gives its child), else <data-dir>/ota.
func otaDirFor(dataDir string) string {
	if d := os.Getenv("OUTPOST_OTA_DIR"); d != "" {
		return d
	}
	return filepath.Join(dataDir, "ota")
}

func otaSpool(otaDir string) ota.Spool {
	return ota.Spool{Path: filepath.Join(otaDir, "events.jsonl")}
}

// drainOTAEvents appends the updater's spooled events to the outbox as
// ledger records of device otaDevice, at start and then every
// otaDrainEvery, until ctx ends. A refusal (a full ledger quota) leaves
// them spooled for the next try.
func drainOTAEvents(ctx context.Context, ob *outbox.Outbox, dataDir string, log *slog.Logger) error {
	sp := otaSpool(otaDirFor(dataDir))
	t := time.NewTicker(otaDrainEvery)
	defer t.Stop()
	for {
		if err := sp.Drain(func(evs []ota.Event) error { return appendOTAEvents(ctx, ob, evs) }); err != nil && ctx.Err() == nil {
			log.Warn("ota events not yet in the outbox; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func appendOTAEvents(ctx context.Context, ob *outbox.Outbox, evs []ota.Event) error {
	entries := make([]outbox.Entry, 0, len(evs))
	for _, e := range evs {
		body := map[string]any{"version": e.Version, "release": e.Release}
		if e.Target != "" {
			body["target"] = e.Target
		}
		if e.Reason != "" {
			body["reason"] = e.Reason
		}
		if e.Command != "" {
			body["command"] = e.Command
		}
		b, err := protocol.NewBody(body)
		if err != nil {
			return err
		}
		entries = append(entries, outbox.Entry{Device: otaDevice, Event: protocol.Event{
			ID: e.ID, Type: e.Kind, TS: e.At.UTC().Truncate(time.Millisecond), Body: b,
		}})
	}
	rs, err := ob.Append(ctx, entries)
	if err != nil {
		return err
	}
	var errs []error
	for i, r := range rs {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", evs[i].Kind, evs[i].ID, r.Err))
		}
	}
	return errors.Join(errs...)
}
