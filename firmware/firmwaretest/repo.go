// Package firmwaretest builds signed TUF release repositories in a temp
// directory for tests, with keys made in the test. It is a tool for tests
// of firmware and of its users (edge/ota); nothing in it is for production.
package firmwaretest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
)

// Roles are the four top-level roles, root first.
var Roles = []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP}

// Options for New.
type Options struct {
	// Now is the base of every expiry (default: time.Now at New).
	Now time.Time
	// Keys per role (default 1 each) and Threshold per role (default 1).
	Keys      map[string]int
	Threshold map[string]int
	// NoConsistentSnapshot makes a root without consistent_snapshot, so
	// clients read snapshot.json and targets.json by those names.
	NoConsistentSnapshot bool
}

// Repo is a release repository on disk: Dir holds N.root.json,
// timestamp.json, snapshot.json and targets.json (and, for consistent
// snapshots, which the root sets by default, N.snapshot.json and
// N.targets.json) and targets/<name>, as a server would serve them.
type Repo struct {
	tb  testing.TB
	Dir string
	Now time.Time

	Root      *metadata.Metadata[metadata.RootType]
	Targets   *metadata.Metadata[metadata.TargetsType]
	Snapshot  *metadata.Metadata[metadata.SnapshotType]
	Timestamp *metadata.Metadata[metadata.TimestampType]

	// Keys are the private keys of each role's key ids in the current root.
	Keys map[string][]ed25519.PrivateKey
	// SignWith, when set for a role, replaces Keys[role] in Publish (to
	// sign below a threshold, or with a revoked key).
	SignWith map[string][]ed25519.PrivateKey
	// Expires, when set for a role, is used by the next Publish instead of
	// Now plus the role's default lifetime.
	Expires map[string]time.Time

	// Published keeps every signed version of every file by name and
	// version, to replay old ones.
	Published map[string]map[int64][]byte
}

// Default lifetimes from Now.
var Lifetime = map[string]time.Duration{
	metadata.ROOT:      365 * 24 * time.Hour,
	metadata.TARGETS:   90 * 24 * time.Hour,
	metadata.SNAPSHOT:  7 * 24 * time.Hour,
	metadata.TIMESTAMP: 24 * time.Hour,
}

// New makes a repository with root version 1 published (1.root.json) and
// empty targets published.
func New(tb testing.TB, opts Options) *Repo {
	tb.Helper()
	r := &Repo{
		tb:        tb,
		Dir:       tb.TempDir(),
		Now:       opts.Now,
		Keys:      map[string][]ed25519.PrivateKey{},
		SignWith:  map[string][]ed25519.PrivateKey{},
		Expires:   map[string]time.Time{},
		Published: map[string]map[int64][]byte{},
	}
	if r.Now.IsZero() {
		r.Now = time.Now().UTC().Truncate(time.Second)
	}
	r.Root = metadata.Root(r.expiry(metadata.ROOT))
	r.Root.Signed.ConsistentSnapshot = !opts.NoConsistentSnapshot
	for _, role := range Roles {
		n, th := opts.Keys[role], opts.Threshold[role]
		if n == 0 {
			n = 1
		}
		if th == 0 {
			th = 1
		}
		r.Root.Signed.Roles[role].Threshold = th
		for range n {
			r.addKey(role, NewKey(tb))
		}
	}
	r.publishRoot(nil)
	r.Targets = metadata.Targets(r.expiry(metadata.TARGETS))
	r.Targets.Signed.Version = 0
	r.Snapshot = metadata.Snapshot(r.expiry(metadata.SNAPSHOT))
	r.Snapshot.Signed.Version = 0
	r.Timestamp = metadata.Timestamp(r.expiry(metadata.TIMESTAMP))
	r.Timestamp.Signed.Version = 0
	r.Publish()
	return r
}

