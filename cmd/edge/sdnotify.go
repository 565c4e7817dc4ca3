package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// sdNotify sends state to systemd's notify socket ($NOTIFY_SOCKET); with
// no socket it does nothing. This is the whole sd_notify protocol (one
// datagram on a unix socket, a leading @ for the abstract namespace), so
// it is written out here rather than pulled in from coreos/go-systemd.
func sdNotify(state string) error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return nil
	}
	name := sock
	if strings.HasPrefix(sock, "@") {
		name = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// sdWatchdogEvery is half of systemd's WatchdogSec= for this process, or
// zero when there is no watchdog.
func sdWatchdogEvery() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}

// startSystemd tells systemd the edge is ready (Type=notify) and, under
// WatchdogSec=, feeds the watchdog only when check passes: edge run gives
// the full local health check (localHealth, the one /healthz serves), not
// a timer, so a release whose outbox stops committing or whose intake
// stops listening, or that hangs, stops feeding it and systemd restarts it
// (and the unit's guard counts the start while it is on probation).
func startSystemd(ctx context.Context, g *errgroup.Group, check func() error, log *slog.Logger) {
	if err := sdNotify("READY=1"); err != nil {
		log.Warn("sd_notify READY failed", "err", err)
	}
	every := sdWatchdogEvery()
	if every == 0 {
		return
	}
	g.Go(func() error {
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
			if err := sdNotify("WATCHDOG=1"); err != nil {
				log.Warn("sd_notify WATCHDOG failed", "err", err)
			}
		}
	})
}
