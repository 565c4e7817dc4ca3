package firmware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"
)

// Source is where a refresh reads metadata from: the cloud's repository
// over HTTP, or an offline bundle. Fetch returns the named file, reading
// at most max bytes (a longer file is an error): "N.root.json" for the
// root walk, "timestamp.json", then "snapshot.json" and "targets.json", or
// "N.snapshot.json" and "N.targets.json" when the root sets
// consistent_snapshot. A file that is not there is ErrNotFound.
type Source interface {
	Fetch(ctx context.Context, name string, max int64) ([]byte, error)
}

// Defaults for Options.
const (
	DefaultMaxRootRotations = 32
	DefaultMaxMetadataBytes = 1 << 20
)

// Options for Open. Zero values take the defaults, except WriteFile,
// which is required.
type Options struct {
	// WriteFile persists the metadata and the state (see WriteFile).
	WriteFile WriteFile
	// Now is the local clock (time.Now).
	Now func() time.Time
	// MaxRootRotations bounds the root walk of one refresh.
	MaxRootRotations int
	// MaxMetadataBytes bounds each metadata file whose length no role above
	// it has signed (root, timestamp; snapshot and targets when the
	// repository leaves their length out).
	MaxMetadataBytes int64
}

// Trust is the edge's view of the release repository: the trusted root and
// the last verified timestamp, snapshot and targets, cached in a directory
// (root.json, timestamp.json, snapshot.json, targets.json, state.json), and
// the State. Refresh and the checks are safe for concurrent use; refreshes
// are serialised.
type Trust struct {
	dir  string
	opts Options

	state *State

	mu   sync.Mutex // serialises refreshes; guards last
	last *Verified
}

// Init provisions dir with the initial trusted root (root.json of the
// release signers, shipped with the edge or copied at enrollment). It
// refuses a root that is not signed by its own threshold, and a dir that
// already has one: replacing the root is done by rotation, not by Init.
//
// write persists the root (see WriteFile).
func Init(dir string, root []byte, write WriteFile) error {
	if write == nil {
		return errNoWriteFile
	}
	if _, err := trustedmetadata.New(root); err != nil {
		return fmt.Errorf("%w: initial root: %v", ErrUntrusted, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("trust dir: %w", err)
	}
	p := filepath.Join(dir, metadata.ROOT+".json")
	if _, err := os.Stat(p); err == nil {
		return fmt.Errorf("trust dir %s already has a root.json; roots are replaced by rotation", dir)
	}
	return write(p, root, 0o644)
}

// Open opens a trust directory made by Init.
func Open(dir string, opts *Options) (*Trust, error) {
	t := &Trust{dir: dir}
	if opts != nil {
		t.opts = *opts
	}
	if t.opts.WriteFile == nil {
		return nil, errNoWriteFile
	}
	if t.opts.Now == nil {
		t.opts.Now = time.Now
	}
	if t.opts.MaxRootRotations <= 0 {
		t.opts.MaxRootRotations = DefaultMaxRootRotations
	}
	if t.opts.MaxMetadataBytes <= 0 {
		t.opts.MaxMetadataBytes = DefaultMaxMetadataBytes
	}
	if _, err := os.Stat(filepath.Join(dir, metadata.ROOT+".json")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s has no root.json; provision it with the release root (docs/OTA.md)", ErrNoTrust, dir)
		}
		return nil, fmt.Errorf("open trust %s: %w", dir, err)
	}
	st, err := OpenState(filepath.Join(dir, stateFile), t.opts.WriteFile)
	if err != nil {
		return nil, err
	}
	t.state = st
	return t, nil
}

// Dir is the trust directory.
func (t *Trust) Dir() string { return t.dir }

// State is the persisted floor and newest verified time.
func (t *Trust) State() *State { return t.state }

// RefTime is the reference time a refresh starting now would use: the
// later of the local clock and the newest verified reference time.
func (t *Trust) RefTime() time.Time {
	now := t.opts.Now().UTC()
	if v := t.state.Verified(); v.After(now) {
		return v
	}
	return now
}

