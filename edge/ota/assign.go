package ota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/protocol"
)

// Assignment states (Assigned.State).
const (
	// AssignWaiting: accepted, waiting for its window, for a release on
	// probation to settle, or for the repository (Reason says which).
	AssignWaiting = "waiting"
	// AssignDownloading: the checks passed and the artifact is coming.
	AssignDownloading = "downloading"
	// AssignInstalling: the swap has begun; a cancel no longer stops it.
	AssignInstalling = "installing"
	// AssignInstalled: on probation (edge supervise decides the rest).
	AssignInstalled = "installed"
	// AssignRefused: the edge will not install it (Reason says why).
	AssignRefused = "refused"
	// AssignCancelled: an ota.cancel arrived before the install began.
	AssignCancelled = "cancelled"
)

// Assignment errors.
var (
	// ErrNoAssignment: no valid assignment for the target (Uptane: an
	// online install needs one, or the operator's --without-assignment).
	ErrNoAssignment = errors.New("no valid assignment")
	// ErrRetry marks an install error worth retrying (the repository is
	// unreachable, a release is on probation): the assignment stays
	// waiting and is tried again with a backoff until its not_after.
	ErrRetry = errors.New("will retry")
	// ErrSuperseded: the assignment was cancelled or replaced by a newer
	// one while it was being worked on.
	ErrSuperseded = errors.New("assignment cancelled or replaced")
)

// Assigned is the edge's one current assignment, as `edge ota status` and
// /v1/status show it (ota.assignment). Everything but State, Reason and
// Updated comes from the signed command, verified again whenever it is
// read.
type Assigned struct {
	Seq uint64 `json:"seq"` // the command's
	protocol.Assignment
	Expires time.Time `json:"command_expires"` // the command's expiry
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Updated time.Time `json:"updated"`
}

// Terminal reports whether nothing more will be done for a.
func (a *Assigned) Terminal() bool {
	switch a.State {
	case AssignInstalled, AssignRefused, AssignCancelled:
		return true
	}
	return false
}

// Line is a one-line summary for status pages.
func (a *Assigned) Line() string {
	l := fmt.Sprintf("%s of rollout %s (command %d, channel %s, version %s): %s", a.Target, a.Rollout, a.Seq, a.Channel, a.Version, a.State)
	if a.Reason != "" {
		l += ": " + a.Reason
	}
	l += ", not after " + time.UnixMilli(a.NotAfter).UTC().Format(time.RFC3339)
	if a.Window != "" {
		l += ", window " + a.Window
		if a.Zone != "" {
			l += " " + a.Zone
		}
	}
	return l
}

// Describe names a for event reasons: "assignment r-1 (command 5)".
func (a *Assigned) Describe() string {
	return fmt.Sprintf("assignment %s (command %d)", a.Rollout, a.Seq)
}

// assignmentFile is what Assignments keeps: the signed command bytes as
// they arrived (verified again on every read) and the progress.
type assignmentFile struct {
	Command []byte    `json:"command"` // the signed ota.assign, COSE_Sign1
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Updated time.Time `json:"updated"`
}

// AssignmentFile is the name of the assignment in the updater's directory.
const AssignmentFile = "assignment.json"

// Assignments keeps the edge's current assignment (the last ota.assign it
// accepted) in Dir/assignment.json: the signed command, and where its
// install is. Writes are atomic and durable, under a flock of
// Dir/assignment.lock (edge run works on it; edge ota install reads it).
// A newer assignment replaces an older one; an ota.cancel for its rollout
// drops it until its install has begun.
//
// Keep is CommandGate.Keep: the assignment is durable before the command
// counts as accepted, so a crash between the two makes the cloud deliver
// it again, and never loses it. Call Notify once the gate accepted it.
type Assignments struct {
	Dir       string
	Edge      string
	CloudKeys protocol.Keys
	Spool     Spool // ota.cancelled and the refusals of a malformed assignment
	Now       func() time.Time
	Logger    *slog.Logger

	mu      sync.Mutex // guards changed and cancel
	changed chan struct{}
	cancel  map[uint64]context.CancelFunc // the work on an assignment, by seq (Begin)
}

