package ota

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/outpost-edge/outpost/firmware"
)

// Defaults for Supervisor.
const (
	DefaultProbation    = 5 * time.Minute
	DefaultReadyTimeout = 30 * time.Second
	DefaultStopTimeout  = 10 * time.Second
	DefaultProbeEvery   = time.Second
	// DefaultWatchdogTimeout matches the systemd unit's WatchdogSec=.
	DefaultWatchdogTimeout = 30 * time.Second
)

// Event is one step of the updater's life, for the audit trail. Kind is
// one of "ota.started" (from the supervisor), "ota.committed",
// "ota.rolled_back" (from the Layout's Commit and Rollback, see
// Layout.Record), "ota.downloaded", "ota.verified", "ota.installed",
// "ota.refused" (from edge ota install).
type Event struct {
	ID      string `json:"id,omitempty"` // set by Spool.Add
	Kind    string `json:"kind"`
	Version string `json:"version,omitempty"`
	Release uint64 `json:"release,omitempty"`
	Target  string `json:"target,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Command is an ota.command_accepted's hex SHA-256 of the signed
	// command it accepted: it names that one command (the cloud checks it).
	Command string    `json:"command,omitempty"`
	At      time.Time `json:"at"`
}

// Supervisor runs the current release as a child process and applies the
// rollback rules. The new version is always started from outside the
// process it replaces. Only local facts decide: the child's own health
// endpoint, whether it exits, and the clock; a cloud outage decides
// nothing.
//
// During probation:
//   - the child must be healthy within ReadyTimeout of its start
//     (a panic at start or a hang before ready fails it);
//   - it must stay healthy, every probe, for Probation; then it is
//     committed and the floor rises;
//   - an exit, or a failed probe, before that rolls back to previous.
//
// A committed release that exits is restarted (with backoff), never
// rolled back.
type Supervisor struct {
	Layout *Layout
	State  *firmware.State
	// Args are given to the child after "run".
	Args []string
	// Env is added to the child's environment.
	Env []string
	// Stdout and Stderr of the child (os.Stdout, os.Stderr).
	Stdout, Stderr io.Writer
	// Health probes the child (local only). Default: GET HealthURL.
	Health    func(ctx context.Context) error
	HealthURL string
	// Probation, ReadyTimeout, ProbeEvery, StopTimeout and MaxAttempts:
	// see the type's comment. Zero takes the defaults.
	Probation, ReadyTimeout, ProbeEvery, StopTimeout time.Duration
	MaxAttempts                                      int
	// RestartBackoff bounds the wait before restarting a committed
	// release that exited (1s doubling to 1m).
	RestartBackoff time.Duration
	// WatchdogTimeout is the watchdog of a committed release, as
	// WatchdogSec= is systemd's: one that has been unhealthy at every
	// probe for this long after it was healthy (a hang, an outbox that
	// stopped committing), or that is not healthy within ReadyTimeout of
	// its start, is stopped and restarted, never rolled back. Default 30s.
	WatchdogTimeout time.Duration
	// OnEvent receives every Event (nil: only logged).
	OnEvent func(Event)
	Now     func() time.Time
	Logger  *slog.Logger
}

func (s *Supervisor) defaults() {
	if s.Probation <= 0 {
		s.Probation = DefaultProbation
	}
	if s.ReadyTimeout <= 0 {
		s.ReadyTimeout = DefaultReadyTimeout
	}
	if s.ProbeEvery <= 0 {
		s.ProbeEvery = DefaultProbeEvery
	}
	if s.StopTimeout <= 0 {
		s.StopTimeout = DefaultStopTimeout
	}
	if s.RestartBackoff <= 0 {
		s.RestartBackoff = time.Second
	}
	if s.WatchdogTimeout <= 0 {
		s.WatchdogTimeout = DefaultWatchdogTimeout
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Stdout == nil {
		s.Stdout = os.Stdout
	}
	if s.Stderr == nil {
		s.Stderr = os.Stderr
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.Layout.Record == nil {
		// Commits and rollbacks are recorded by the Layout, inside the
		// operation (see Layout.Record).
		s.Layout.Record = s.event
	}
	if s.Health == nil {
		url := s.HealthURL
		client := &http.Client{Timeout: 2 * time.Second}
		s.Health = func(ctx context.Context) error {
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
				// The body says which local fact failed (the outbox, the intake).
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				return fmt.Errorf("health %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
			}
			return nil
		}
	}
}

func (s *Supervisor) event(e Event) {
	if e.At.IsZero() {
		e.At = s.Now().UTC()
	}
	s.Logger.Info("ota event", "kind", e.Kind, "version", e.Version, "release", e.Release, "reason", e.Reason)
	if s.OnEvent != nil {
		s.OnEvent(e)
	}
}

// Run supervises until ctx ends, then stops the child (SIGTERM, then
// SIGKILL after StopTimeout).
func (s *Supervisor) Run(ctx context.Context) error {
	s.defaults()
	backoff := s.RestartBackoff
	for ctx.Err() == nil {
		st, err := Guard(s.Layout, s.State, s.Now(), s.MaxAttempts)
		if err != nil {
			return err
		}
		if st.Pending != nil && st.Pending.Previous == "" {
			// The first release on this gateway has nothing to roll back
			// to, so a probation could decide nothing: it is committed.
			if _, err := s.commit(); err != nil {
				return err
			}
			st.Pending = nil
		}
		t0 := s.Now()
		failed, err := s.runOnce(ctx, st)
		if err != nil {
			return err
		}
		if st.Pending != nil {
			if failed != "" {
				if _, err := s.Layout.Rollback(failed); err != nil {
					return err
				}
			}
			backoff = s.RestartBackoff
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if failed == "" {
			continue // current was switched: start the new release now
		}
		if s.Now().Sub(t0) > time.Minute {
			backoff = s.RestartBackoff // it ran a while: not a crash loop
		}
		s.Logger.Warn("edge stopped; restarting", "version", st.Version, "why", failed, "wait", backoff)
		if err := sleep(ctx, backoff); err != nil {
			break
		}
		backoff = min(2*backoff, time.Minute)
	}
	return nil
}

// runOnce runs the child once. For a release on probation it returns
// when the release committed (""), or failed (the reason), having stopped
// the child if it still ran; for a committed release, when the child
// exits (why) or ctx ends.
func (s *Supervisor) runOnce(ctx context.Context, st Start) (failed string, err error) {
	// Resolve current now, so the child keeps its binary whatever current
	// is switched to while it runs.
	bin, err := filepath.EvalSymlinks(s.Layout.CurrentBinary())
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrLayout, err)
	}
	cmd := exec.Command(bin, append([]string{"run"}, s.Args...)...)
	cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
	cmd.Env = append(os.Environ(), s.Env...)
	if err := cmd.Start(); err != nil {
		if st.Pending != nil {
			return fmt.Sprintf("start %s: %v", bin, err), nil
		}
		return "", fmt.Errorf("start %s: %w", bin, err)
	}
	if st.Pending != nil {
		s.event(Event{Kind: "ota.started", Version: st.Version, Release: st.Pending.Release})
	}
	started := s.Now()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	if st.Pending == nil {
		return s.watchCommitted(ctx, st, cmd, exited, started, false), nil
	}

	verdict, gone := s.probation(ctx, exited, st.Pending.Deadline)
	if gone {
		return verdict, nil
	}
	switch {
	case verdict == "" && ctx.Err() == nil:
		if _, err := s.commit(); err != nil {
			return "", err
		}
		// It keeps running as the committed release, watched like one (a
		// later install is picked up). Whatever ends it now is no verdict.
		if why := s.watchCommitted(ctx, Start{Version: st.Version}, cmd, exited, started, true); why != "" {
			s.Logger.Warn("edge stopped after its commit; restarting", "version", st.Version, "why", why)
		}
		return "", nil
	case ctx.Err() != nil:
		// Stopped during probation: not a verdict. The next start counts
		// another attempt.
		s.stop(cmd, exited)
		return "", nil
	default:
		s.stop(cmd, exited)
		return verdict, nil
	}
}

// watchCommitted waits while a committed release runs: until it exits,
// its watchdog fires (WatchdogTimeout; it is then stopped), ctx ends, or
// an install switches current to another release, which is then started
// (stopping this one) so that it goes on probation. It returns why the
// release stopped, for the restart ("" when it was stopped on purpose).
// healthy says the release was already healthy when the watch began.
func (s *Supervisor) watchCommitted(ctx context.Context, st Start, cmd *exec.Cmd, exited <-chan error, started time.Time, healthy bool) string {
	tick := time.NewTicker(s.ProbeEvery)
	defer tick.Stop()
	var lastOK time.Time
	if healthy {
		lastOK = s.Now()
	}
	for {
		select {
		case err := <-exited:
			return fmt.Sprintf("exited after %s: %s", s.Now().Sub(started).Round(time.Second), exitStatus(err))
		case <-ctx.Done():
			s.stop(cmd, exited)
			return ""
		case <-tick.C:
		}
		if cur, err := s.Layout.Current(); err == nil && cur != st.Version {
			s.Logger.Info("a new release was installed; restarting into it", "from", st.Version, "to", cur)
			s.stop(cmd, exited)
			return ""
		}
		pctx, cancel := context.WithTimeout(ctx, s.ProbeEvery+2*time.Second)
		err := s.Health(pctx)
		cancel()
		now := s.Now()
		switch {
		case err == nil:
			lastOK = now
		case ctx.Err() != nil:
		case lastOK.IsZero() && now.Sub(started) > s.ReadyTimeout:
			s.stop(cmd, exited)
			return fmt.Sprintf("watchdog: not healthy within %s of its start: %v", s.ReadyTimeout, err)
		case !lastOK.IsZero() && now.Sub(lastOK) > s.WatchdogTimeout:
			s.stop(cmd, exited)
			return fmt.Sprintf("watchdog: unhealthy for %s: %v", now.Sub(lastOK).Round(time.Millisecond), err)
		}
	}
}

// probation watches a release on probation: verdict "" means it passed
// (or ctx ended); gone, that the child has exited.
func (s *Supervisor) probation(ctx context.Context, exited <-chan error, deadline time.Time) (verdict string, gone bool) {
	start := s.Now()
	var healthySince time.Time
	tick := time.NewTicker(s.ProbeEvery)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			if healthySince.IsZero() {
				return "exited before ready: " + exitStatus(err), true
			}
			return "exited during probation: " + exitStatus(err), true
		case <-ctx.Done():
			return "", false
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, s.ProbeEvery+2*time.Second)
		err := s.Health(pctx)
		cancel()
		now := s.Now()
		switch {
		case err == nil && healthySince.IsZero():
			healthySince = now
		case err != nil && !healthySince.IsZero():
			return fmt.Sprintf("health check failed during probation: %v", err), false
		case err != nil && now.Sub(start) > s.ReadyTimeout:
			return fmt.Sprintf("not ready within %s: %v", s.ReadyTimeout, err), false
		case now.After(deadline):
			return fmt.Sprintf("probation deadline %s passed without a commit", deadline.Format(time.RFC3339)), false
		}
		if !healthySince.IsZero() && now.Sub(healthySince) >= s.Probation {
			return "", false
		}
	}
}

// commit ends a healthy probation; the Layout records ota.committed
// (Layout.Record) before the pending record goes, so no crash loses it.
func (s *Supervisor) commit() (*Pending, error) {
	return s.Layout.Commit(s.State)
}

// exitStatus says how a child ended, given what cmd.Wait returned: a clean
// exit is "exit status 0" (Wait's nil), so that a rollback's reason says so.
func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// stop ends the child: SIGTERM, then SIGKILL after StopTimeout.
func (s *Supervisor) stop(cmd *exec.Cmd, exited <-chan error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(s.StopTimeout)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		_ = cmd.Process.Kill()
		<-exited
	}
}

// ErrRolledBack: SelfProbation rolled the running release back; the
// process must exit so that its service manager starts the previous one.
var ErrRolledBack = errors.New("release rolled back")

// SelfProbation runs the probation of the release this process is, from
// inside it: the systemd path, where systemd (not a supervisor) starts
// each release and the unit's ExecStartPre= runs Guard. It probes Health
// until the release has been healthy for Probation, then commits it, or
// until a probe fails after it was healthy, it is not healthy within
// ReadyTimeout, or the pending deadline passes, then rolls it back and
// returns ErrRolledBack. A crash or a hang needs no code here: systemd
// restarts the release, and Guard counts the start. With nothing pending
// it returns at once.
func (s *Supervisor) SelfProbation(ctx context.Context) error {
	s.defaults()
	p, err := s.Layout.Recover(s.State)
	if err != nil || p == nil {
		return err
	}
	verdict, _ := s.probation(ctx, nil, p.Deadline)
	if ctx.Err() != nil {
		return nil // stopped: no verdict; the next start counts another attempt
	}
	if verdict == "" {
		_, err := s.commit()
		return err
	}
	rb, err := s.Layout.Rollback(verdict)
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s: %s", ErrRolledBack, rb.Version, verdict)
}