// Last is the outcome of the last successful refresh of this process, or
// nil.
func (t *Trust) Last() *Verified {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

// Refresh runs the TUF client workflow against src: the root walk (each
// new root signed by the old root's threshold and its own), then
// timestamp, snapshot and targets, each checked against the role above it
// and against the cached copy for rollbacks. The reference time is fixed
// once, at the start. Every verified file is cached before the next step.
// On success the newest verified time advances and the result is returned;
// any failure (ErrExpired, ErrUntrusted, a fetch error) leaves the previous
// cache in place and installs must not proceed.
func (t *Trust) Refresh(ctx context.Context, src Source) (*Verified, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := &refresh{t: t, src: src, ref: t.RefTime()}
	v, err := r.run(ctx)
	if err != nil {
		return nil, err
	}
	if err := t.state.advanceVerified(r.ref); err != nil {
		return nil, err
	}
	t.last = v
	return v, nil
}

// refresh is one run of the client workflow; each step is a method.
type refresh struct {
	t   *Trust
	src Source
	ref time.Time
	tm  *trustedmetadata.TrustedMetadata
}

func (r *refresh) run(ctx context.Context) (*Verified, error) {
	if err := r.root(ctx); err != nil {
		return nil, err
	}
	if err := r.timestamp(ctx); err != nil {
		return nil, err
	}
	if err := r.snapshot(ctx); err != nil {
		return nil, err
	}
	if err := r.targets(ctx); err != nil {
		return nil, err
	}
	return newVerified(r.tm)
}

func (r *refresh) path(name string) string { return filepath.Join(r.t.dir, name) }

func (r *refresh) cache(name string, data []byte) error {
	return r.t.opts.WriteFile(r.path(name), data, 0o644)
}

// root loads the trusted root and walks N+1.root.json until the source
// has no more.
func (r *refresh) root(ctx context.Context) error {
	data, err := os.ReadFile(r.path("root.json"))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoTrust, err)
	}
	tm, err := trustedmetadata.New(data)
	if err != nil {
		return fmt.Errorf("%w: cached root.json: %v", ErrUntrusted, err)
	}
	tm.RefTime = r.ref
	r.tm = tm
	old := tm.Root
	for range r.t.opts.MaxRootRotations {
		next := tm.Root.Signed.Version + 1
		name := fmt.Sprintf("%d.root.json", next)
		data, err := r.src.Fetch(ctx, name, r.t.opts.MaxMetadataBytes)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("fetch %s: %w", name, err)
		}
		if _, err := tm.UpdateRoot(data); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrUntrusted, name, err)
		}
		if err := r.cache("root.json", data); err != nil {
			return err
		}
	}
	if tm.Root.Signed.IsExpired(r.ref) {
		return fmt.Errorf("%w: root version %d expired at %s (reference time %s); the release signers must publish a new root",
			ErrExpired, tm.Root.Signed.Version, tm.Root.Signed.Expires.Format(time.RFC3339), r.ref.Format(time.RFC3339))
	}
	// TUF 5.3.11: when the timestamp or snapshot keys were rotated, the
	// cached copies signed by the old keys can no longer serve as rollback
	// references (they may carry versions a compromised key fast-forwarded).
	if old.Signed.Version != tm.Root.Signed.Version {
		if !sameKeys(old.Signed, tm.Root.Signed, metadata.TIMESTAMP) {
			_ = os.Remove(r.path("timestamp.json"))
		}
		if !sameKeys(old.Signed, tm.Root.Signed, metadata.SNAPSHOT) {
			_ = os.Remove(r.path("timestamp.json"))
			_ = os.Remove(r.path("snapshot.json"))
		}
	}
	return nil
}