func (s *Assignments) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Assignments) path() string { return filepath.Join(s.Dir, AssignmentFile) }

func (s *Assignments) lock() (func(), error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	return firmware.LockFile(filepath.Join(s.Dir, "assignment.lock"))
}

// Changed is closed at the next change of the assignment (a new one, a
// cancel); a new channel after each close.
func (s *Assignments) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

// Notify wakes the Assigner after the gate accepted a command Keep kept:
// the work on an assignment starts once its command is acknowledged
// (after a crash in between, the file is there and the next start works
// on it; the cloud's redelivery is then a repeat).
func (s *Assignments) Notify() {
	s.mu.Lock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	s.mu.Unlock()
}

// Keep acts on an accepted command: an ota.assign replaces the current
// assignment, an ota.cancel drops it if it is of that rollout and its
// install has not begun (event ota.cancelled). A body that does not
// decode is refused with an ota.refused event, and the command is still
// accepted (the cloud must not send it again). Other kinds are ignored.
func (s *Assignments) Keep(c protocol.Command, msg []byte) error {
	switch c.Kind {
	case protocol.CommandAssign:
		a, err := protocol.DecodeAssignment(c.Body)
		if err != nil {
			return s.record(Event{ID: "assign-" + strconv.FormatUint(c.Seq, 10) + "-refused", Kind: "ota.refused",
				Reason: fmt.Sprintf("assignment (command %d) refused: %v", c.Seq, err)})
		}
		if err := s.store(c, msg); err != nil {
			return err
		}
		s.log().Info("assignment kept", "seq", c.Seq, "rollout", a.Rollout, "target", a.Target, "version", a.Version,
			"not_after", time.UnixMilli(a.NotAfter).UTC().Format(time.RFC3339), "window", a.Window, "zone", a.Zone)
		return nil
	case protocol.CommandCancel:
		cc, err := protocol.DecodeCancel(c.Body)
		if err != nil {
			return s.record(Event{ID: "cancel-" + strconv.FormatUint(c.Seq, 10) + "-refused", Kind: "ota.refused",
				Reason: fmt.Sprintf("cancel (command %d) refused: %v", c.Seq, err)})
		}
		return s.cancelRollout(c.Seq, cc)
	}
	s.log().Warn("accepted a command of a kind this edge does not act on", "seq", c.Seq, "kind", c.Kind)
	return nil
}

func (s *Assignments) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Assignments) record(e Event) error {
	if e.At.IsZero() {
		e.At = s.now()
	}
	if err := s.Spool.Add(e); err != nil {
		return fmt.Errorf("record %s: %w", e.Kind, err)
	}
	return nil
}

func (s *Assignments) store(c protocol.Command, msg []byte) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := s.readLocked()
	if err == nil && cur != nil && cur.Seq == c.Seq {
		// The same command again: kept before a crash that came before
		// the gate persisted its seq, and worked on since. Its progress
		// stands; resetting it to waiting would act on it twice: a
		// cancelled or refused one worked on again (and installed), one
		// mid-swap made cancellable, an installed one tried again.
		s.log().Info("the assignment is already kept; its progress stands", "seq", c.Seq, "state", cur.State)
		return nil
	}
	if err == nil && cur != nil && !cur.Terminal() {
		s.log().Info("a newer assignment replaces the current one", "old_seq", cur.Seq, "old_rollout", cur.Rollout, "old_state", cur.State, "seq", c.Seq)
		s.stop(cur.Seq)
	}
	return s.writeLocked(assignmentFile{Command: msg, State: AssignWaiting, Updated: s.now().UTC()})
}