// NewKey makes an Ed25519 key.
func NewKey(tb testing.TB) ed25519.PrivateKey {
	tb.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func (r *Repo) expiry(role string) time.Time {
	if e, ok := r.Expires[role]; ok {
		return e
	}
	return r.Now.Add(Lifetime[role])
}

func (r *Repo) addKey(role string, k ed25519.PrivateKey) {
	r.tb.Helper()
	key, err := metadata.KeyFromPublicKey(k.Public())
	if err != nil {
		r.tb.Fatal(err)
	}
	if err := r.Root.Signed.AddKey(key, role); err != nil {
		r.tb.Fatal(err)
	}
	r.Keys[role] = append(r.Keys[role], k)
}

type signable interface {
	Sign(signature.Signer) (*metadata.Signature, error)
	ClearSignatures()
	ToBytes(bool) ([]byte, error)
}

// Sign signs m with keys (replacing its signatures) and returns its bytes.
func (r *Repo) Sign(m signable, keys ...ed25519.PrivateKey) []byte {
	r.tb.Helper()
	m.ClearSignatures()
	for _, k := range keys {
		s, err := signature.LoadED25519Signer(k)
		if err != nil {
			r.tb.Fatal(err)
		}
		if _, err := m.Sign(s); err != nil {
			r.tb.Fatal(err)
		}
	}
	b, err := m.ToBytes(false)
	if err != nil {
		r.tb.Fatal(err)
	}
	return b
}

func (r *Repo) signers(role string) []ed25519.PrivateKey {
	if k, ok := r.SignWith[role]; ok {
		return k
	}
	return r.Keys[role]
}

// Write puts data in the repository as name, and records it.
func (r *Repo) Write(name string, version int64, data []byte) {
	r.tb.Helper()
	p := filepath.Join(r.Dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.tb.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		r.tb.Fatal(err)
	}
	if r.Published[name] == nil {
		r.Published[name] = map[int64][]byte{}
	}
	r.Published[name][version] = data
}

// RootBytes is the signed root of the given version (the initial trusted
// root is RootBytes(1)).
func (r *Repo) RootBytes(version int64) []byte {
	b, ok := r.Published["root.json"][version]
	if !ok {
		r.tb.Fatalf("no root version %d published", version)
	}
	return b
}

func (r *Repo) publishRoot(old []ed25519.PrivateKey) {
	var keys []ed25519.PrivateKey
	seen := map[string]bool{}
	for _, k := range append(append([]ed25519.PrivateKey{}, old...), r.signers(metadata.ROOT)...) {
		if !seen[string(k.Public().(ed25519.PublicKey))] {
			seen[string(k.Public().(ed25519.PublicKey))] = true
			keys = append(keys, k)
		}
	}
	r.writeRoot(r.Sign(r.Root, keys...))
}

func (r *Repo) writeRoot(b []byte) {
	v := r.Root.Signed.Version
	r.Write(fmt.Sprintf("%d.root.json", v), v, b)
	if r.Published["root.json"] == nil {
		r.Published["root.json"] = map[int64][]byte{}
	}
	r.Published["root.json"][v] = b
}

// RotateRoot replaces role's keys with n new ones and the given threshold,
// and publishes the next root version signed by the old root keys and the
// new ones (both thresholds, as TUF requires). It returns the old keys.
func (r *Repo) RotateRoot(role string, n, threshold int) []ed25519.PrivateKey {
	r.tb.Helper()
	oldRoot := r.signers(metadata.ROOT)
	old := r.Keys[role]
	for _, k := range old {
		key, _ := metadata.KeyFromPublicKey(k.Public())
		id, _ := key.ID()
		if err := r.Root.Signed.RevokeKey(id, role); err != nil {
			r.tb.Fatal(err)
		}
	}
	r.Keys[role] = nil
	for range n {
		r.addKey(role, NewKey(r.tb))
	}
	r.Root.Signed.Roles[role].Threshold = threshold
	r.Root.Signed.Version++
	r.Root.Signed.Expires = r.expiry(metadata.ROOT)
	r.publishRootWith(oldRoot)
	return old
}

// ResignRoot signs the current root again with SignWith[root] (to publish
// a root signed by the wrong keys) and rewrites it.
func (r *Repo) ResignRoot() {
	r.tb.Helper()
	r.writeRoot(r.Sign(r.Root, r.SignWith[metadata.ROOT]...))
}

// publishRootWith signs the current root with old plus the current root
// keys (SignWith[root] replaces both when set).
func (r *Repo) publishRootWith(old []ed25519.PrivateKey) {
	if k, ok := r.SignWith[metadata.ROOT]; ok {
		r.writeRoot(r.Sign(r.Root, k...))
		return
	}
	r.publishRoot(old)
}

// AddTarget writes data as targets/<name> and lists it in the targets
// role (signed at the next Publish) with its length, sha256 and c.
func (r *Repo) AddTarget(name string, data []byte, c firmware.Custom) {
	r.tb.Helper()
	tf, err := metadata.TargetFile().FromBytes(name, data, "sha256")
	if err != nil {
		r.tb.Fatal(err)
	}
	raw := json.RawMessage(c.JSON())
	tf.Custom = &raw
	r.Targets.Signed.Targets[name] = tf
	r.Write("targets/"+name, 0, data)
}

// Publish signs a new version of targets, snapshot and timestamp (each
// with SignWith or Keys, each expiring at Expires or Now plus Lifetime)
// and writes them.
func (r *Repo) Publish() {
	r.tb.Helper()
	r.Targets.Signed.Version++
	r.Targets.Signed.Expires = r.expiry(metadata.TARGETS)
	tb := r.Sign(r.Targets, r.signers(metadata.TARGETS)...)
	r.Write("targets.json", r.Targets.Signed.Version, tb)
	r.Write(fmt.Sprintf("%d.targets.json", r.Targets.Signed.Version), r.Targets.Signed.Version, tb)

	r.Snapshot.Signed.Version++
	r.Snapshot.Signed.Expires = r.expiry(metadata.SNAPSHOT)
	r.Snapshot.Signed.Meta["targets.json"] = r.metaFile(r.Targets.Signed.Version, tb)
	sb := r.Sign(r.Snapshot, r.signers(metadata.SNAPSHOT)...)
	r.Write("snapshot.json", r.Snapshot.Signed.Version, sb)
	r.Write(fmt.Sprintf("%d.snapshot.json", r.Snapshot.Signed.Version), r.Snapshot.Signed.Version, sb)

	r.Timestamp.Signed.Version++
	r.Timestamp.Signed.Expires = r.expiry(metadata.TIMESTAMP)
	r.Timestamp.Signed.Meta["snapshot.json"] = r.metaFile(r.Snapshot.Signed.Version, sb)
	r.Write("timestamp.json", r.Timestamp.Signed.Version, r.Sign(r.Timestamp, r.signers(metadata.TIMESTAMP)...))
}

func (r *Repo) metaFile(version int64, data []byte) *metadata.MetaFiles {
	m := metadata.MetaFile(version)
	tf, err := metadata.TargetFile().FromBytes("", data, "sha256")
	if err != nil {
		r.tb.Fatal(err)
	}
	m.Length = tf.Length
	m.Hashes = tf.Hashes
	return m
}

// Source is the repository as a firmware.Source.
func (r *Repo) Source() firmware.Source { return firmware.DirSource(r.Dir) }

// Trust provisions a new trust directory (in tb's temp dir) with root
// version 1 and opens it with the clock now.
func (r *Repo) Trust(tb testing.TB, now func() time.Time) *firmware.Trust {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "trust")
	if err := firmware.Init(dir, r.Published["root.json"][1], durable.WriteFile); err != nil {
		tb.Fatal(err)
	}
	t, err := firmware.Open(dir, &firmware.Options{Now: now, WriteFile: durable.WriteFile})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// Bundle is an offline bundle of target name with the repository's
// current metadata (every root from version 2 on).
func (r *Repo) Bundle(name string) []byte {
	r.tb.Helper()
	meta := map[string][]byte{}
	for v := int64(2); v <= r.Root.Signed.Version; v++ {
		meta[fmt.Sprintf("%d.root.json", v)] = r.read(fmt.Sprintf("%d.root.json", v))
	}
	for _, n := range []string{"timestamp.json", "snapshot.json", "targets.json"} {
		meta[n] = r.read(n)
	}
	art := r.read("targets/" + name)
	var buf bytes.Buffer
	if err := firmware.WriteBundle(&buf, firmware.Bundle{Metadata: meta, Target: name, Length: int64(len(art)), Artifact: bytes.NewReader(art)}); err != nil {
		r.tb.Fatal(err)
	}
	return buf.Bytes()
}

func (r *Repo) read(name string) []byte {
	r.tb.Helper()
	b, err := os.ReadFile(filepath.Join(r.Dir, filepath.FromSlash(name)))
	if err != nil {
		r.tb.Fatal(err)
	}
	return b
}
