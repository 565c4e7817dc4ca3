package ota

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/renameio/v2"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
)

// Layout is the updater's directory on the edge:
//
//	releases/<version>/edge   each installed release's binary
//	current  -> releases/<version>   the release to run
//	previous -> releases/<version>   the one before it, to roll back to
//	pending.json              the release on probation, if any
//
// The symlinks are relative, so the tree can be moved. Every step of an
// install is durable (fsync of the file and of its directory) before the
// next relies on it, and the switch itself is one rename of the current
// symlink: after a crash at any point, current names a complete,
// verified binary, the old one or the new one.
type Layout struct {
	Dir string
	// Now is the clock for pending deadlines (time.Now).
	Now func() time.Time
	// Record, when set, receives the ota.committed and ota.rolled_back
	// events of Commit, Rollback and Recover. It is called after the step
	// that decides (the floor raised; current pointed back) and before the
	// pending record is removed, so a crash at any point before the record
	// goes has Recover, at the next start, record it again: a SIGKILL
	// cannot lose the event. Such a repeat has the same id (one per
	// install, SettledID), so Spool.Add and the outbox's dedup drop the
	// copy. It must not block; a failure to record is its own to report.
	// Supervisor sets it to its OnEvent when it is nil.
	Record func(Event)

	// crash, when set (tests only), is called after each step of Install.
	crash func(step string)
}

// Names inside Layout.Dir.
const (
	releasesDir = "releases"
	installLock = "install.lock" // held by Install
	currentLink = "current"
	prevLink    = "previous"
	// committedLink names the last committed release: the systemd unit's
	// ExecStartPre= guard runs its binary (never a release on probation).
	committedLink = "committed"
	pendingFile   = "pending.json"
	badFile       = "known-bad.json"
	binaryName    = "edge"
)

// Pending is the record of a release on probation, written before the
// switch: what was installed, over what, how many starts it has had and
// by when it must have proven healthy.
type Pending struct {
	Target   string    `json:"target"`
	Version  string    `json:"version"`
	Release  uint64    `json:"release"`
	Previous string    `json:"previous,omitempty"` // version it replaced ("" on a first install)
	Attempts int       `json:"attempts"`
	Deadline time.Time `json:"deadline"`
}

// SettledID is the id of the event that ends p's probation: the same
// for every attempt to record it, and different for every install.
func SettledID(kind string, p *Pending) string {
	id := strings.TrimPrefix(kind, "ota.") + "-" + p.Version + "-" + strconv.FormatInt(p.Deadline.UnixNano(), 36)
	if len(id) > 64 {
		id = id[len(id)-64:]
	}
	return id
}

// settled records the end of p's probation (see Record).
func (l *Layout) settled(kind string, p *Pending, reason string) {
	if l.Record == nil {
		return
	}
	l.Record(Event{ID: SettledID(kind, p), Kind: kind, Version: p.Version, Release: p.Release, Target: p.Target, Reason: reason, At: l.now().UTC()})
}

// Swap errors.
var (
	// ErrLayout: the updater's directory is not in a shape this package
	// made.
	ErrLayout = errors.New("ota layout")
	// ErrBusy: a release is on probation (nothing else installs until it
	// commits or rolls back), or another install is in progress.
	ErrBusy = errors.New("a release is on probation or being installed")
	// ErrKnownBad: the version was rolled back once and is pinned as bad,
	// so it is never retried in a loop.
	ErrKnownBad = errors.New("version known bad")
	// ErrNothingPending: Commit or Rollback with no release on probation.
	ErrNothingPending = errors.New("no release on probation")
)

func (l *Layout) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

func (l *Layout) step(name string) {
	if l.crash != nil {
		l.crash(name)
	}
}

// Binary is the path of version's binary.
func (l *Layout) Binary(version string) string {
	return filepath.Join(l.Dir, releasesDir, version, binaryName)
}

// CurrentBinary is the path through the current symlink (what a
// supervisor or a systemd unit runs).
func (l *Layout) CurrentBinary() string {
	return filepath.Join(l.Dir, currentLink, binaryName)
}

