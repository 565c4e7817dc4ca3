package firmware

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// An offline bundle is one file that carries a release to a gateway with
// no network (a USB stick): a tar archive (POSIX ustar/PAX) of regular
// files in this order:
//
//	outpost-bundle.json      {"format":1,"target":"<target name>"}
//	metadata/N.root.json     zero or more, ascending: the root chain
//	metadata/timestamp.json
//	metadata/snapshot.json
//	metadata/targets.json
//	targets/<target name>    the artifact, last
//
// Metadata comes first so that the artifact is only read once the
// metadata has verified, and then streamed with the signed length as cap.
const (
	BundleFormat   = 1
	bundleManifest = "outpost-bundle.json"
	bundleMeta     = "metadata/"
	bundleTargets  = "targets/"
	// maxBundleEntries bounds the metadata entries (a root chain of
	// DefaultMaxRootRotations and the three other roles).
	maxBundleEntries = DefaultMaxRootRotations + 4
)

type bundleManifestJSON struct {
	Format int    `json:"format"`
	Target string `json:"target"`
}

// Bundle is what WriteBundle writes.
type Bundle struct {
	// Metadata by file name: "2.root.json" ... , "timestamp.json",
	// "snapshot.json", "targets.json".
	Metadata map[string][]byte
	// Target is the target's name in the signed targets; Artifact its
	// bytes, exactly Length of them.
	Target   string
	Length   int64
	Artifact io.Reader
}

// WriteBundle writes b as a bundle to w.
func WriteBundle(w io.Writer, b Bundle) error {
	tw := tar.NewWriter(w)
	man, _ := json.Marshal(bundleManifestJSON{Format: BundleFormat, Target: b.Target})
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return fmt.Errorf("write bundle %s: %w", name, err)
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put(bundleManifest, man); err != nil {
		return err
	}
	for _, name := range bundleMetaOrder(b.Metadata) {
		if err := put(bundleMeta+name, b.Metadata[name]); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: bundleTargets + b.Target, Mode: 0o755, Size: b.Length, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("write bundle artifact: %w", err)
	}
	if _, err := io.Copy(tw, b.Artifact); err != nil {
		return fmt.Errorf("write bundle artifact: %w", err)
	}
	return tw.Close()
}

// bundleMetaOrder is roots by version, then timestamp, snapshot, targets.
func bundleMetaOrder(m map[string][]byte) []string {
	var roots []string
	for v := 1; len(roots) < len(m); v++ {
		name := fmt.Sprintf("%d.root.json", v)
		if _, ok := m[name]; ok {
			roots = append(roots, name)
		}
		if v > 1<<16 {
			break
		}
	}
	var out []string
	out = append(out, roots...)
	for _, name := range []string{"timestamp.json", "snapshot.json", "targets.json"} {
		if _, ok := m[name]; ok {
			out = append(out, name)
		}
	}
	return out
}

// mapSource is a Source over a bundle's metadata.
type mapSource map[string][]byte

func (m mapSource) Fetch(_ context.Context, name string, max int64) ([]byte, error) {
	b, ok := m[name]
	if !ok {
		// A bundle carries one snapshot and one targets, unversioned; the
		// timestamp's and snapshot's signed hashes say whether they are the
		// versions asked for.
		if v, file, cut := strings.Cut(name, "."); cut && (file == "snapshot.json" || file == "targets.json") && v != "" && strings.Trim(v, "0123456789") == "" {
			b, ok = m[file]
		}
	}
	if !ok {
		return nil, fmt.Errorf("%s: %w in the bundle", name, ErrNotFound)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s is longer than %d bytes", ErrUntrusted, name, max)
	}
	return b, nil
}

