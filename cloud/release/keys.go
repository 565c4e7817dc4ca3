package release

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/internal/keyfile"
)

// Errors callers branch on.
var (
	// ErrBelowThreshold: fewer keys of a role are at hand than its
	// threshold, so what they sign would be refused by every edge.
	ErrBelowThreshold = errors.New("not enough keys for the role's threshold")
	// ErrRefused: a publish was refused (a bad signature, a version that
	// does not grow, an artifact that does not match its target).
	ErrRefused = errors.New("publish refused")
)

// Roles held offline and online.
var (
	OfflineRoles = []string{metadata.ROOT, metadata.TARGETS}
	OnlineRoles  = []string{metadata.SNAPSHOT, metadata.TIMESTAMP}
)

// Default lifetimes of each role's metadata.
var DefaultLifetime = map[string]time.Duration{
	metadata.ROOT:      365 * 24 * time.Hour,
	metadata.TARGETS:   90 * 24 * time.Hour,
	metadata.SNAPSHOT:  7 * 24 * time.Hour,
	metadata.TIMESTAMP: 24 * time.Hour,
}

// RoleKeys says how many keys a role gets and how many must sign.
type RoleKeys struct {
	Keys      int
	Threshold int
}

// InitOptions for KeysInit. Zero values: one key and threshold 1 per role,
// DefaultLifetime for the root, time.Now.
type InitOptions struct {
	Roles        map[string]RoleKeys
	RootLifetime time.Duration
	Now          func() time.Time
}

// Fingerprint is a key as printed to the signers: the role, the TUF key id
// (sha256 of the canonical public key) and the file that holds it.
type Fingerprint struct {
	Role  string
	KeyID string
	File  string
}

// KeysInit makes the release keys: the root and targets keys in offline
// (with 1.root.json, signed by the root threshold) and the snapshot and
// timestamp keys in online. It refuses directories that hold keys
// already. Every key file is 0600, every directory 0700.
func KeysInit(offline, online string, o InitOptions) ([]Fingerprint, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RootLifetime == 0 {
		o.RootLifetime = DefaultLifetime[metadata.ROOT]
	}
	for _, d := range []string{offline, online} {
		if ks, _ := filepath.Glob(filepath.Join(d, "*.key")); len(ks) > 0 {
			return nil, fmt.Errorf("keys init: %s holds keys already (%s); to change keys use 'cloud release keys rotate'", d, filepath.Base(ks[0]))
		}
	}
	if filepath.Clean(offline) == filepath.Clean(online) {
		return nil, fmt.Errorf("keys init: the offline and online key directories must differ (the online keys go to the cloud, the offline ones never do)")
	}
	root := metadata.Root(o.Now().UTC().Add(o.RootLifetime).Truncate(time.Second))
	root.Signed.ConsistentSnapshot = true
	var fps []Fingerprint
	for _, role := range append(append([]string{}, OfflineRoles...), OnlineRoles...) {
		rk := o.Roles[role]
		if rk.Keys == 0 {
			rk.Keys = 1
		}
		if rk.Threshold == 0 {
			rk.Threshold = 1
		}
		if rk.Threshold > rk.Keys || rk.Threshold < 1 {
			return nil, fmt.Errorf("keys init: %s: threshold %d with %d keys (want 1 <= threshold <= keys)", role, rk.Threshold, rk.Keys)
		}
		dir := offline
		if isOnline(role) {
			dir = online
		}
		root.Signed.Roles[role].Threshold = rk.Threshold
		for range rk.Keys {
			fp, err := newKey(root, role, dir)
			if err != nil {
				return nil, err
			}
			fps = append(fps, fp)
		}
	}
	keys, err := LoadKeys(offline, metadata.ROOT)
	if err != nil {
		return nil, err
	}
	b, err := signRoot(root, keys)
	if err != nil {
		return nil, err
	}
	if err := writeRoot(offline, 1, b); err != nil {
		return nil, err
	}
	return fps, nil
}

func isOnline(role string) bool { return role == metadata.SNAPSHOT || role == metadata.TIMESTAMP }

