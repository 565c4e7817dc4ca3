package firmware

import (
	"cmp"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"
)

// Role is one verified role's version and expiry.
type Role struct {
	Version int64     `json:"version"`
	Expires time.Time `json:"expires"`
}

// Verified is the outcome of a successful refresh: what the release
// signers and the online roles vouched for at RefTime.
type Verified struct {
	RefTime   time.Time `json:"ref_time"`
	Root      Role      `json:"root"`
	Timestamp Role      `json:"timestamp"`
	Snapshot  Role      `json:"snapshot"`
	Targets   Role      `json:"targets"`

	targets map[string]Target
}

// Target is a signed target with its custom metadata checked.
type Target struct {
	Name   string            `json:"name"`
	Length int64             `json:"length"`
	Hashes map[string][]byte `json:"hashes"`
	Custom Custom            `json:"custom"`
}

func newVerified(tm *trustedmetadata.TrustedMetadata) (*Verified, error) {
	tg := tm.Targets[metadata.TARGETS]
	v := &Verified{
		RefTime:   tm.RefTime,
		Root:      Role{tm.Root.Signed.Version, tm.Root.Signed.Expires},
		Timestamp: Role{tm.Timestamp.Signed.Version, tm.Timestamp.Signed.Expires},
		Snapshot:  Role{tm.Snapshot.Signed.Version, tm.Snapshot.Signed.Expires},
		Targets:   Role{tg.Signed.Version, tg.Signed.Expires},
		targets:   map[string]Target{},
	}
	for name, tf := range tg.Signed.Targets {
		t := Target{Name: name, Length: tf.Length, Hashes: map[string][]byte{}}
		for alg, h := range tf.Hashes {
			t.Hashes[alg] = slices.Clone([]byte(h))
		}
		var raw []byte
		if tf.Custom != nil {
			raw = *tf.Custom
		}
		c, err := ParseCustom(raw)
		if err != nil {
			// A target we cannot read is not installable; it does not
			// spoil the others.
			continue
		}
		t.Custom = c
		v.targets[name] = t
	}
	return v, nil
}

// Expires is the earliest expiry of the four roles: after it, a new
// refresh is needed before anything installs.
func (v *Verified) Expires() time.Time {
	e := v.Root.Expires
	for _, r := range []Role{v.Timestamp, v.Snapshot, v.Targets} {
		if r.Expires.Before(e) {
			e = r.Expires
		}
	}
	return e
}

// Target returns the named target, or ErrUnknownTarget (also for a target
// whose custom metadata is malformed).
func (v *Verified) Target(name string) (Target, error) {
	t, ok := v.targets[name]
	if !ok {
		return Target{}, fmt.Errorf("%w: %q (targets version %d)", ErrUnknownTarget, name, v.Targets.Version)
	}
	return t, nil
}

// List is every readable target, by release counter then name.
func (v *Verified) List() []Target {
	ts := slices.Collect(maps.Values(v.targets))
	slices.SortFunc(ts, func(a, b Target) int {
		return cmp.Or(cmp.Compare(a.Custom.Release, b.Custom.Release), cmp.Compare(a.Name, b.Name))
	})
	return ts
}

// Running describes the release this edge runs, for the install checks.
type Running struct {
	Version string // semver of the running binary
	Arch    string // GOOS/GOARCH[/variant]; empty skips the arch check
}

