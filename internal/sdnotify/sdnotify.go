// Package sdnotify is systemd's service notification protocol for the
// cloud and the edge (Type=notify, WatchdogSec=): one datagram on the unix
// socket named by $NOTIFY_SOCKET (a leading @ for the abstract namespace),
// as sd_notify(3) describes it. It is small enough to write out rather than
// pull in coreos/go-systemd (which the module set here does not serve).
// Without the socket every call does nothing, so the programs run the same
// outside systemd.
package sdnotify

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notify sends state (such as "READY=1") to systemd; with no socket it does
// nothing.
func Notify(state string) error {
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

// WatchdogEvery is half of systemd's WatchdogSec= for this process, or
// zero when there is no watchdog (or it is meant for another process).
func WatchdogEvery() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
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