func (s *Assignments) cancelRollout(seq uint64, cc protocol.Cancel) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := s.readLocked()
	if err != nil || cur == nil || cur.Rollout != cc.Rollout {
		s.log().Info("a cancel for a rollout this edge holds no assignment of", "seq", seq, "rollout", cc.Rollout)
		return nil
	}
	switch cur.State {
	case AssignWaiting, AssignDownloading:
	case AssignCancelled:
		// Cancelled before a crash (or a spool error) kept its event from
		// the spool and the gate from persisting the seq: this is the
		// redelivery. Record the event again (its id is fixed: one event).
		return s.record(Event{ID: "assign-" + strconv.FormatUint(cur.Seq, 10) + "-cancelled", Kind: "ota.cancelled",
			Target: cur.Target, Version: cur.Version, Reason: cur.Reason})
	default:
		s.log().Info("a cancel for an assignment past the point of cancelling", "seq", seq, "rollout", cc.Rollout, "state", cur.State)
		return nil
	}
	reason := fmt.Sprintf("%s cancelled by command %d", cur.Describe(), seq)
	if cc.Reason != "" {
		reason += ": " + cc.Reason
	}
	if err := s.setLocked(cur, AssignCancelled, reason); err != nil {
		return err
	}
	s.stop(cur.Seq)
	return s.record(Event{ID: "assign-" + strconv.FormatUint(cur.Seq, 10) + "-cancelled", Kind: "ota.cancelled",
		Target: cur.Target, Version: cur.Version, Reason: reason})
}

// Current is the current assignment, nil when there is none. Its command
// is verified again (signature, edge).
func (s *Assignments) Current() (*Assigned, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.readLocked()
}

func (s *Assignments) readLocked() (*Assigned, error) {
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f assignmentFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("assignment %s: %w", s.path(), err)
	}
	c, err := protocol.VerifyCommand(f.Command, s.CloudKeys)
	if err != nil {
		return nil, fmt.Errorf("assignment %s: %w", s.path(), err)
	}
	if c.Edge != s.Edge || c.Kind != protocol.CommandAssign {
		return nil, fmt.Errorf("assignment %s: a %s command for edge %s, this is %s", s.path(), c.Kind, c.Edge, s.Edge)
	}
	a, err := protocol.DecodeAssignment(c.Body)
	if err != nil {
		return nil, fmt.Errorf("assignment %s: %w", s.path(), err)
	}
	return &Assigned{Seq: c.Seq, Assignment: a, Expires: time.UnixMilli(c.Expires).UTC(), State: f.State, Reason: f.Reason, Updated: f.Updated}, nil
}

func (s *Assignments) writeLocked(f assignmentFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := durable.WriteFile(s.path(), b, 0o600); err != nil {
		return fmt.Errorf("keep the assignment: %w", err)
	}
	return nil
}

func (s *Assignments) setLocked(cur *Assigned, state, reason string) error {
	b, err := os.ReadFile(s.path())
	if err != nil {
		return err
	}
	var f assignmentFile
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	f.State, f.Reason, f.Updated = state, reason, s.now().UTC()
	if err := s.writeLocked(f); err != nil {
		return err
	}
	cur.State, cur.Reason, cur.Updated = state, reason, f.Updated
	return nil
}

// Set moves assignment seq to state, unless it was replaced or cancelled
// meanwhile (ErrSuperseded). Only Set to AssignInstalling stops a cancel.
func (s *Assignments) Set(seq uint64, state, reason string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := s.readLocked()
	if err != nil {
		return err
	}
	if cur == nil || cur.Seq != seq || cur.State == AssignCancelled {
		return fmt.Errorf("assignment of command %d: %w", seq, ErrSuperseded)
	}
	return s.setLocked(cur, state, reason)
}

// Begin returns a context for working on assignment seq, cancelled when
// the assignment is cancelled or replaced (or parent ends), and its
// release.
func (s *Assignments) Begin(parent context.Context, seq uint64) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	s.mu.Lock()
	if s.cancel == nil {
		s.cancel = map[uint64]context.CancelFunc{}
	}
	s.cancel[seq] = cancel
	s.mu.Unlock()
	return ctx, func() {
		s.mu.Lock()
		delete(s.cancel, seq)
		s.mu.Unlock()
		cancel()
	}
}

func (s *Assignments) stop(seq uint64) {
	s.mu.Lock()
	if c := s.cancel[seq]; c != nil {
		c()
	}
	s.mu.Unlock()
}

