package ota

import (
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/firmware"
)

// DefaultMaxAttempts is how many starts a release on probation gets (a
// start is counted before the release runs, so a power cut or a reboot
// during probation uses one up) before it is rolled back.
const DefaultMaxAttempts = 3

// Start is what Guard decided for one start.
type Start struct {
	// Version to run: what current names after the decision.
	Version string
	// Pending is the probation in force, or nil when Version is committed.
	Pending *Pending
	// RolledBack is the probation Guard ended, with Reason, or nil.
	RolledBack *Pending
	Reason     string
}

// Guard is run before every start of the edge, by `edge supervise` and by
// the systemd unit's ExecStartPre, with the binary of the last committed
// release, so one implementation decides for both:
//   - it settles an interrupted install, commit or rollback (Recover);
//   - a release on probation whose deadline has passed, or that has had
//     maxAttempts starts, is rolled back (and pinned as known bad);
//   - otherwise a release on probation has this start counted (durably,
//     before it runs).
//
// A committed release is never rolled back by Guard: an ordinary reboot or
// power cut of it changes nothing.
func Guard(l *Layout, state *firmware.State, now time.Time, maxAttempts int) (Start, error) {
	if maxAttempts <= 0 {
		maxAttempts = DefaultMaxAttempts
	}
	p, err := l.Recover(state)
	if err != nil {
		return Start{}, err
	}
	if p != nil {
		var reason string
		switch {
		case p.Attempts >= maxAttempts:
			reason = fmt.Sprintf("%d starts without a healthy probation", p.Attempts)
		case now.After(p.Deadline):
			reason = fmt.Sprintf("probation deadline %s passed without a commit", p.Deadline.Format(time.RFC3339))
		}
		if reason != "" {
			if p.Previous == "" {
				// Nothing to go back to: keep running it, still on probation.
				return Start{Version: p.Version, Pending: p}, nil
			}
			rb, err := l.Rollback(reason)
			if err != nil {
				return Start{}, err
			}
			cur, err := l.Current()
			return Start{Version: cur, RolledBack: rb, Reason: reason}, err
		}
		p.Attempts++
		if err := l.WritePending(p); err != nil {
			return Start{}, err
		}
		return Start{Version: p.Version, Pending: p}, nil
	}
	cur, err := l.Current()
	if err != nil {
		return Start{}, err
	}
	if cur == "" {
		return Start{}, fmt.Errorf("%w: %s has no current release; install one first", ErrLayout, l.Dir)
	}
	// Nothing is pending, so current is the committed release: a layout
	// from before the committed symlink gets it here.
	if c, err := l.Committed(); err != nil {
		return Start{}, err
	} else if c != cur {
		if err := l.point(committedLink, cur); err != nil {
			return Start{}, err
		}
	}
	return Start{Version: cur}, nil
}