// Current is the version current points to ("" when there is none).
func (l *Layout) Current() (string, error) { return l.link(currentLink) }

// Previous is the version previous points to ("" when there is none).
func (l *Layout) Previous() (string, error) { return l.link(prevLink) }

// Committed is the version the committed symlink names: the last release
// committed ("" before the first commit).
func (l *Layout) Committed() (string, error) { return l.link(committedLink) }

// CommittedBinary is the path through the committed symlink: what the
// systemd unit's guard runs, a binary that has passed its probation.
func (l *Layout) CommittedBinary() string {
	return filepath.Join(l.Dir, committedLink, binaryName)
}

func (l *Layout) link(name string) (string, error) {
	dst, err := os.Readlink(filepath.Join(l.Dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrLayout, name, err)
	}
	v, ok := strings.CutPrefix(filepath.ToSlash(dst), releasesDir+"/")
	if !ok || v == "" || strings.Contains(v, "/") {
		return "", fmt.Errorf("%w: %s points to %q, want releases/<version>", ErrLayout, name, dst)
	}
	return v, nil
}

// Pending is the release on probation, or nil.
func (l *Layout) Pending() (*Pending, error) {
	b, err := os.ReadFile(filepath.Join(l.Dir, pendingFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLayout, err)
	}
	var p Pending
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrLayout, pendingFile, err)
	}
	return &p, nil
}

// WritePending replaces the pending record atomically (a supervisor
// counting attempts uses it too).
func (l *Layout) WritePending(p *Pending) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return durable.WriteFile(filepath.Join(l.Dir, pendingFile), append(b, '\n'), 0o644)
}

// InstallOptions for Install.
type InstallOptions struct {
	// Probation is how long from now the new release has to prove healthy
	// (it sets the pending deadline).
	Probation time.Duration
	// Mode of the installed binary; zero keeps the mode of the current
	// binary, or 0755 when there is none.
	Mode fs.FileMode
}

// Install puts the verified artifact at src in place as tg's release and
// switches current to it, in this order, each step durable before the
// next:
//
//  1. releases/<version>/edge is written from src, verifying the bytes
//     against tg again as they are copied (so what becomes executable is
//     exactly what was signed, whatever happened to src since), with the
//     mode kept, fsynced, renamed into place, and its directory fsynced;
//  2. pending.json records the probation (target, attempts 0, deadline);
//  3. previous is pointed at the release current names (one rename);
//  4. current is pointed at the new release (one rename): the switch.
//
// Installing the version current already names is refused.
func (l *Layout) Install(src string, tg firmware.Target, opts InstallOptions) error {
	version := tg.Custom.Version
	if _, err := firmware.ParseVersion(version); err != nil {
		return fmt.Errorf("install %s: %w", tg.Name, err)
	}
	// One install at a time per directory, across processes (edge run's
	// assigner, edge ota install by hand): the checks below and the swap
	// are one step. Another install in progress is ErrBusy, not a wait:
	// the assigner retries, an operator is told.
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return fmt.Errorf("install %s: %w", tg.Name, err)
	}
	unlock, ok, err := firmware.TryLockFile(filepath.Join(l.Dir, installLock))
	if err != nil {
		return fmt.Errorf("install %s: %w", tg.Name, err)
	}
	if !ok {
		return fmt.Errorf("install %s: %w: another install is in progress in %s", tg.Name, ErrBusy, l.Dir)
	}
	defer unlock()
	cur, err := l.Current()
	if err != nil {
		return err
	}
	if cur == version {
		return fmt.Errorf("install %s: version %s is already current", tg.Name, version)
	}
	if p, err := l.Recover(nil); err != nil {
		return err
	} else if p != nil {
		return fmt.Errorf("install %s: %w: %s is on probation until %s; it must commit or roll back first",
			tg.Name, ErrBusy, p.Version, p.Deadline.Format(time.RFC3339))
	}
	if bad, err := l.KnownBad(); err != nil {
		return err
	} else if why, ok := bad[version]; ok {
		return fmt.Errorf("install %s: %w: version %s rolled back before (%s)", tg.Name, ErrKnownBad, version, why)
	}
	if err := l.prepare(); err != nil {
		return err
	}
	mode := opts.Mode
	if mode == 0 {
		mode = 0o755
		if fi, err := os.Stat(l.CurrentBinary()); err == nil {
			mode = fi.Mode().Perm()
		}
	}
	if err := l.writeBinary(src, tg, mode); err != nil {
		return err
	}
	p := &Pending{Target: tg.Name, Version: version, Release: tg.Custom.Release, Previous: cur, Deadline: l.now().Add(opts.Probation).UTC()}
	if err := l.WritePending(p); err != nil {
		return fmt.Errorf("install %s: %w", tg.Name, err)
	}
	l.step("pending-written")
	if cur != "" {
		if err := l.point(prevLink, cur); err != nil {
			return err
		}
		l.step("previous-switched")
	}
	if err := l.point(currentLink, version); err != nil {
		return err
	}
	l.step("current-switched")
	return nil
}