// For returns the valid assignment for target (Uptane's director: an
// online install needs one): the current one, verified, for this edge,
// naming target, not past its not_after, and neither cancelled nor
// refused. Otherwise the error wraps ErrNoAssignment and says why.
func (s *Assignments) For(target string) (*Assigned, error) {
	a, err := s.Current()
	if err != nil {
		return nil, fmt.Errorf("%w for %s: %v", ErrNoAssignment, target, err)
	}
	switch {
	case a == nil:
		return nil, fmt.Errorf("%w for %s: this edge holds no assignment from the cloud", ErrNoAssignment, target)
	case a.Target != target:
		return nil, fmt.Errorf("%w for %s: the assignment (command %d, rollout %s) is for %s", ErrNoAssignment, target, a.Seq, a.Rollout, a.Target)
	case a.State == AssignCancelled || a.State == AssignRefused:
		return nil, fmt.Errorf("%w for %s: %s was %s: %s", ErrNoAssignment, target, a.Describe(), a.State, a.Reason)
	case !s.now().Before(time.UnixMilli(a.NotAfter)):
		return nil, fmt.Errorf("%w for %s: %s ended at %s", ErrNoAssignment, target, a.Describe(), time.UnixMilli(a.NotAfter).UTC().Format(time.RFC3339))
	}
	return a, nil
}

// CheckNotAfter refuses to start a's install at now when its not_after
// has passed (the step before, a download, may have taken long).
func CheckNotAfter(a *Assigned, now time.Time) error {
	if na := time.UnixMilli(a.NotAfter); !now.Before(na) {
		return fmt.Errorf("%s: the install would start after its not_after %s", a.Describe(), na.UTC().Format(time.RFC3339))
	}
	return nil
}

// CheckAssigned is the Uptane check of a signed target against the
// assignment it is installed for: the same name, version and channel (the
// target's arch, when it has one, is checked by Trust.Installable against
// this edge's). An error names what differs.
func CheckAssigned(tg firmware.Target, a *Assigned) error {
	switch {
	case tg.Name != a.Target:
		return fmt.Errorf("%s: target %s is not the assigned %s", a.Describe(), tg.Name, a.Target)
	case tg.Custom.Version != a.Version:
		return fmt.Errorf("%s: target %s is version %s in the signed targets, the assignment says %s", a.Describe(), tg.Name, tg.Custom.Version, a.Version)
	case tg.Custom.Channel != a.Channel:
		return fmt.Errorf("%s: target %s is signed for channel %q, the assignment says %q", a.Describe(), tg.Name, tg.Custom.Channel, a.Channel)
	}
	return nil
}

// Assigner works on the current assignment in the background (edge run
// --ota-repo): it waits for the window (in the assignment's zone), then
// calls Install before not_after, and again with a backoff while Install
// says ErrRetry (the repository is unreachable, a release is on
// probation). It resumes an assignment persisted before a
// restart. One Assigner per updater directory.
type Assigner struct {
	Store *Assignments
	// Install refreshes the metadata, checks the target against the
	// signed targets and the assignment, downloads and installs it. An
	// error wrapping ErrRetry is tried again; any other refuses the
	// assignment (the Assigner records its ota.refused). It calls set to
	// mark downloading and installing (set's error stops it: the
	// assignment was cancelled or replaced), and returns an ErrRetry for
	// a release on probation (nothing installs until it settles).
	Install func(ctx context.Context, a *Assigned, set func(state, reason string) error) error
	// RetryMin and RetryMax bound the backoff between tries (5s, 5m).
	RetryMin, RetryMax time.Duration
	Now                func() time.Time
	Logger             *slog.Logger
}

