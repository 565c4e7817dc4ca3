package release_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/release"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/internal/poll"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	offline, online string
	repo            *release.Repo
	clock           *clock
}

func newFixture(t *testing.T, roles map[string]release.RoleKeys) *fixture {
	t.Helper()
	d := t.TempDir()
	f := &fixture{offline: filepath.Join(d, "offline"), online: filepath.Join(d, "online"), clock: &clock{t: time.Now().UTC().Truncate(time.Second)}}
	fps, err := release.KeysInit(f.offline, f.online, release.InitOptions{Roles: roles, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, fp := range fps {
		st, err := os.Stat(fp.File)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, want 0600", fp.File, st.Mode().Perm())
		}
		if len(fp.KeyID) != 64 {
			t.Fatalf("fingerprint %q is not a TUF key id", fp.KeyID)
		}
	}
	f.repo = &release.Repo{Dir: filepath.Join(d, "repo"), Online: f.online, Now: f.clock.Now}
	if err := f.repo.Open(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) artifact(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) signPublish(t *testing.T, version, body string) release.Signed {
	t.Helper()
	art := f.artifact(t, "edge", body)
	s, err := release.Sign(f.offline, art, release.SignOptions{Custom: firmware.Custom{Version: version, Channel: "stable", Arch: "linux/amd64"}, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	p, err := release.PublicationFrom(f.offline, map[string]string{s.Name: art})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.repo.Publish(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return s
}

// edge is an edge's trust provisioned with the offline dir's 1.root.json.
func (f *fixture) edge(t *testing.T) *firmware.Trust {
	t.Helper()
	root, err := os.ReadFile(filepath.Join(f.offline, "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "trust")
	if err := firmware.Init(dir, root, durable.WriteFile); err != nil {
		t.Fatal(err)
	}
	tr, err := firmware.Open(dir, &firmware.Options{Now: f.clock.Now, WriteFile: durable.WriteFile})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func (f *fixture) refresh(t *testing.T, tr *firmware.Trust) *firmware.Verified {
	t.Helper()
	v, err := tr.Refresh(context.Background(), firmware.DirSource(f.repo.Dir))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSignPublishRefresh(t *testing.T) {
	f := newFixture(t, map[string]release.RoleKeys{"root": {Keys: 3, Threshold: 2}})
	s1 := f.signPublish(t, "1.0.0", "release one")
	tr := f.edge(t)
	v := f.refresh(t, tr)
	tg, err := v.Target(s1.Name)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Custom.Version != "1.0.0" || tg.Custom.Release != 1 || tg.Custom.Arch != "linux/amd64" || tg.Length != int64(len("release one")) {
		t.Fatalf("target %+v", tg)
	}
	if _, err := tr.Installable(v, s1.Name, firmware.Running{Version: "0.9.0", Arch: "linux/amd64"}); err != nil {
		t.Fatalf("installable: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(f.repo.Dir, "targets", s1.Name))
	if err != nil || string(b) != "release one" {
		t.Fatalf("artifact in repository: %q, %v", b, err)
	}
	// The next release gets the next counter, and the edge sees both.
	s2 := f.signPublish(t, "1.1.0", "release two")
	if s2.Custom.Release != 2 {
		t.Fatalf("second release counter %d, want 2", s2.Custom.Release)
	}
	v = f.refresh(t, tr)
	if n := len(v.List()); n != 2 {
		t.Fatalf("%d targets, want 2", n)
	}
}

func TestPublishRefusals(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	art := f.artifact(t, "edge", "the signed bytes")
	s, err := release.Sign(f.offline, art, release.SignOptions{Custom: firmware.Custom{Version: "1.0.0", Channel: "stable"}})
	if err != nil {
		t.Fatal(err)
	}
	// An artifact changed after signing.
	tampered := f.artifact(t, "other", "the signed byteZ")
	p, _ := release.PublicationFrom(f.offline, map[string]string{s.Name: tampered})
	if _, err := f.repo.Publish(ctx, p); !errors.Is(err, release.ErrRefused) || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("tampered artifact: %v", err)
	}
	// A missing artifact.
	p, _ = release.PublicationFrom(f.offline, nil)
	if _, err := f.repo.Publish(ctx, p); !errors.Is(err, release.ErrRefused) || !strings.Contains(err.Error(), "neither in the repository nor given") {
		t.Fatalf("missing artifact: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.repo.Dir, "targets.json")); err == nil {
		t.Fatal("a refused publish wrote targets.json")
	}
	// Bytes left in targets/ by anything but a good publish do not count:
	// the artifact must be given and is copied over them.
	if err := os.WriteFile(filepath.Join(f.repo.Dir, "targets", s.Name), []byte("left over"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _ = release.PublicationFrom(f.offline, nil)
	if _, err := f.repo.Publish(ctx, p); !errors.Is(err, release.ErrRefused) || !strings.Contains(err.Error(), "neither in the repository nor given") {
		t.Fatalf("stale artifact in place: %v", err)
	}
	// Targets signed by a key the root does not list.
	other := newFixture(t, nil)
	s2, err := release.Sign(other.offline, art, release.SignOptions{Custom: firmware.Custom{Version: "1.0.0", Channel: "stable"}})
	if err != nil {
		t.Fatal(err)
	}
	p, _ = release.PublicationFrom(f.offline, map[string]string{s.Name: art})
	foreign, _ := os.ReadFile(filepath.Join(other.offline, "targets.json"))
	p.Targets = foreign
	if _, err := f.repo.Publish(ctx, p); !errors.Is(err, release.ErrRefused) || !strings.Contains(err.Error(), "targets threshold") {
		t.Fatalf("foreign targets (%s): %v", s2.Name, err)
	}
	// The good one, then a replay of an older targets version.
	p, _ = release.PublicationFrom(f.offline, map[string]string{s.Name: art})
	if _, err := f.repo.Publish(ctx, p); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.repo.Dir, "targets", s.Name)); string(b) != "the signed bytes" {
		t.Fatalf("artifact in the repository: %q", b)
	}
	old := p.Targets
	f.signPublish(t, "1.1.0", "two")
	p.Targets = old
	if _, err := f.repo.Publish(ctx, p); !errors.Is(err, release.ErrRefused) || !strings.Contains(err.Error(), "not above the published version") {
		t.Fatalf("older targets: %v", err)
	}
	// A published name with other bytes cannot be signed again.
	if _, err := release.Sign(f.offline, tampered, release.SignOptions{Name: s.Name, Custom: firmware.Custom{Version: "1.0.0", Channel: "stable"}}); err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Fatalf("re-sign with other bytes: %v", err)
	}
}

func TestSignBelowThresholdRefused(t *testing.T) {
	f := newFixture(t, map[string]release.RoleKeys{"targets": {Keys: 2, Threshold: 2}})
	keys, _ := filepath.Glob(filepath.Join(f.offline, "targets-*.key"))
	if len(keys) != 2 {
		t.Fatalf("%d targets keys", len(keys))
	}
	if err := os.Remove(keys[0]); err != nil { // one signer is away
		t.Fatal(err)
	}
	_, err := release.Sign(f.offline, f.artifact(t, "edge", "x"), release.SignOptions{Custom: firmware.Custom{Version: "1.0.0", Channel: "stable"}})
	if !errors.Is(err, release.ErrBelowThreshold) {
		t.Fatalf("sign with 1 of 2: %v", err)
	}
}

func TestKeysInitRefusesExistingKeys(t *testing.T) {
	f := newFixture(t, nil)
	if _, err := release.KeysInit(f.offline, f.online, release.InitOptions{}); err == nil || !strings.Contains(err.Error(), "holds keys already") {
		t.Fatalf("second init: %v", err)
	}
}

func TestTimestampResignedBeforeExpiry(t *testing.T) {
	f := newFixture(t, nil)
	f.signPublish(t, "1.0.0", "one")
	tr := f.edge(t)
	v1 := f.refresh(t, tr)
	// Not yet due: nothing changes.
	if err := f.repo.Resign(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := f.refresh(t, tr); v.Timestamp.Version != v1.Timestamp.Version {
		t.Fatalf("timestamp re-signed early: %d -> %d", v1.Timestamp.Version, v.Timestamp.Version)
	}
	// Past half its lifetime the timestamp is re-signed; past half the
	// snapshot's, both are. The edge stays fresh throughout.
	for i := 0; i < 8; i++ {
		f.clock.Add(release.DefaultTimestampLifetime/2 + time.Minute)
		if err := f.repo.Resign(context.Background()); err != nil {
			t.Fatal(err)
		}
		v := f.refresh(t, tr)
		if _, err := tr.Installable(v, "edge-1.0.0-linux-amd64", firmware.Running{Version: "0.1.0"}); err != nil {
			t.Fatalf("after %d re-signs: %v", i+1, err)
		}
	}
	v := f.refresh(t, tr)
	if v.Timestamp.Version <= v1.Timestamp.Version || v.Snapshot.Version <= v1.Snapshot.Version {
		t.Fatalf("versions: timestamp %d -> %d, snapshot %d -> %d", v1.Timestamp.Version, v.Timestamp.Version, v1.Snapshot.Version, v.Snapshot.Version)
	}
	if !v.Timestamp.Expires.After(f.clock.Now()) {
		t.Fatal("timestamp expired")
	}
}

func TestExpiryWarnings(t *testing.T) {
	f := newFixture(t, nil)
	f.signPublish(t, "1.0.0", "one")
	if w := f.repo.Warnings(); len(w) != 0 {
		t.Fatalf("fresh repository warns: %q", w)
	}
	// 80 days on (targets last 90, warn 14 days ahead): the targets warn.
	f.clock.Add(80 * 24 * time.Hour)
	if err := f.repo.Resign(context.Background()); err != nil {
		t.Fatal(err)
	}
	w := f.repo.Warnings()
	if len(w) != 1 || !strings.HasPrefix(w[0], "targets metadata expires") || !strings.Contains(w[0], "cloud release sign") {
		t.Fatalf("warnings: %q", w)
	}
	// An online key directory that lost its keys stops re-signing, and
	// the timestamp warns once it gets close.
	for _, k := range must(filepath.Glob(filepath.Join(f.online, "*.key"))) {
		os.Remove(k)
	}
	f.clock.Add(release.DefaultTimestampLifetime * 9 / 10)
	if err := f.repo.Resign(context.Background()); err == nil {
		t.Fatal("re-sign without keys succeeded")
	}
	w = f.repo.Warnings()
	if len(w) != 2 || !strings.HasPrefix(w[1], "timestamp metadata expires") {
		t.Fatalf("warnings: %q", w)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestRootRotation(t *testing.T) {
	f := newFixture(t, map[string]release.RoleKeys{"root": {Keys: 2, Threshold: 2}})
	s1 := f.signPublish(t, "1.0.0", "one")
	tr := f.edge(t) // provisioned with 1.root.json
	f.refresh(t, tr)
	oldRoot := must(filepath.Glob(filepath.Join(f.offline, "root-*.key")))

	// Rotate the root keys (3 new, threshold 2), then the targets and the
	// timestamp keys; publish each; the edge follows each rotation.
	if _, err := release.Rotate(f.offline, f.online, release.RotateOptions{Role: "root", Keys: 3, Threshold: 2, Now: f.clock.Now}); err != nil {
		t.Fatal(err)
	}
	for _, k := range oldRoot {
		if _, err := os.Stat(k); err == nil {
			t.Fatalf("old root key %s is still loadable", k)
		}
	}
	if _, err := release.Rotate(f.offline, f.online, release.RotateOptions{Role: "targets", Now: f.clock.Now}); err != nil {
		t.Fatal(err)
	}
	if _, err := release.Rotate(f.offline, f.online, release.RotateOptions{Role: "timestamp", Now: f.clock.Now}); err != nil {
		t.Fatal(err)
	}
	// Targets signed with the new targets key (the old targets still list
	// release 1, signed again).
	s2 := f.signPublish(t, "2.0.0", "two")
	v := f.refresh(t, tr)
	if v.Root.Version != 4 {
		t.Fatalf("edge on root version %d, want 4", v.Root.Version)
	}
	for _, n := range []string{s1.Name, s2.Name} {
		if _, err := v.Target(n); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	// A brand-new edge with only 1.root.json walks the whole chain.
	if v := f.refresh(t, f.edge(t)); v.Root.Version != 4 {
		t.Fatalf("new edge on root version %d", v.Root.Version)
	}
	// A root signed without the old threshold is refused by the repository.
	g := newFixture(t, nil)
	p, _ := release.PublicationFrom(g.offline, nil)
	p.Roots = map[int64][]byte{5: p.Roots[1]}
	if _, err := f.repo.Publish(context.Background(), p); !errors.Is(err, release.ErrRefused) {
		t.Fatalf("foreign root: %v", err)
	}
}

// TestReplicasShareOneDirectory: two Repo values (two cloud replicas) on
// one directory publish and re-sign at the same time; every change is
// serialised by the lock, versions only grow, and an edge verifies the
// result.
func TestReplicasShareOneDirectory(t *testing.T) {
	f := newFixture(t, nil)
	f.signPublish(t, "1.0.0", "one")
	other := &release.Repo{Dir: f.repo.Dir, Online: f.online, Now: f.clock.Now}
	if err := other.Open(); err != nil {
		t.Fatal(err)
	}
	tr := f.edge(t)
	last := f.refresh(t, tr)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for _, r := range []*release.Repo{f.repo, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				f.clock.Add(time.Hour) // re-signs come due as the replicas run
				if err := r.Resign(context.Background()); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 2; i <= 5; i++ {
		f.signPublish(t, "1."+string(rune('0'+i))+".0", "release "+string(rune('0'+i)))
		v := f.refresh(t, tr)
		if v.Timestamp.Version <= last.Timestamp.Version || v.Targets.Version <= last.Targets.Version {
			t.Fatalf("versions went from %+v to %+v", last, v)
		}
		last = v
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v := f.refresh(t, tr)
	if n := len(v.List()); n != 5 {
		t.Fatalf("%d targets, want 5", n)
	}
	if v.Timestamp.Version < 8 {
		t.Fatalf("timestamp version %d after 40 hours of re-signing every 6/2 hours", v.Timestamp.Version)
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestRunWarnsOncePerRole: Run re-signs on its ticker and logs a role near
// expiry once per WarnEvery, not at every check.
func TestRunWarnsOncePerRole(t *testing.T) {
	f := newFixture(t, nil)
	f.signPublish(t, "1.0.0", "one")
	f.clock.Add(80 * 24 * time.Hour) // targets within 14 days of expiry
	var logs lockedBuf
	f.repo.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	f.repo.ResignEvery = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.repo.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	tr := f.edge(t)
	var ts int64
	resigned := func() {
		t.Helper()
		poll.For(t, 30*time.Second, func() error {
			v, err := tr.Refresh(context.Background(), firmware.DirSource(f.repo.Dir))
			if err != nil {
				return err
			}
			if v.Timestamp.Version <= ts {
				return fmt.Errorf("timestamp version %d, waiting for a re-sign", v.Timestamp.Version)
			}
			ts = v.Timestamp.Version
			return nil
		})
	}
	resigned() // the timestamp, stale after 80 days, is re-signed by Run
	f.clock.Add(4 * time.Hour)
	resigned() // and again 4 hours on: checks ran, the warning did not repeat
	if n := strings.Count(logs.String(), "metadata expires soon"); n != 1 {
		t.Fatalf("%d warnings within %s, want 1:\n%s", n, release.WarnEvery, logs.String())
	}
	f.clock.Add(4 * time.Hour) // 8 hours after the first warning
	resigned()
	poll.Until(t, 30*time.Second, "the warning repeated after WarnEvery", func() bool {
		return strings.Count(logs.String(), "metadata expires soon") == 2
	})
	if out := logs.String(); strings.Count(out, "role=targets") != 2 {
		t.Fatalf("warnings are not the targets':\n%s", out)
	}
}