func sameKeys(a, b metadata.RootType, role string) bool {
	ra, rb := a.Roles[role], b.Roles[role]
	if ra == nil || rb == nil {
		return false
	}
	x, y := slices.Clone(ra.KeyIDs), slices.Clone(rb.KeyIDs)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// timestamp loads the cached timestamp as the rollback reference, then the
// repository's. A repository that serves the same version again (a freeze,
// or simply nothing new) leaves the cached one in force, whose expiry then
// decides.
func (r *refresh) timestamp(ctx context.Context) error {
	if data, err := os.ReadFile(r.path("timestamp.json")); err == nil {
		// An expired cached timestamp still loads (go-tuf keeps it as the
		// rollback reference); a cached one that no longer verifies is
		// dropped.
		if _, err := r.tm.UpdateTimestamp(data); err != nil && !errors.Is(err, &metadata.ErrExpiredMetadata{}) {
			_ = os.Remove(r.path("timestamp.json"))
		}
	}
	data, err := r.src.Fetch(ctx, "timestamp.json", r.t.opts.MaxMetadataBytes)
	if err != nil {
		return fmt.Errorf("fetch timestamp.json: %w", err)
	}
	_, err = r.tm.UpdateTimestamp(data)
	switch {
	case err == nil:
		if err := r.cache("timestamp.json", data); err != nil {
			return err
		}
	case errors.Is(err, &metadata.ErrEqualVersionNumber{}):
		// nothing new: the cached one stays
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		return r.expired("timestamp", r.tm.Timestamp.Signed.Version, r.tm.Timestamp.Signed.Expires)
	default:
		return fmt.Errorf("%w: timestamp.json: %v", ErrUntrusted, err)
	}
	if r.tm.Timestamp.Signed.IsExpired(r.ref) {
		return r.expired("timestamp", r.tm.Timestamp.Signed.Version, r.tm.Timestamp.Signed.Expires)
	}
	return nil
}

func (r *refresh) expired(role string, version int64, at time.Time) error {
	return fmt.Errorf("%w: %s version %d expired at %s (reference time %s); new installs are blocked until the repository publishes fresh metadata",
		ErrExpired, role, version, at.Format(time.RFC3339), r.ref.Format(time.RFC3339))
}

// snapshot uses the cached snapshot when it is still the one the
// timestamp names (and unexpired), else fetches the repository's.
func (r *refresh) snapshot(ctx context.Context) error {
	if data, err := os.ReadFile(r.path("snapshot.json")); err == nil {
		if _, err := r.tm.UpdateSnapshot(data, true); err == nil {
			return nil
		}
	}
	meta := r.tm.Timestamp.Signed.Meta["snapshot.json"]
	if meta == nil {
		return fmt.Errorf("%w: timestamp.json names no snapshot.json", ErrUntrusted)
	}
	name := r.name("snapshot.json", meta.Version)
	data, err := r.src.Fetch(ctx, name, r.limit(meta.Length))
	if err != nil {
		return fmt.Errorf("fetch %s: %w", name, err)
	}
	if _, err := r.tm.UpdateSnapshot(data, false); err != nil {
		if errors.Is(err, &metadata.ErrExpiredMetadata{}) {
			return r.expired("snapshot", r.tm.Snapshot.Signed.Version, r.tm.Snapshot.Signed.Expires)
		}
		return fmt.Errorf("%w: snapshot.json: %v", ErrUntrusted, err)
	}
	return r.cache("snapshot.json", data)
}

// targets uses the cached targets when the snapshot still names its
// version (and it is unexpired), else fetches the repository's.
func (r *refresh) targets(ctx context.Context) error {
	if data, err := os.ReadFile(r.path("targets.json")); err == nil {
		if _, err := r.tm.UpdateTargets(data); err == nil {
			return nil
		}
	}
	meta := r.tm.Snapshot.Signed.Meta["targets.json"]
	if meta == nil {
		return fmt.Errorf("%w: snapshot.json names no targets.json", ErrUntrusted)
	}
	name := r.name("targets.json", meta.Version)
	data, err := r.src.Fetch(ctx, name, r.limit(meta.Length))
	if err != nil {
		return fmt.Errorf("fetch %s: %w", name, err)
	}
	if _, err := r.tm.UpdateTargets(data); err != nil {
		if errors.Is(err, &metadata.ErrExpiredMetadata{}) {
			var m *metadata.Metadata[metadata.TargetsType]
			if m, _ = metadata.Targets().FromBytes(data); m != nil {
				return r.expired("targets", m.Signed.Version, m.Signed.Expires)
			}
		}
		return fmt.Errorf("%w: targets.json: %v", ErrUntrusted, err)
	}
	return r.cache("targets.json", data)
}

// name is the file to fetch for a role: with consistent snapshots (the
// root says so) the version the role above signed, "3.snapshot.json", so a
// repository can publish a new set while edges read the old one.
func (r *refresh) name(file string, version int64) string {
	if r.tm.Root.Signed.ConsistentSnapshot {
		return fmt.Sprintf("%d.%s", version, file)
	}
	return file
}

func (r *refresh) limit(signed int64) int64 {
	if signed > 0 {
		return signed
	}
	return r.t.opts.MaxMetadataBytes
}

// Cached is the version and expiry of each role as cached in the trust
// directory, for display (`edge ota status`). It verifies nothing: only
// Refresh says what is trusted. Roles not cached are absent.
func (t *Trust) Cached() map[string]Role {
	out := map[string]Role{}
	read := func(role string) {
		b, err := os.ReadFile(filepath.Join(t.dir, role+".json"))
		if err != nil {
			return
		}
		var m struct {
			Signed struct {
				Version int64     `json:"version"`
				Expires time.Time `json:"expires"`
			} `json:"signed"`
		}
		if json.Unmarshal(b, &m) == nil {
			out[role] = Role{Version: m.Signed.Version, Expires: m.Signed.Expires}
		}
	}
	for _, role := range []string{metadata.ROOT, metadata.TIMESTAMP, metadata.SNAPSHOT, metadata.TARGETS} {
		read(role)
	}
	return out
}