// Installable says whether target name may be installed now over running:
// the metadata is unexpired at the current reference time, the target is
// signed, its release is above the floor, the running version is not
// below its min_version, and its arch (if it names one) is ours. The error
// says which check failed and wraps ErrExpired, ErrUnknownTarget,
// ErrDowngrade, ErrTooOld or ErrBadCustom.
func (t *Trust) Installable(v *Verified, name string, running Running) (Target, error) {
	ref := t.RefTime()
	if ref.After(v.Expires()) {
		return Target{}, fmt.Errorf("%w: metadata verified at %s expired at %s (reference time %s); refresh before installing",
			ErrExpired, v.RefTime.Format(time.RFC3339), v.Expires().Format(time.RFC3339), ref.Format(time.RFC3339))
	}
	tg, err := v.Target(name)
	if err != nil {
		return Target{}, err
	}
	// Strictly above: the release at the floor is the committed one, and a
	// release on probation is always above the floor until it commits.
	if floor := t.state.Floor(); tg.Custom.Release <= floor {
		return Target{}, fmt.Errorf("%w: %s is release %d (version %s), the floor is %d; only releases above it install", ErrDowngrade, name, tg.Custom.Release, tg.Custom.Version, floor)
	}
	if tg.Custom.MinVersion != "" {
		rv, err := ParseVersion(running.Version)
		if err != nil {
			return Target{}, fmt.Errorf("running version: %w", err)
		}
		min, _ := ParseVersion(tg.Custom.MinVersion) // checked by ParseCustom
		if rv.Compare(min) < 0 {
			return Target{}, fmt.Errorf("%w: %s needs at least %s, this edge runs %s; install an intermediate release first", ErrTooOld, name, tg.Custom.MinVersion, running.Version)
		}
	}
	if tg.Custom.Arch != "" && running.Arch != "" && !sameArch(tg.Custom.Arch, running.Arch) {
		return Target{}, fmt.Errorf("%w: %s is for %s, this edge is %s", ErrBadCustom, name, tg.Custom.Arch, running.Arch)
	}
	return tg, nil
}

// Verifier returns a writer that hashes what is written to it; Check then
// says whether exactly the target's signed bytes went through.
func (tg Target) Verifier() *Verifier {
	vf := &Verifier{target: tg, hashes: map[string]hash.Hash{}}
	for alg := range tg.Hashes {
		switch alg {
		case "sha256":
			vf.hashes[alg] = sha256.New()
		case "sha512":
			vf.hashes[alg] = sha512.New()
		}
	}
	return vf
}

// Verifier hashes an artifact as it streams (never held in memory).
type Verifier struct {
	target Target
	n      int64
	hashes map[string]hash.Hash
}

// Write hashes p. It never fails; an artifact longer than the target is
// caught by Check, and callers cap what they read at the signed length.
func (vf *Verifier) Write(p []byte) (int, error) {
	vf.n += int64(len(p))
	for _, h := range vf.hashes {
		h.Write(p)
	}
	return len(p), nil
}

// Check is nil when the bytes written are the target's: the signed length
// and every signed hash this package knows (sha256, sha512; at least one
// must be signed).
func (vf *Verifier) Check() error {
	if vf.n != vf.target.Length {
		return fmt.Errorf("%w: %s is %d bytes, signed length %d", ErrArtifact, vf.target.Name, vf.n, vf.target.Length)
	}
	if len(vf.hashes) == 0 {
		return fmt.Errorf("%w: %s has no sha256 or sha512 hash signed", ErrArtifact, vf.target.Name)
	}
	for alg, h := range vf.hashes {
		got := h.Sum(nil)
		if want := vf.target.Hashes[alg]; !slices.Equal(got, want) {
			return fmt.Errorf("%w: %s %s is %s, signed %s", ErrArtifact, vf.target.Name, alg, hex.EncodeToString(got), hex.EncodeToString(want))
		}
	}
	return nil
}

// VerifyArtifact reads r (at most one byte past the signed length) and
// says whether it is the target's artifact.
func (tg Target) VerifyArtifact(r io.Reader) error {
	vf := tg.Verifier()
	if _, err := io.Copy(vf, io.LimitReader(r, tg.Length+1)); err != nil {
		return fmt.Errorf("read artifact %s: %w", tg.Name, err)
	}
	return vf.Check()
}

// sameArch compares GOOS/GOARCH, and the variant (arm's v7) only when both
// name one: a running binary knows its GOARCH but not always its GOARM.
func sameArch(target, running string) bool {
	t, r := strings.Split(target, "/"), strings.Split(running, "/")
	if len(t) < 2 || len(r) < 2 || t[0] != r[0] || t[1] != r[1] {
		return false
	}
	return len(t) < 3 || len(r) < 3 || t[2] == r[2]
}