func (w *Assigner) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// Run works until ctx ends; it returns nil then.
func (w *Assigner) Run(ctx context.Context) error {
	log := w.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "ota-assign")
	for {
		changed := w.Store.Changed()
		a, err := w.Store.Current()
		if err != nil {
			log.Error("the assignment cannot be read; waiting for a new one", "err", err)
		} else if a != nil && !a.Terminal() {
			w.work(ctx, a, log)
			if ctx.Err() != nil {
				return nil
			}
			if b, err := w.Store.Current(); err != nil || b == nil || b.Seq != a.Seq || b.Terminal() {
				continue // cancelled, replaced or done: on to what is current
			}
			// It stopped on an error of its own (the state could not be
			// written): try again later, not in a loop.
			log.Warn("work on the assignment stopped; trying again later", "seq", a.Seq)
			if !w.waitRetry(ctx, a, changed) {
				return nil
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// waitRetry waits to try a again: RetryMin (at least 5 s), or until the
// assignment is cancelled, replaced or done. A change that leaves a as it
// is (the gate noting the same command again) does not end the wait, or
// the retry would come at once. It returns false when ctx ends.
func (w *Assigner) waitRetry(ctx context.Context, a *Assigned, changed <-chan struct{}) bool {
	t := time.NewTimer(max(w.RetryMin, 5*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-changed:
			changed = w.Store.Changed()
			if b, err := w.Store.Current(); err != nil || b == nil || b.Seq != a.Seq || b.Terminal() {
				return true
			}
		}
	}
}

// work takes a to a terminal state, or returns when it is cancelled or
// replaced, or ctx ends.
func (w *Assigner) work(parent context.Context, a *Assigned, log *slog.Logger) {
	ctx, done := w.Store.Begin(parent, a.Seq)
	defer done()
	log = log.With("seq", a.Seq, "rollout", a.Rollout, "target", a.Target)
	retryMin, retryMax := w.RetryMin, w.RetryMax
	if retryMin <= 0 {
		retryMin = 5 * time.Second
	}
	if retryMax <= 0 {
		retryMax = 5 * time.Minute
	}
	backoff := retryMin
	notAfter := time.UnixMilli(a.NotAfter)
	// An install may not start after not_after: a download still going
	// then (a thin link, a stalled repository) is stopped, and the
	// install step checks it again before the swap.
	work, cancel := context.WithDeadline(ctx, notAfter)
	defer cancel()
	set := func(state, reason string) error { return w.Store.Set(a.Seq, state, reason) }
	refuse := func(reason string) {
		log.Warn("assignment refused", "reason", reason)
		// The event first: the state last, so a crash or a spool error in
		// between leaves the assignment to be refused again (the event's id
		// is fixed: one event), never refused without its event.
		if err := w.Store.record(Event{ID: "assign-" + strconv.FormatUint(a.Seq, 10) + "-refused", Kind: "ota.refused",
			Target: a.Target, Version: a.Version, Reason: reason}); err != nil {
			log.Error("the refusal could not be recorded; trying again later", "err", err)
			return
		}
		_ = set(AssignRefused, reason)
	}
	var win *Window
	loc := time.Local
	if a.Window != "" {
		var err error
		if win, err = ParseWindow(a.Window); err != nil {
			refuse(fmt.Sprintf("%s: window: %v", a.Describe(), err))
			return
		}
	}
	if a.Zone != "" {
		l, err := time.LoadLocation(a.Zone)
		if err != nil {
			refuse(fmt.Sprintf("%s: time zone %q: %v", a.Describe(), a.Zone, err))
			return
		}
		loc = l
	}
	for {
		now := w.now()
		if !now.Before(notAfter) || ctx.Err() == nil && work.Err() != nil {
			refuse(fmt.Sprintf("%s: not started by its not_after %s", a.Describe(), notAfter.UTC().Format(time.RFC3339)))
			return
		}
		var wait time.Duration
		var why string
		if win != nil {
			if open := win.Next(now.In(loc)); open.After(now) {
				wait, why = open.Sub(now), fmt.Sprintf("waiting for the window %s (%s), which opens at %s", a.Window, loc, open.Format(time.RFC3339))
			}
		}
		if wait == 0 {
			err := w.Install(work, a, set)
			switch {
			case err == nil:
				return
			case ctx.Err() == nil && work.Err() != nil:
				continue // not_after: refused above
			case errors.Is(err, ErrSuperseded) || ctx.Err() != nil:
				log.Info("stopped work on the assignment", "err", err)
				return
			case !errors.Is(err, ErrRetry):
				refuse(err.Error())
				return
			}
			wait, why = backoff, fmt.Sprintf("retrying in %s: %v", backoff.Round(time.Second), err)
			backoff = min(retryMax, 2*backoff)
			// Jitter, so a fleet does not come back to the repository at once.
			wait = wait/2 + rand.N(wait/2+1)
		}
		wait = min(wait, max(0, notAfter.Sub(now)))
		if err := set(AssignWaiting, why); err != nil {
			return
		}
		log.Info("assignment waiting", "why", why)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
