package release

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
)

// Defaults of Repo.
const (
	DefaultSnapshotLifetime  = 24 * time.Hour
	DefaultTimestampLifetime = 6 * time.Hour
	DefaultWarnBefore        = 14 * 24 * time.Hour
	DefaultResignEvery       = 5 * time.Minute
)

// Repo is the cloud's TUF repository in a directory. Several cloud
// replicas may share one directory (a shared volume): every change takes
// an exclusive flock on Dir/.lock, reads the state from the files, and
// writes each file atomically and durably, the timestamp last, so an edge
// reading at any moment sees a consistent repository.
type Repo struct {
	Dir string
	// Online is the directory of the snapshot and timestamp keys.
	Online string
	// Lifetimes of the online roles' metadata, and when to warn (log and
	// metric) before any role expires.
	SnapshotLifetime, TimestampLifetime, WarnBefore time.Duration
	// ResignEvery is how often Run checks the expiries.
	ResignEvery time.Duration
	Now         func() time.Time
	Logger      *slog.Logger

	mu       sync.Mutex
	expiries map[string]time.Time
}

// Open fills the defaults of r and makes its directory.
func (r *Repo) Open() error {
	if r.SnapshotLifetime == 0 {
		r.SnapshotLifetime = DefaultSnapshotLifetime
	}
	if r.TimestampLifetime == 0 {
		r.TimestampLifetime = DefaultTimestampLifetime
	}
	if r.WarnBefore == 0 {
		r.WarnBefore = DefaultWarnBefore
	}
	if r.ResignEvery == 0 {
		r.ResignEvery = DefaultResignEvery
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.Dir == "" {
		return errors.New("release repository: no directory (--release-dir)")
	}
	return durable.MkdirAll(filepath.Join(r.Dir, "targets"), 0o755)
}

func (r *Repo) lock() (func(), error) {
	return firmware.LockFile(filepath.Join(r.Dir, ".lock"))
}

// state is what the repository holds now.
type state struct {
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	targetsB  []byte
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
}

var rootFile = regexp.MustCompile(`^([1-9][0-9]{0,18})\.root\.json$`)

// rootVersions are the root versions in dir, ascending.
func rootVersions(dir string) ([]int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var vs []int64
	for _, e := range ents {
		if m := rootFile.FindStringSubmatch(e.Name()); m != nil {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			vs = append(vs, v)
		}
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
	return vs, nil
}

func (r *Repo) read() (*state, error) {
	s := &state{}
	vs, err := rootVersions(r.Dir)
	if err != nil {
		return nil, err
	}
	if len(vs) > 0 {
		b, err := os.ReadFile(filepath.Join(r.Dir, fmt.Sprintf("%d.root.json", vs[len(vs)-1])))
		if err != nil {
			return nil, err
		}
		if s.root, err = metadata.Root().FromBytes(b); err != nil {
			return nil, fmt.Errorf("repository root: %w", err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(r.Dir, "targets.json")); err == nil {
		if s.targets, err = metadata.Targets().FromBytes(b); err != nil {
			return nil, fmt.Errorf("repository targets: %w", err)
		}
		s.targetsB = b
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(r.Dir, "snapshot.json")); err == nil {
		if s.snapshot, err = metadata.Snapshot().FromBytes(b); err != nil {
			return nil, fmt.Errorf("repository snapshot: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(r.Dir, "timestamp.json")); err == nil {
		if s.timestamp, err = metadata.Timestamp().FromBytes(b); err != nil {
			return nil, fmt.Errorf("repository timestamp: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return s, nil
}

// Publication is what the signers publish: every root version they have
// (the repository takes those above its own, each checked to chain), the
// signed targets, and the artifact file of every target the repository
// does not hold yet.
type Publication struct {
	Roots     map[int64][]byte
	Targets   []byte
	Artifacts map[string]string // target name -> local file
}

// PublicationFrom reads a Publication from an offline key directory's
// public files (N.root.json, targets.json); artifacts are given by name.
func PublicationFrom(offline string, artifacts map[string]string) (Publication, error) {
	p := Publication{Roots: map[int64][]byte{}, Artifacts: artifacts}
	vs, err := rootVersions(offline)
	if err != nil {
		return p, err
	}
	for _, v := range vs {
		b, err := os.ReadFile(filepath.Join(offline, fmt.Sprintf("%d.root.json", v)))
		if err != nil {
			return p, err
		}
		p.Roots[v] = b
	}
	b, err := os.ReadFile(filepath.Join(offline, "targets.json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return p, err
	}
	p.Targets = b
	return p, nil
}

// Published says what a Publish did.
type Published struct {
	RootVersion, TargetsVersion, SnapshotVersion, TimestampVersion int64
	NewRoots                                                       []int64
	NewArtifacts                                                   []string
}

// Publish checks p against the repository and adds it: new roots (each
// signed by the threshold of the one before and its own), then the
// artifacts (copied as a stream, fsynced, checked against the signed
// length and sha256 before they are renamed into place), then the
// targets (signed by the threshold of the newest root, a higher version
// than the repository's), then a new snapshot and timestamp signed with
// the online keys. Anything wrong refuses the whole publish with
// ErrRefused before the metadata changes.
func (r *Repo) Publish(ctx context.Context, p Publication) (Published, error) {
	unlock, err := r.lock()
	if err != nil {
		return Published{}, err
	}
	defer unlock()
	s, err := r.read()
	if err != nil {
		return Published{}, err
	}
	var out Published
	// Roots.
	var have int64
	if s.root != nil {
		have = s.root.Signed.Version
	}
	vs := make([]int64, 0, len(p.Roots))
	for v := range p.Roots {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
	prev := s.root
	var newRoots [][]byte
	for _, v := range vs {
		if v <= have {
			continue
		}
		nr, err := metadata.Root().FromBytes(p.Roots[v])
		if err != nil {
			return out, fmt.Errorf("%w: root version %d: %v", ErrRefused, v, err)
		}
		if nr.Signed.Version != v {
			return out, fmt.Errorf("%w: file %d.root.json holds root version %d", ErrRefused, v, nr.Signed.Version)
		}
		if prev != nil {
			if v != prev.Signed.Version+1 {
				return out, fmt.Errorf("%w: root version %d follows %d; publish every version in between", ErrRefused, v, prev.Signed.Version)
			}
			if err := prev.VerifyDelegate(metadata.ROOT, nr); err != nil {
				return out, fmt.Errorf("%w: root version %d is not signed by the threshold of version %d: %v", ErrRefused, v, prev.Signed.Version, err)
			}
		} else if v != 1 {
			return out, fmt.Errorf("%w: the repository is empty and the first root is version %d; publish from 1.root.json", ErrRefused, v)
		}
		if err := nr.VerifyDelegate(metadata.ROOT, nr); err != nil {
			return out, fmt.Errorf("%w: root version %d is not signed by its own threshold: %v", ErrRefused, v, err)
		}
		prev = nr
		newRoots = append(newRoots, p.Roots[v])
		out.NewRoots = append(out.NewRoots, v)
	}
	root := prev
	if root == nil {
		return out, fmt.Errorf("%w: the repository has no root and none was given: publish from the offline directory made by 'cloud release keys init'", ErrRefused)
	}
	if r.Now().After(root.Signed.Expires) {
		return out, fmt.Errorf("%w: root version %d expired at %s: rotate the root ('cloud release keys rotate --role root')", ErrRefused, root.Signed.Version, root.Signed.Expires.Format(time.RFC3339))
	}
	// Targets.
	targets, targetsB := s.targets, s.targetsB
	if len(p.Targets) > 0 && !bytes.Equal(p.Targets, s.targetsB) {
		nt, err := metadata.Targets().FromBytes(p.Targets)
		if err != nil {
			return out, fmt.Errorf("%w: targets: %v", ErrRefused, err)
		}
		if err := root.VerifyDelegate(metadata.TARGETS, nt); err != nil {
			return out, fmt.Errorf("%w: targets version %d is not signed by the targets threshold of root version %d: %v", ErrRefused, nt.Signed.Version, root.Signed.Version, err)
		}
		if s.targets != nil && nt.Signed.Version <= s.targets.Signed.Version {
			return out, fmt.Errorf("%w: targets version %d is not above the published version %d (sign again from the newest targets.json)", ErrRefused, nt.Signed.Version, s.targets.Signed.Version)
		}
		if r.Now().After(nt.Signed.Expires) {
			return out, fmt.Errorf("%w: targets version %d expired at %s: sign again", ErrRefused, nt.Signed.Version, nt.Signed.Expires.Format(time.RFC3339))
		}
		for name, tf := range nt.Signed.Targets {
			if !fs.ValidPath(name) || name == "." {
				return out, fmt.Errorf("%w: target name %q is not a plain relative path", ErrRefused, name)
			}
			if tf.Custom == nil {
				return out, fmt.Errorf("%w: target %s has no custom metadata", ErrRefused, name)
			}
			if _, err := firmware.ParseCustom(*tf.Custom); err != nil {
				return out, fmt.Errorf("%w: target %s: %v", ErrRefused, name, err)
			}
			if s.targets != nil {
				if old, ok := s.targets.Signed.Targets[name]; ok && !old.Equal(*tf) {
					return out, fmt.Errorf("%w: target %s is published already with other bytes; published names are immutable", ErrRefused, name)
				}
			}
			dst := filepath.Join(r.Dir, "targets", filepath.FromSlash(name))
			// An artifact already in place counts only if it is these
			// bytes (a refused publish may have left other ones).
			if _, err := os.Stat(dst); err == nil && matches(dst, tf) == nil {
				continue
			}
			src, ok := p.Artifacts[name]
			if !ok {
				return out, fmt.Errorf("%w: target %s is signed but its artifact is neither in the repository nor given", ErrRefused, name)
			}
			if err := copyVerified(src, dst, tf); err != nil {
				return out, fmt.Errorf("%w: artifact of %s: %v", ErrRefused, name, err)
			}
			out.NewArtifacts = append(out.NewArtifacts, name)
		}
		targets, targetsB = nt, p.Targets
	}
	for i, b := range newRoots {
		if err := durable.WriteFile(filepath.Join(r.Dir, fmt.Sprintf("%d.root.json", out.NewRoots[i])), b, 0o644); err != nil {
			return out, err
		}
	}
	changed := !bytes.Equal(targetsB, s.targetsB)
	if targets != nil && changed {
		v := targets.Signed.Version
		if err := durable.WriteFile(filepath.Join(r.Dir, fmt.Sprintf("%d.targets.json", v)), targetsB, 0o644); err != nil {
			return out, err
		}
		if err := durable.WriteFile(filepath.Join(r.Dir, "targets.json"), targetsB, 0o644); err != nil {
			return out, err
		}
	}
	s.root, s.targets, s.targetsB = root, targets, targetsB
	if err := r.sign(s, changed || len(newRoots) > 0, true); err != nil {
		return out, err
	}
	out.RootVersion = root.Signed.Version
	if targets != nil {
		out.TargetsVersion = targets.Signed.Version
	}
	out.SnapshotVersion, out.TimestampVersion = s.snapshot.Signed.Version, s.timestamp.Signed.Version
	r.note(s)
	return out, nil
}

// matches checks that the file at path has tf's length and sha256.
func matches(path string, tf *metadata.TargetFiles) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, tf.Length+1))
	if err != nil {
		return err
	}
	if n != tf.Length || !bytes.Equal(h.Sum(nil), tf.Hashes["sha256"]) {
		return fmt.Errorf("%s does not match its signed length and sha256", path)
	}
	return nil
}

// copyVerified copies src to dst through a temp file in dst's directory,
// checking length and sha256 as it streams, and renames it into place
// only if both match.
func copyVerified(src, dst string, tf *metadata.TargetFiles) error {
	want, ok := tf.Hashes["sha256"]
	if !ok {
		return errors.New("the target has no sha256 hash")
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".upload-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(in, tf.Length+1))
	if err != nil {
		return err
	}
	if n != tf.Length {
		return fmt.Errorf("%s is %d bytes or more, the signed length is %d", src, n, tf.Length)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		return fmt.Errorf("%s does not match the signed sha256 (the wrong file, or one changed after signing)", src)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	return durable.SyncDir(filepath.Dir(dst))
}

// sign writes a new snapshot (when newSnapshot, or when the current one is
// due or no longer verifies under the root) and a new timestamp (when
// newTimestamp or due). s is updated.
func (r *Repo) sign(s *state, newSnapshot, newTimestamp bool) error {
	now := r.Now().UTC()
	due := func(exp time.Time, life time.Duration) bool { return exp.Sub(now) < life/2 }
	if s.snapshot == nil || due(s.snapshot.Signed.Expires, r.SnapshotLifetime) || s.root.VerifyDelegate(metadata.SNAPSHOT, s.snapshot) != nil {
		newSnapshot = true
	}
	if newSnapshot || s.timestamp == nil || due(s.timestamp.Signed.Expires, r.TimestampLifetime) || s.root.VerifyDelegate(metadata.TIMESTAMP, s.timestamp) != nil {
		newTimestamp = true
	}
	if !newTimestamp {
		return nil
	}
	var snapKeys, tsKeys []ed25519.PrivateKey
	var err error
	if snapKeys, err = LoadKeys(r.Online, metadata.SNAPSHOT); err != nil {
		return err
	}
	if tsKeys, err = LoadKeys(r.Online, metadata.TIMESTAMP); err != nil {
		return err
	}
	snap := s.snapshot
	var snapB []byte
	if newSnapshot {
		var v int64 = 1
		if snap != nil {
			v = snap.Signed.Version + 1
		}
		snap = metadata.Snapshot(now.Add(r.SnapshotLifetime).Truncate(time.Second))
		snap.Signed.Version = v
		if s.targets != nil {
			snap.Signed.Meta["targets.json"] = metaOf(s.targets.Signed.Version, s.targetsB)
		} else {
			delete(snap.Signed.Meta, "targets.json")
		}
		if snapB, err = signWith(&s.root.Signed, metadata.SNAPSHOT, snap, snapKeys); err != nil {
			return fmt.Errorf("snapshot (keys in %s): %w", r.Online, err)
		}
		if err := durable.WriteFile(filepath.Join(r.Dir, fmt.Sprintf("%d.snapshot.json", v)), snapB, 0o644); err != nil {
			return err
		}
		if err := durable.WriteFile(filepath.Join(r.Dir, "snapshot.json"), snapB, 0o644); err != nil {
			return err
		}
	} else if snapB, err = os.ReadFile(filepath.Join(r.Dir, "snapshot.json")); err != nil {
		return err
	}
	var tv int64 = 1
	if s.timestamp != nil {
		tv = s.timestamp.Signed.Version + 1
	}
	ts := metadata.Timestamp(now.Add(r.TimestampLifetime).Truncate(time.Second))
	ts.Signed.Version = tv
	ts.Signed.Meta["snapshot.json"] = metaOf(snap.Signed.Version, snapB)
	tsB, err := signWith(&s.root.Signed, metadata.TIMESTAMP, ts, tsKeys)
	if err != nil {
		return fmt.Errorf("timestamp (keys in %s): %w", r.Online, err)
	}
	if err := durable.WriteFile(filepath.Join(r.Dir, "timestamp.json"), tsB, 0o644); err != nil {
		return err
	}
	s.snapshot, s.timestamp = snap, ts
	return nil
}

func metaOf(version int64, b []byte) *metadata.MetaFiles {
	m := metadata.MetaFile(version)
	sum := sha256.Sum256(b)
	m.Length = int64(len(b))
	m.Hashes = metadata.Hashes{"sha256": sum[:]}
	return m
}

// Resign re-signs the snapshot and the timestamp when they are within
// half their lifetime of expiring (or no longer verify under the root,
// after a rotation of their keys), and records every role's expiry for
// Expiries and the warnings.
func (r *Repo) Resign(ctx context.Context) error {
	unlock, err := r.lock()
	if err != nil {
		return err
	}
	defer unlock()
	s, err := r.read()
	if err != nil {
		return err
	}
	if s.root == nil {
		return nil // nothing published yet
	}
	if err := r.sign(s, false, false); err != nil {
		return err
	}
	r.note(s)
	return nil
}

func (r *Repo) note(s *state) {
	e := map[string]time.Time{metadata.ROOT: s.root.Signed.Expires}
	if s.targets != nil {
		e[metadata.TARGETS] = s.targets.Signed.Expires
	}
	if s.snapshot != nil {
		e[metadata.SNAPSHOT] = s.snapshot.Signed.Expires
	}
	if s.timestamp != nil {
		e[metadata.TIMESTAMP] = s.timestamp.Signed.Expires
	}
	r.mu.Lock()
	r.expiries = e
	r.mu.Unlock()
}

// Expiries are the expiry of each role's published metadata, as of the
// last Publish or Resign.
func (r *Repo) Expiries() map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]time.Time, len(r.expiries))
	for k, v := range r.expiries {
		out[k] = v
	}
	return out
}

// Warnings are the roles that expire within WarnBefore of now, each with
// what to do, in role order.
func (r *Repo) Warnings() []string {
	now := r.Now()
	var out []string
	e := r.Expiries()
	for _, role := range append(append([]string{}, OfflineRoles...), OnlineRoles...) {
		exp, ok := e[role]
		if !ok || exp.Sub(now) > r.WarnBefore {
			continue
		}
		fix := "sign the targets again ('cloud release sign') and publish"
		switch role {
		case metadata.ROOT:
			fix = "sign a new root version ('cloud release keys rotate --role root', or with the same keys) and publish"
		case metadata.SNAPSHOT, metadata.TIMESTAMP:
			fix = "the cloud re-signs this role itself; it is failing: check the online keys and the repository directory"
			if exp.Sub(now) > r.TimestampLifetime/4 && role == metadata.TIMESTAMP || exp.Sub(now) > r.SnapshotLifetime/4 && role == metadata.SNAPSHOT {
				continue // short-lived by design, re-signed before half its life
			}
		}
		out = append(out, fmt.Sprintf("%s metadata expires at %s (in %s): %s", role, exp.UTC().Format(time.RFC3339), exp.Sub(now).Round(time.Minute), fix))
	}
	return out
}

// WarnEvery is how often Run repeats the warning of a role near expiry.
const WarnEvery = 6 * time.Hour

// Run re-signs every ResignEvery until ctx ends, logging failures and a
// warning for each role near its expiry (at most once per WarnEvery).
func (r *Repo) Run(ctx context.Context) error {
	t := time.NewTicker(r.ResignEvery)
	defer t.Stop()
	warned := map[string]time.Time{}
	for {
		if err := r.Resign(ctx); err != nil {
			r.Logger.Error("release repository: re-sign failed", "err", err)
		}
		// Once per role per WarnEvery, not at every check.
		now := r.Now()
		for _, w := range r.Warnings() {
			role, _, _ := strings.Cut(w, " ")
			if last, ok := warned[role]; ok && now.Sub(last) < WarnEvery {
				continue
			}
			warned[role] = now
			r.Logger.Warn("release repository: metadata expires soon", "role", role, "warning", w)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RoleStatus is a role's published version and expiry.
type RoleStatus struct {
	Version int64
	Expires time.Time
}

// Status is what the repository holds.
type Status struct {
	Roles   map[string]RoleStatus
	Targets map[string]firmware.Custom
}

// Status reads the repository (and records the expiries for Warnings).
func (r *Repo) Status() (Status, error) {
	unlock, err := r.lock()
	if err != nil {
		return Status{}, err
	}
	s, err := r.read()
	unlock()
	if err != nil {
		return Status{}, err
	}
	st := Status{Roles: map[string]RoleStatus{}, Targets: map[string]firmware.Custom{}}
	if s.root == nil {
		return st, nil
	}
	r.note(s)
	st.Roles[metadata.ROOT] = RoleStatus{s.root.Signed.Version, s.root.Signed.Expires}
	if s.targets != nil {
		st.Roles[metadata.TARGETS] = RoleStatus{s.targets.Signed.Version, s.targets.Signed.Expires}
		for n, tf := range s.targets.Signed.Targets {
			if tf.Custom != nil {
				c, _ := firmware.ParseCustom(*tf.Custom)
				st.Targets[n] = c
			}
		}
	}
	if s.snapshot != nil {
		st.Roles[metadata.SNAPSHOT] = RoleStatus{s.snapshot.Signed.Version, s.snapshot.Signed.Expires}
	}
	if s.timestamp != nil {
		st.Roles[metadata.TIMESTAMP] = RoleStatus{s.timestamp.Signed.Version, s.timestamp.Signed.Expires}
	}
	return st, nil
}
