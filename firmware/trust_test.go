package firmware_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/firmware/firmwaretest"
	"github.com/outpost-edge/outpost/internal/durable"
)

// clock is a settable local clock for a Trust.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func custom(version string, release uint64) firmware.Custom {
	return firmware.Custom{Version: version, Release: release, Channel: "stable"}
}

// setup is a repository with one target, release 2, and a trust dir
// provisioned with its first root, on a clock at the repository's Now.
func setup(t *testing.T, opts firmwaretest.Options) (*firmwaretest.Repo, *firmware.Trust, *clock) {
	t.Helper()
	r := firmwaretest.New(t, opts)
	r.AddTarget("edge-1.1.0", []byte("release 1.1.0"), custom("1.1.0", 2))
	r.Publish()
	c := &clock{r.Now.Add(time.Minute)}
	return r, r.Trust(t, c.now), c
}

func mustRefresh(t *testing.T, tr *firmware.Trust, src firmware.Source) *firmware.Verified {
	t.Helper()
	v, err := tr.Refresh(context.Background(), src)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	return v
}

func refuse(t *testing.T, tr *firmware.Trust, src firmware.Source, want error, mention string) {
	t.Helper()
	_, err := tr.Refresh(context.Background(), src)
	t.Logf("refused: %v", err)
	if !errors.Is(err, want) {
		t.Fatalf("refresh: got %v, want %v", err, want)
	}
	if !strings.Contains(err.Error(), mention) {
		t.Fatalf("refresh error %q does not mention %q", err, mention)
	}
}