// ReadBundle verifies a bundle read from r through the same checks as an
// online refresh (Refresh against the bundle's metadata, then Installable
// over running), and only then streams the artifact to w, at most its
// signed length. It returns the target when the bytes written to w are
// exactly the signed artifact; on any error, what was written to w must be
// thrown away.
func (t *Trust) ReadBundle(ctx context.Context, r io.Reader, running Running, w io.Writer) (Target, error) {
	tr := tar.NewReader(r)
	man, err := readManifest(tr, t.opts.MaxMetadataBytes)
	if err != nil {
		return Target{}, err
	}
	meta := mapSource{}
	for {
		h, err := nextRegular(tr)
		if err != nil {
			return Target{}, err
		}
		if name, ok := strings.CutPrefix(h.Name, bundleMeta); ok {
			if len(meta) >= maxBundleEntries {
				return Target{}, fmt.Errorf("%w: more than %d metadata entries", ErrBundle, maxBundleEntries)
			}
			if _, dup := meta[name]; dup || !validMetaName(name) {
				return Target{}, fmt.Errorf("%w: metadata entry %q is repeated or not a TUF role file", ErrBundle, h.Name)
			}
			if h.Size > t.opts.MaxMetadataBytes {
				return Target{}, fmt.Errorf("%w: %s is %d bytes, at most %d", ErrBundle, h.Name, h.Size, t.opts.MaxMetadataBytes)
			}
			b, err := ReadCapped(tr, h.Name, t.opts.MaxMetadataBytes)
			if err != nil {
				return Target{}, fmt.Errorf("%w: %v", ErrBundle, err)
			}
			meta[name] = b
			continue
		}
		if h.Name != bundleTargets+man.Target {
			return Target{}, fmt.Errorf("%w: entry %q: want metadata/... or %s%s (the manifest's target)", ErrBundle, h.Name, bundleTargets, man.Target)
		}
		return t.readBundleArtifact(ctx, tr, h, meta, man.Target, running, w)
	}
}

func (t *Trust) readBundleArtifact(ctx context.Context, tr *tar.Reader, h *tar.Header, meta mapSource, name string, running Running, w io.Writer) (Target, error) {
	v, err := t.Refresh(ctx, meta)
	if err != nil {
		return Target{}, fmt.Errorf("bundle metadata: %w", err)
	}
	tg, err := t.Installable(v, name, running)
	if err != nil {
		return Target{}, fmt.Errorf("bundle: %w", err)
	}
	if h.Size != tg.Length {
		return Target{}, fmt.Errorf("%w: bundle artifact is %d bytes, signed length %d", ErrArtifact, h.Size, tg.Length)
	}
	vf := tg.Verifier()
	if _, err := io.Copy(io.MultiWriter(w, vf), io.LimitReader(tr, tg.Length)); err != nil {
		return Target{}, fmt.Errorf("%w: bundle artifact: %v", ErrBundle, err)
	}
	if err := vf.Check(); err != nil {
		return Target{}, err
	}
	if _, err := tr.Next(); !errors.Is(err, io.EOF) {
		return Target{}, fmt.Errorf("%w: entries after the artifact", ErrBundle)
	}
	return tg, nil
}

func readManifest(tr *tar.Reader, max int64) (bundleManifestJSON, error) {
	var m bundleManifestJSON
	h, err := nextRegular(tr)
	if err != nil {
		return m, err
	}
	if h.Name != bundleManifest {
		return m, fmt.Errorf("%w: first entry is %q, want %s (is this an Outpost bundle?)", ErrBundle, h.Name, bundleManifest)
	}
	b, err := ReadCapped(tr, h.Name, max)
	if err != nil {
		return m, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: %s: %v", ErrBundle, bundleManifest, err)
	}
	if m.Format != BundleFormat {
		return m, fmt.Errorf("%w: format %d, this edge reads format %d", ErrBundle, m.Format, BundleFormat)
	}
	if m.Target == "" || !validTargetName(m.Target) {
		return m, fmt.Errorf("%w: target name %q is not a plain relative path", ErrBundle, m.Target)
	}
	return m, nil
}

func nextRegular(tr *tar.Reader) (*tar.Header, error) {
	h, err := tr.Next()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: ends before the artifact", ErrBundle)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	if h.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%w: entry %q is not a regular file", ErrBundle, h.Name)
	}
	return h, nil
}

func validMetaName(name string) bool {
	switch name {
	case "timestamp.json", "snapshot.json", "targets.json":
		return true
	}
	var v int
	var rest string
	n, _ := fmt.Sscanf(name, "%d.%s", &v, &rest)
	return n == 2 && v >= 1 && rest == "root.json" && name == fmt.Sprintf("%d.root.json", v)
}

func validTargetName(name string) bool {
	return path.Clean(name) == name && !path.IsAbs(name) && !strings.HasPrefix(name, "../") && name != ".." && len(name) <= 255
}
