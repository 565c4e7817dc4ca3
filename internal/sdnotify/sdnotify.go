// Package sdnotify is how the cloud and the edge talk to systemd
// (Type=notify, WatchdogSec=), through coreos/go-systemd's daemon package:
// READY=1 once serving, STOPPING=1 on drain, and WATCHDOG=1 only while a
// health check passes. Without $NOTIFY_SOCKET every call does nothing, so
// the programs run the same outside systemd.
package sdnotify

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notify sends state (such as "READY=1") to systemd; with no socket it does
// nothing.
func Notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}

// WatchdogEvery is half of systemd's WatchdogSec= for this process, or
// zero when there is no watchdog (or it is meant for another process, such
// as the supervisor whose child this is).
func WatchdogEvery() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

// Ready says READY=1 and returns the watchdog loop to run (in the caller's
// errgroup, until ctx ends), or nil without a watchdog. The loop feeds the
// watchdog only while check passes, so that a process that is up but not
// working is restarted by systemd, as a liveness probe would.
func Ready(check func() error, log *slog.Logger) func(ctx context.Context) error {
	if err := Notify("READY=1"); err != nil {
		log.Warn("sd_notify READY failed", "err", err)
	}
	every := WatchdogEvery()
	if every == 0 {
		return nil
	}
	return func(ctx context.Context) error {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if err := check(); err != nil {
				log.Warn("not feeding the systemd watchdog", "err", err)
				continue
			}
			if err := Notify("WATCHDOG=1"); err != nil {
				log.Warn("sd_notify WATCHDOG failed", "err", err)
			}
		}
	}
}