// prepare makes the directories and clears what an interrupted install
// left (temp files and renameio's temp symlink dirs; never a release).
func (l *Layout) prepare() error {
	if err := os.MkdirAll(filepath.Join(l.Dir, releasesDir), 0o755); err != nil {
		return fmt.Errorf("ota dir: %w", err)
	}
	if err := durable.SyncDir(l.Dir); err != nil {
		return err
	}
	ents, err := os.ReadDir(l.Dir)
	if err != nil {
		return fmt.Errorf("ota dir: %w", err)
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, "."+currentLink) || strings.HasPrefix(n, "."+prevLink) || strings.HasPrefix(n, "."+committedLink) {
			_ = os.RemoveAll(filepath.Join(l.Dir, n))
		}
	}
	return nil
}

func (l *Layout) writeBinary(src string, tg firmware.Target, mode fs.FileMode) error {
	version := tg.Custom.Version
	dir := filepath.Join(l.Dir, releasesDir, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("install %s: %w", tg.Name, err)
	}
	if err := durable.SyncDir(filepath.Join(l.Dir, releasesDir)); err != nil {
		return err
	}
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "."+binaryName) {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install %s: %w", tg.Name, err)
	}
	defer in.Close()
	// The temp file is 0600 until its bytes have verified: nothing is
	// executable before that, not even under a temp name.
	out, err := renameio.NewPendingFile(filepath.Join(dir, binaryName), renameio.WithTempDir(dir), renameio.WithStaticPermissions(0o600))
	if err != nil {
		return fmt.Errorf("install %s: %w", tg.Name, err)
	}
	defer out.Cleanup()
	vf := tg.Verifier()
	if _, err := io.Copy(io.MultiWriter(out, vf), io.LimitReader(in, tg.Length+1)); err != nil {
		return fmt.Errorf("install %s: %w", tg.Name, err)
	}
	if err := vf.Check(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := out.Chmod(mode); err != nil {
		return fmt.Errorf("install %s: %w", tg.Name, err)
	}
	l.step("binary-written")
	if err := out.CloseAtomicallyReplace(); err != nil { // fsync, rename
		return fmt.Errorf("install %s: %w", tg.Name, err)
	}
	l.step("binary-renamed")
	if err := durable.SyncDir(dir); err != nil {
		return err
	}
	l.step("binary-dir-synced")
	return nil
}

// point makes link name releases/<version>, by one rename, durably.
func (l *Layout) point(name, version string) error {
	if _, err := os.Stat(l.Binary(version)); err != nil {
		return fmt.Errorf("%w: point %s at %s: %v", ErrLayout, name, version, err)
	}
	if err := renameio.Symlink(filepath.Join(releasesDir, version), filepath.Join(l.Dir, name)); err != nil {
		return fmt.Errorf("point %s at %s: %w", name, version, err)
	}
	return durable.SyncDir(l.Dir)
}