func TestRefreshAndInstallable(t *testing.T) {
	r, tr, _ := setup(t, firmwaretest.Options{})
	v := mustRefresh(t, tr, r.Source())
	if v.Targets.Version != 2 || v.Timestamp.Version != 2 {
		t.Fatalf("verified versions %+v", v)
	}
	tg, err := tr.Installable(v, "edge-1.1.0", firmware.Running{Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if tg.Custom != custom("1.1.0", 2) || tg.Length != int64(len("release 1.1.0")) {
		t.Fatalf("target %+v", tg)
	}
	if err := tg.VerifyArtifact(strings.NewReader("release 1.1.0")); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Installable(v, "edge-9", firmware.Running{Version: "1.0.0"}); !errors.Is(err, firmware.ErrUnknownTarget) {
		t.Fatalf("unknown target: %v", err)
	}
	if got := tr.State().Verified(); !got.Equal(v.RefTime) {
		t.Fatalf("newest verified %s, want %s", got, v.RefTime)
	}
	// A second refresh with nothing new is fine and uses the cache.
	mustRefresh(t, tr, r.Source())
	if c := tr.Cached(); c["timestamp"].Version != 2 || c["targets"].Version != 2 || c["root"].Version != 1 {
		t.Fatalf("cached roles %+v", c)
	}
}

func TestTamperedArtifactRefused(t *testing.T) {
	r, tr, _ := setup(t, firmwaretest.Options{})
	tg, err := tr.Installable(mustRefresh(t, tr, r.Source()), "edge-1.1.0", firmware.Running{Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"flipped": "release 1.1.1",
		"short":   "release 1.1.",
		"long":    "release 1.1.0 and more",
	} {
		t.Run(name, func(t *testing.T) {
			if err := tg.VerifyArtifact(strings.NewReader(body)); !errors.Is(err, firmware.ErrArtifact) {
				t.Fatalf("got %v, want ErrArtifact", err)
			}
		})
	}
}

func TestDowngradeBelowFloorRefused(t *testing.T) {
	r, tr, _ := setup(t, firmwaretest.Options{})
	r.AddTarget("edge-1.0.9", []byte("old"), custom("1.0.9", 1))
	r.Publish()
	v := mustRefresh(t, tr, r.Source())
	if err := tr.State().RaiseFloor(2); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Installable(v, "edge-1.0.9", firmware.Running{Version: "1.1.0"}); !errors.Is(err, firmware.ErrDowngrade) {
		t.Fatalf("release 1 over floor 2: %v", err)
	}
	// The committed release itself (release == floor) is not a new install.
	if _, err := tr.Installable(v, "edge-1.1.0", firmware.Running{Version: "1.1.0"}); !errors.Is(err, firmware.ErrDowngrade) {
		t.Fatalf("release 2 over floor 2: %v", err)
	}
	if err := tr.State().RaiseFloor(1); err != nil {
		t.Fatal(err)
	}
	if tr.State().Floor() != 2 {
		t.Fatal("the floor went down")
	}
	// The floor survives a restart and never went down.
	st, err := firmware.OpenState(filepath.Join(tr.Dir(), "state.json"), durable.WriteFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Floor() != 2 {
		t.Fatalf("floor after reopen %d, want 2", st.Floor())
	}
}

func TestArch(t *testing.T) {
	r, tr, _ := setup(t, firmwaretest.Options{})
	c := custom("1.2.0", 3)
	c.Arch = "linux/arm/v7"
	r.AddTarget("edge-1.2.0-armv7", []byte("arm"), c)
	r.Publish()
	v := mustRefresh(t, tr, r.Source())
	for arch, ok := range map[string]bool{"linux/arm": true, "linux/arm/v7": true, "linux/arm/v6": false, "linux/arm64": false, "linux/amd64": false, "": true} {
		_, err := tr.Installable(v, "edge-1.2.0-armv7", firmware.Running{Version: "1.0.0", Arch: arch})
		if (err == nil) != ok {
			t.Errorf("linux/arm/v7 target on %q: %v", arch, err)
		}
	}
}

func TestMinVersion(t *testing.T) {
	r, tr, _ := setup(t, firmwaretest.Options{})
	c := custom("2.0.0", 3)
	c.MinVersion = "1.1.0"
	r.AddTarget("edge-2.0.0", []byte("two"), c)
	r.Publish()
	v := mustRefresh(t, tr, r.Source())
	if _, err := tr.Installable(v, "edge-2.0.0", firmware.Running{Version: "1.0.5"}); !errors.Is(err, firmware.ErrTooOld) {
		t.Fatalf("over 1.0.5: %v", err)
	}
	if _, err := tr.Installable(v, "edge-2.0.0", firmware.Running{Version: "1.1.0"}); err != nil {
		t.Fatalf("over 1.1.0: %v", err)
	}
}

func TestBelowThresholdRefused(t *testing.T) {
	for _, role := range []string{metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		t.Run(role, func(t *testing.T) {
			r, tr, _ := setup(t, firmwaretest.Options{
				Keys:      map[string]int{role: 3},
				Threshold: map[string]int{role: 2},
			})
			mustRefresh(t, tr, r.Source())
			r.SignWith[role] = r.Keys[role][:1]
			r.AddTarget("edge-1.2.0", []byte("evil"), custom("1.2.0", 3))
			r.Publish()
			refuse(t, tr, r.Source(), firmware.ErrUntrusted, "not enough signatures")
			// One key twice is still one key.
			r.SignWith[role] = []ed25519.PrivateKey{r.Keys[role][0], r.Keys[role][0]}
			r.Publish()
			refuse(t, tr, r.Source(), firmware.ErrUntrusted, role)
			delete(r.SignWith, role)
			r.Publish()
			mustRefresh(t, tr, r.Source())
		})
	}
}

func TestExpiredBlocksInstall(t *testing.T) {
	for _, role := range []string{metadata.ROOT, metadata.TIMESTAMP, metadata.SNAPSHOT, metadata.TARGETS} {
		t.Run(role, func(t *testing.T) {
			r, tr, c := setup(t, firmwaretest.Options{})
			v := mustRefresh(t, tr, r.Source())
			floor := tr.State().Floor()
			// Every role but one is renewed for a year; the clock moves
			// past the other's expiry.
			c.t = r.Now.Add(400 * 24 * time.Hour)
			for _, other := range firmwaretest.Roles {
				r.Expires[other] = c.t.Add(24 * time.Hour)
			}
			r.Expires[role] = r.Now.Add(time.Hour)
			r.RotateRoot(metadata.TIMESTAMP, 1, 1) // publishes a root with the new expiry
			r.Publish()
			refuse(t, tr, r.Source(), firmware.ErrExpired, role)
			// The refusal says so plainly, and what was verified before
			// is not installable either once expired.
			if _, err := tr.Installable(v, "edge-1.1.0", firmware.Running{Version: "1.0.0"}); !errors.Is(err, firmware.ErrExpired) {
				t.Fatalf("installable after expiry: %v", err)
			}
			if tr.State().Floor() != floor {
				t.Fatal("a refused refresh moved the floor")
			}
		})
	}
}

// A clock set back cannot make metadata that had expired by the newest
// verified time fresh again.
func TestClockSetBackDoesNotRevive(t *testing.T) {
	r, tr, c := setup(t, firmwaretest.Options{})
	c.t = r.Now.Add(10 * 24 * time.Hour)
	for _, role := range firmwaretest.Roles {
		r.Expires[role] = c.t.Add(24 * time.Hour)
	}
	r.RotateRoot(metadata.TIMESTAMP, 1, 1)
	r.Publish()
	mustRefresh(t, tr, r.Source()) // newest verified: Now+10d
	// A timestamp that expires at Now+5d, and a clock back at Now+1d.
	r.Expires[metadata.TIMESTAMP] = r.Now.Add(5 * 24 * time.Hour)
	r.Publish()
	c.t = r.Now.Add(24 * time.Hour)
	refuse(t, tr, r.Source(), firmware.ErrExpired, "timestamp")
	if got := tr.RefTime(); !got.Equal(r.Now.Add(10 * 24 * time.Hour)) {
		t.Fatalf("reference time %s, want the newest verified one", got)
	}
}

// Freeze: an attacker replays the metadata the edge already has (or older
// metadata) so that it never learns of a new release.
func TestFreezeRefused(t *testing.T) {
	r, tr, c := setup(t, firmwaretest.Options{})
	mustRefresh(t, tr, r.Source())
	stale := firmware.DirSource(copyRepo(t, r.Dir))
	r.AddTarget("edge-1.2.0", []byte("security fix"), custom("1.2.0", 3))
	r.Publish()
	mustRefresh(t, tr, r.Source())

	// Older metadata than the edge has: a rollback, refused outright.
	refuse(t, tr, stale, firmware.ErrUntrusted, "timestamp")
	// The same metadata, replayed past its expiry: refused as expired.
	frozen := firmware.DirSource(copyRepo(t, r.Dir))
	c.t = r.Now.Add(firmwaretest.Lifetime[metadata.TIMESTAMP] + time.Minute)
	refuse(t, tr, frozen, firmware.ErrExpired, "timestamp")
}

// Mix and match: individually valid files of different versions combined.
func TestMixAndMatchRefused(t *testing.T) {
	for _, consistent := range []bool{true, false} {
		r, _, _ := setup(t, firmwaretest.Options{NoConsistentSnapshot: !consistent})
		r.AddTarget("edge-1.2.0", []byte("1.2.0"), custom("1.2.0", 3))
		r.Publish() // targets 3, snapshot 3, timestamp 3
		for _, file := range []string{"snapshot.json", "targets.json"} {
			t.Run(fmt.Sprintf("consistent=%v/old %s", consistent, file), func(t *testing.T) {
				dir := copyRepo(t, r.Dir)
				served := file
				if consistent {
					served = "3." + file
				}
				if err := os.WriteFile(filepath.Join(dir, served), r.Published[file][2], 0o644); err != nil {
					t.Fatal(err)
				}
				tr := r.Trust(t, func() time.Time { return r.Now.Add(time.Minute) })
				refuse(t, tr, firmware.DirSource(dir), firmware.ErrUntrusted, file)
			})
		}
	}
}

func TestRootRotation(t *testing.T) {
	r, tr, _ := setup(t, firmwaretest.Options{})
	mustRefresh(t, tr, r.Source())
	// Root keys: 1 → 3 keys with threshold 2; then the timestamp key.
	r.RotateRoot(metadata.ROOT, 3, 2)
	oldTS := r.RotateRoot(metadata.TIMESTAMP, 1, 1)
	r.Publish()
	v := mustRefresh(t, tr, r.Source())
	if v.Root.Version != 3 {
		t.Fatalf("root version %d, want 3", v.Root.Version)
	}
	// The revoked timestamp key no longer counts.
	r.SignWith[metadata.TIMESTAMP] = oldTS
	r.Publish()
	refuse(t, tr, r.Source(), firmware.ErrUntrusted, "timestamp")
	delete(r.SignWith, metadata.TIMESTAMP)
	r.Publish()
	mustRefresh(t, tr, r.Source())

	// A fresh edge walks the whole chain from root 1.
	tr2 := r.Trust(t, func() time.Time { return r.Now.Add(time.Minute) })
	if v := mustRefresh(t, tr2, r.Source()); v.Root.Version != 3 {
		t.Fatalf("fresh edge root %d", v.Root.Version)
	}
}

func TestRootRotationNeedsBothThresholds(t *testing.T) {
	for _, tc := range []struct {
		name string
		sign func(old, new []ed25519.PrivateKey) []ed25519.PrivateKey
	}{
		{"only old keys", func(old, new []ed25519.PrivateKey) []ed25519.PrivateKey { return old }},
		{"only new keys", func(old, new []ed25519.PrivateKey) []ed25519.PrivateKey { return new }},
		{"old and one of two new", func(old, new []ed25519.PrivateKey) []ed25519.PrivateKey { return append(old, new[0]) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, tr, _ := setup(t, firmwaretest.Options{})
			mustRefresh(t, tr, r.Source())
			old := r.Keys[metadata.ROOT]
			r.RotateRoot(metadata.ROOT, 3, 2)
			r.SignWith[metadata.ROOT] = tc.sign(old, r.Keys[metadata.ROOT])
			r.ResignRoot()
			refuse(t, tr, r.Source(), firmware.ErrUntrusted, "2.root.json")
		})
	}
}

// An old root replayed as the next one is refused: versions must step by one.
func TestOldRootReplayRefused(t *testing.T) {
	r, tr, _ := setup(t, firmwaretest.Options{})
	r.RotateRoot(metadata.TIMESTAMP, 1, 1)
	r.Publish()
	mustRefresh(t, tr, r.Source()) // trusts root 2
	if err := os.WriteFile(filepath.Join(r.Dir, "3.root.json"), r.RootBytes(1), 0o644); err != nil {
		t.Fatal(err)
	}
	refuse(t, tr, r.Source(), firmware.ErrUntrusted, "3.root.json")
	// And an edge provisioned with root 1 refuses metadata signed under
	// root 2's keys if it cannot find root 2.
	os.Remove(filepath.Join(r.Dir, "3.root.json"))
	os.Remove(filepath.Join(r.Dir, "2.root.json"))
	tr2 := r.Trust(t, func() time.Time { return r.Now.Add(time.Minute) })
	refuse(t, tr2, r.Source(), firmware.ErrUntrusted, "timestamp")
}

func TestInitRefusesUnsignedRoot(t *testing.T) {
	r := firmwaretest.New(t, firmwaretest.Options{})
	bad := bytes.Replace(r.RootBytes(1), []byte(`"version":1`), []byte(`"version":7`), 1)
	if err := firmware.Init(t.TempDir(), bad, durable.WriteFile); !errors.Is(err, firmware.ErrUntrusted) {
		t.Fatalf("init with a tampered root: %v", err)
	}
	if _, err := firmware.Open(t.TempDir(), &firmware.Options{WriteFile: durable.WriteFile}); !errors.Is(err, firmware.ErrNoTrust) {
		t.Fatalf("open without a root: %v", err)
	}
}

// Nothing in firmware writes a file on its own: without a WriteFile to
// persist with (atomic and durable), it refuses to start.
func TestNoWriteFileRefused(t *testing.T) {
	r := firmwaretest.New(t, firmwaretest.Options{})
	dir := t.TempDir()
	if err := firmware.Init(dir, r.RootBytes(1), nil); err == nil || !strings.Contains(err.Error(), "WriteFile") {
		t.Fatalf("init without a WriteFile: %v", err)
	}
	if err := firmware.Init(dir, r.RootBytes(1), durable.WriteFile); err != nil {
		t.Fatal(err)
	}
	if _, err := firmware.Open(dir, nil); err == nil || !strings.Contains(err.Error(), "WriteFile") {
		t.Fatalf("open without a WriteFile: %v", err)
	}
	if _, err := firmware.OpenState(filepath.Join(dir, "state.json"), nil); err == nil || !strings.Contains(err.Error(), "WriteFile") {
		t.Fatalf("open state without a WriteFile: %v", err)
	}
}

func TestCorruptStateFailsClosed(t *testing.T) {
	r, tr, _ := setup(t, firmwaretest.Options{})
	mustRefresh(t, tr, r.Source())
	if err := os.WriteFile(filepath.Join(tr.Dir(), "state.json"), []byte(`{"floor":`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := firmware.Open(tr.Dir(), &firmware.Options{WriteFile: durable.WriteFile}); !errors.Is(err, firmware.ErrState) || !strings.Contains(err.Error(), "OTA.md") {
		t.Fatalf("open with a torn state: %v", err)
	}
}

func copyRepo(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	if err := os.CopyFS(out, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	return out
}

// Two processes' States on one file: neither lowers what the other raised.
func TestStateSharedBetweenProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	a, err := firmware.OpenState(path, durable.WriteFile)
	if err != nil {
		t.Fatal(err)
	}
	b, err := firmware.OpenState(path, durable.WriteFile) // loaded before a raises the floor
	if err != nil {
		t.Fatal(err)
	}
	if err := a.RaiseFloor(5); err != nil {
		t.Fatal(err)
	}
	if err := b.RaiseFloor(3); err != nil {
		t.Fatal(err)
	}
	if b.Floor() != 5 {
		t.Fatalf("b sees floor %d, want 5", b.Floor())
	}
	c, _ := firmware.OpenState(path, durable.WriteFile)
	if c.Floor() != 5 {
		t.Fatalf("floor on disk %d, want 5", c.Floor())
	}
}