func newKey(root *metadata.Metadata[metadata.RootType], role, dir string) (Fingerprint, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Fingerprint{}, err
	}
	key, err := metadata.KeyFromPublicKey(k.Public())
	if err != nil {
		return Fingerprint{}, err
	}
	id, err := key.ID()
	if err != nil {
		return Fingerprint{}, err
	}
	if err := root.Signed.AddKey(key, role); err != nil {
		return Fingerprint{}, err
	}
	path := filepath.Join(dir, role+"-"+id+".key")
	if err := keyfile.Save(path, k); err != nil {
		return Fingerprint{}, fmt.Errorf("save %s key: %w", role, err)
	}
	return Fingerprint{Role: role, KeyID: id, File: path}, nil
}

// LoadKeys reads every key of role in dir (files role-*.key), sorted by
// file name.
func LoadKeys(dir, role string) ([]ed25519.PrivateKey, error) {
	files, err := filepath.Glob(filepath.Join(dir, role+"-*.key"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []ed25519.PrivateKey
	for _, f := range files {
		k, err := keyfile.Load(f)
		if err != nil {
			return nil, fmt.Errorf("%s key: %w", role, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// keyID is the TUF id of k's public key.
func keyID(k ed25519.PrivateKey) string {
	key, err := metadata.KeyFromPublicKey(k.Public())
	if err != nil {
		return ""
	}
	id, _ := key.ID()
	return id
}

type signable interface {
	Sign(signature.Signer) (*metadata.Signature, error)
	ClearSignatures()
	ToBytes(bool) ([]byte, error)
}

// signWith signs m with those of keys that root lists for role, and
// refuses when they are fewer than its threshold.
func signWith(root *metadata.RootType, role string, m signable, keys []ed25519.PrivateKey) ([]byte, error) {
	r := root.Roles[role]
	m.ClearSignatures()
	n := 0
	for _, k := range keys {
		id := keyID(k)
		listed := false
		for _, want := range r.KeyIDs {
			listed = listed || want == id
		}
		if !listed {
			continue
		}
		s, err := signature.LoadED25519Signer(k)
		if err != nil {
			return nil, err
		}
		if _, err := m.Sign(s); err != nil {
			return nil, fmt.Errorf("sign %s: %w", role, err)
		}
		n++
	}
	if n < r.Threshold {
		return nil, fmt.Errorf("%w: %s needs %d signatures and %d of the keys at hand are listed in root version %d", ErrBelowThreshold, role, r.Threshold, n, root.Version)
	}
	return m.ToBytes(true)
}

func signRoot(root *metadata.Metadata[metadata.RootType], keys []ed25519.PrivateKey) ([]byte, error) {
	return signWith(&root.Signed, metadata.ROOT, root, keys)
}

func writeRoot(dir string, version int64, b []byte) error {
	if err := durable.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.root.json", version)), b, 0o644); err != nil {
		return fmt.Errorf("write root version %d: %w", version, err)
	}
	return durable.WriteFile(filepath.Join(dir, "root.json"), b, 0o644)
}

// LoadRoot reads the newest root in dir (root.json).
func LoadRoot(dir string) (*metadata.Metadata[metadata.RootType], []byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, "root.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("no root.json in %s: run 'cloud release keys init' first", dir)
	}
	if err != nil {
		return nil, nil, err
	}
	r, err := metadata.Root().FromBytes(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s/root.json: %w", dir, err)
	}
	return r, b, nil
}

// RotateOptions for Rotate.
type RotateOptions struct {
	Role      string // the role whose keys are replaced
	Keys      int    // new keys (default 1)
	Threshold int    // new threshold (default 1)
	Lifetime  time.Duration
	Now       func() time.Time
}

// Rotate replaces every key of a role with new ones (in offline for root
// and targets, in online for snapshot and timestamp) and signs the next
// root version with the threshold of the current root keys and of the new
// ones, as TUF requires for an edge to follow it. The old key files of the
// role are renamed to *.key.retired (kept for the record, never loaded).
func Rotate(offline, online string, o RotateOptions) ([]Fingerprint, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Keys == 0 {
		o.Keys = 1
	}
	if o.Threshold == 0 {
		o.Threshold = 1
	}
	if o.Lifetime == 0 {
		o.Lifetime = DefaultLifetime[metadata.ROOT]
	}
	if o.Threshold > o.Keys {
		return nil, fmt.Errorf("keys rotate: threshold %d with %d keys", o.Threshold, o.Keys)
	}
	root, _, err := LoadRoot(offline)
	if err != nil {
		return nil, err
	}
	r, ok := root.Signed.Roles[o.Role]
	if !ok {
		return nil, fmt.Errorf("keys rotate: no role %q (one of root, targets, snapshot, timestamp)", o.Role)
	}
	oldRoot, err := LoadKeys(offline, metadata.ROOT)
	if err != nil {
		return nil, err
	}
	dir := offline
	if isOnline(o.Role) {
		dir = online
	}
	oldFiles, _ := filepath.Glob(filepath.Join(dir, o.Role+"-*.key"))
	for _, id := range append([]string{}, r.KeyIDs...) {
		if err := root.Signed.RevokeKey(id, o.Role); err != nil {
			return nil, fmt.Errorf("keys rotate: revoke %s key %s: %w", o.Role, id, err)
		}
	}
	// Sign with the old root keys first (checked against the old root),
	// then add the new ones.
	prev, _, _ := LoadRoot(offline)
	root.Signed.Roles[o.Role].Threshold = o.Threshold
	var fps []Fingerprint
	staged := filepath.Join(dir, ".rotate-"+o.Role)
	if err := os.MkdirAll(staged, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(staged)
	for range o.Keys {
		fp, err := newKey(root, o.Role, staged)
		if err != nil {
			return nil, err
		}
		fps = append(fps, fp)
	}
	root.Signed.Version++
	root.Signed.Expires = o.Now().UTC().Add(o.Lifetime).Truncate(time.Second)
	signers := oldRoot
	if o.Role == metadata.ROOT {
		newKeys, err := LoadKeys(staged, metadata.ROOT)
		if err != nil {
			return nil, err
		}
		signers = append(append([]ed25519.PrivateKey{}, oldRoot...), newKeys...)
	}
	// Sign with the keys the old root lists and those the new one lists,
	// then check both thresholds.
	root.ClearSignatures()
	for _, k := range signers {
		id := keyID(k)
		if !slices.Contains(prev.Signed.Roles[metadata.ROOT].KeyIDs, id) && !slices.Contains(root.Signed.Roles[metadata.ROOT].KeyIDs, id) {
			continue
		}
		s, err := signature.LoadED25519Signer(k)
		if err != nil {
			return nil, err
		}
		if _, err := root.Sign(s); err != nil {
			return nil, err
		}
	}
	b, err := root.ToBytes(true)
	if err != nil {
		return nil, err
	}
	if err := root.VerifyDelegate(metadata.ROOT, mustRoot(b)); err != nil {
		return nil, fmt.Errorf("%w: the new root is not signed by its own threshold: %v", ErrBelowThreshold, err)
	}
	if err := prev.VerifyDelegate(metadata.ROOT, mustRoot(b)); err != nil {
		return nil, fmt.Errorf("%w: the new root is not signed by the threshold of root version %d: %v", ErrBelowThreshold, prev.Signed.Version, err)
	}
	for _, f := range oldFiles {
		if err := os.Rename(f, f+".retired"); err != nil {
			return nil, err
		}
	}
	for i, fp := range fps {
		dst := filepath.Join(dir, filepath.Base(fp.File))
		if err := os.Rename(fp.File, dst); err != nil {
			return nil, err
		}
		fps[i].File = dst
	}
	if err := durable.SyncDir(dir); err != nil {
		return nil, err
	}
	if err := writeRoot(offline, root.Signed.Version, b); err != nil {
		return nil, err
	}
	return fps, nil
}

func mustRoot(b []byte) *metadata.Metadata[metadata.RootType] {
	r, err := metadata.Root().FromBytes(b)
	if err != nil {
		return metadata.Root()
	}
	return r
}

// targetName is the default name of an artifact's target.
func targetName(version, arch string) string {
	if arch == "" {
		return "edge-" + version
	}
	return "edge-" + version + "-" + strings.ReplaceAll(arch, "/", "-")
}
