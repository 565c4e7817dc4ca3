package release

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
)

// SignOptions for Sign.
type SignOptions struct {
	// Name of the target (default edge-<version>[-<arch with dashes>]).
	Name string
	// Custom is the signed custom metadata; Release 0 means one above the
	// highest release already in targets.json.
	Custom firmware.Custom
	// Lifetime of the targets metadata (DefaultLifetime[targets]).
	Lifetime time.Duration
	Now      func() time.Time
}

// Signed is what Sign made.
type Signed struct {
	Name    string
	Target  *metadata.TargetFiles
	Custom  firmware.Custom
	Version int64 // of the targets metadata
	File    string
}

// Sign adds artifact as a target to the signers' targets.json in offline
// and signs the next version of it with the targets keys there, offline:
// no database, no network. The artifact is hashed as a stream. A name
// already signed with other bytes is refused (published names are
// immutable); the same bytes under the same name only re-sign.
func Sign(offline, artifact string, o SignOptions) (Signed, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Lifetime == 0 {
		o.Lifetime = DefaultLifetime[metadata.TARGETS]
	}
	root, _, err := LoadRoot(offline)
	if err != nil {
		return Signed{}, err
	}
	t, err := loadTargets(filepath.Join(offline, "targets.json"))
	if err != nil {
		return Signed{}, err
	}
	c := o.Custom
	if c.Release == 0 {
		c.Release = highestRelease(t) + 1
	}
	if err := c.Check(); err != nil {
		return Signed{}, fmt.Errorf("sign %s: %w", artifact, err)
	}
	name := o.Name
	if name == "" {
		name = targetName(c.Version, c.Arch)
	}
	if !fs.ValidPath(name) || name == "." {
		return Signed{}, fmt.Errorf("sign: target name %q is not a plain relative path", name)
	}
	tf, err := hashFile(artifact)
	if err != nil {
		return Signed{}, err
	}
	for n, old := range t.Signed.Targets {
		if n == name && !old.Equal(*tf) {
			return Signed{}, fmt.Errorf("sign: target %s is already signed with other bytes (%d bytes); published names are immutable: give a new --version or --name", name, old.Length)
		}
		if n != name && old.Custom != nil {
			if oc, err := firmware.ParseCustom(*old.Custom); err == nil && oc.Release == c.Release && oc.Arch == c.Arch && oc.Channel == c.Channel {
				return Signed{}, fmt.Errorf("sign: release %d is already %s for %s on channel %s; each release counter is one release", c.Release, n, c.Arch, c.Channel)
			}
		}
	}
	raw := json.RawMessage(c.JSON())
	tf.Custom = &raw
	tf.Path = name
	t.Signed.Targets[name] = tf
	t.Signed.Version++
	t.Signed.Expires = o.Now().UTC().Add(o.Lifetime).Truncate(time.Second)
	keys, err := LoadKeys(offline, metadata.TARGETS)
	if err != nil {
		return Signed{}, err
	}
	b, err := signWith(&root.Signed, metadata.TARGETS, t, keys)
	if err != nil {
		return Signed{}, err
	}
	file := filepath.Join(offline, "targets.json")
	if err := durable.WriteFile(filepath.Join(offline, fmt.Sprintf("%d.targets.json", t.Signed.Version)), b, 0o644); err != nil {
		return Signed{}, err
	}
	if err := durable.WriteFile(file, b, 0o644); err != nil {
		return Signed{}, err
	}
	return Signed{Name: name, Target: tf, Custom: c, Version: t.Signed.Version, File: file}, nil
}

func loadTargets(path string) (*metadata.Metadata[metadata.TargetsType], error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		t := metadata.Targets()
		t.Signed.Version = 0
		return t, nil
	}
	if err != nil {
		return nil, err
	}
	t, err := metadata.Targets().FromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func highestRelease(t *metadata.Metadata[metadata.TargetsType]) uint64 {
	var hi uint64
	for _, tf := range t.Signed.Targets {
		if tf.Custom == nil {
			continue
		}
		if c, err := firmware.ParseCustom(*tf.Custom); err == nil && c.Release > hi {
			hi = c.Release
		}
	}
	return hi
}

// hashFile is the length and sha256 of a file, read as a stream.
func hashFile(path string) (*metadata.TargetFiles, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("artifact: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("artifact %s: %w", path, err)
	}
	tf := metadata.TargetFile()
	tf.Length = n
	tf.Hashes = metadata.Hashes{"sha256": h.Sum(nil)}
	return tf, nil
}