// Recover reconciles the layout after a crash in Install, Commit or
// Rollback, so that what current names is what runs and the pending record
// tells the truth:
//   - a pending record whose switch never happened (current does not name
//     it) is dropped;
//   - a pending version already pinned as known bad is rolled back the
//     rest of the way (ota.rolled_back is recorded again, as the crash
//     may have come before it was);
//   - a pending release at or below the floor (state, when not nil) was
//     committed: ota.committed is recorded again and the record dropped.
//
// It returns the pending record still in force (a release on probation),
// or nil.
func (l *Layout) Recover(state *firmware.State) (*Pending, error) {
	p, err := l.Pending()
	if err != nil || p == nil {
		return p, err
	}
	cur, err := l.Current()
	if err != nil {
		return nil, err
	}
	bad, err := l.KnownBad()
	if err != nil {
		return nil, err
	}
	reason, isBad := bad[p.Version]
	switch {
	case cur != p.Version:
		// The switch never happened, or a rollback pointed current back
		// (Install refuses a known-bad version, so only a rollback leaves
		// one pending).
		if isBad {
			l.settled("ota.rolled_back", p, reason)
		}
		return nil, l.dropPending()
	case isBad && p.Previous != "":
		if err := l.point(currentLink, p.Previous); err != nil {
			return nil, err
		}
		l.settled("ota.rolled_back", p, reason)
		return nil, l.dropPending()
	case state != nil && p.Release <= state.Floor():
		if err := l.point(committedLink, p.Version); err != nil {
			return nil, err
		}
		l.settled("ota.committed", p, "")
		return nil, l.dropPending()
	}
	return p, nil
}

func (l *Layout) dropPending() error {
	if err := os.Remove(filepath.Join(l.Dir, pendingFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("drop pending: %w", err)
	}
	return durable.SyncDir(l.Dir)
}

// KnownBad is every version pinned as bad, with the reason it was rolled
// back.
func (l *Layout) KnownBad() (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(l.Dir, badFile))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLayout, err)
	}
	m := map[string]string{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrLayout, badFile, err)
	}
	return m, nil
}

// Commit ends a healthy probation: the floor rises to the release's
// counter (first, so a crash after it cannot leave a committed release
// below the floor), the committed symlink is pointed at it, ota.committed
// is recorded (Record), then the pending record goes. The release current
// names is now the committed one.
func (l *Layout) Commit(state *firmware.State) (*Pending, error) {
	p, err := l.Recover(state)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, ErrNothingPending
	}
	if err := state.RaiseFloor(p.Release); err != nil {
		return nil, err
	}
	l.step("floor-raised")
	if err := l.point(committedLink, p.Version); err != nil {
		return nil, err
	}
	l.step("committed-linked")
	l.settled("ota.committed", p, "")
	l.step("commit-recorded")
	if err := l.dropPending(); err != nil {
		return nil, err
	}
	l.step("pending-dropped")
	return p, nil
}

// Rollback ends a failed probation: the version is pinned as known bad
// (first, so it is never retried even if the next step is interrupted),
// current is pointed back at the release it replaced (one rename),
// ota.rolled_back is recorded (Record), and the pending record goes. A first install (nothing to go back to) is refused.
func (l *Layout) Rollback(reason string) (*Pending, error) {
	p, err := l.Recover(nil)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, ErrNothingPending
	}
	if p.Previous == "" {
		return nil, fmt.Errorf("roll back %s: %w: it was the first release installed here, there is nothing to go back to", p.Version, ErrLayout)
	}
	bad, err := l.KnownBad()
	if err != nil {
		return nil, err
	}
	bad[p.Version] = reason
	b, _ := json.MarshalIndent(bad, "", "  ")
	if err := durable.WriteFile(filepath.Join(l.Dir, badFile), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	l.step("bad-pinned")
	if err := l.point(currentLink, p.Previous); err != nil {
		return nil, err
	}
	l.step("current-reverted")
	l.settled("ota.rolled_back", p, reason)
	l.step("rollback-recorded")
	if err := l.dropPending(); err != nil {
		return nil, err
	}
	l.step("pending-dropped")
	return p, nil
}
