package firmware_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/firmware/firmwaretest"
)

var running = firmware.Running{Version: "1.0.0"}

func TestBundleInstalls(t *testing.T) {
	r, tr, _ := setup(t, firmwaretest.Options{})
	r.RotateRoot(metadata.ROOT, 2, 2) // the bundle carries the root chain
	r.Publish()
	var out bytes.Buffer
	tg, err := tr.ReadBundle(context.Background(), bytes.NewReader(r.Bundle("edge-1.1.0")), running, &out)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "release 1.1.0" || tg.Custom.Release != 2 {
		t.Fatalf("artifact %q, target %+v", out.String(), tg)
	}
	if v := tr.Last(); v == nil || v.Root.Version != 2 {
		t.Fatalf("the bundle's root chain was not followed: %+v", v)
	}
}

// A bundle goes through the same checks as an online refresh.
func TestBundleRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		prepare func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte
		want    error
	}{
		"tampered artifact": {func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte {
			return bytes.Replace(r.Bundle("edge-1.1.0"), []byte("release 1.1.0"), []byte("release 6.6.6"), 1)
		}, firmware.ErrArtifact},
		"expired": {func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte {
			c.t = r.Now.Add(48 * time.Hour)
			return r.Bundle("edge-1.1.0")
		}, firmware.ErrExpired},
		"below the floor": {func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte {
			if err := tr.State().RaiseFloor(3); err != nil {
				t.Fatal(err)
			}
			return r.Bundle("edge-1.1.0")
		}, firmware.ErrDowngrade},
		"below threshold": {func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte {
			r.SignWith[metadata.TARGETS] = nil
			r.Publish()
			return r.Bundle("edge-1.1.0")
		}, firmware.ErrUntrusted},
		"not a tar": {func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte {
			return []byte("MZ\x90\x00 not a bundle")
		}, firmware.ErrBundle},
		"truncated": {func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte {
			b := r.Bundle("edge-1.1.0")
			return b[:bytes.Index(b, []byte("release 1.1.0"))+5]
		}, firmware.ErrBundle},
		"artifact first": {func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte {
			return tarOf(t, "outpost-bundle.json", `{"format":1,"target":"edge-1.1.0"}`, "targets/edge-1.1.0", "release 1.1.0")
		}, firmware.ErrNotFound},
		"no manifest": {func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte {
			return tarOf(t, "metadata/timestamp.json", "{}")
		}, firmware.ErrBundle},
		"other format": {func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte {
			return tarOf(t, "outpost-bundle.json", `{"format":2,"target":"edge-1.1.0"}`)
		}, firmware.ErrBundle},
		"path in target": {func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte {
			return tarOf(t, "outpost-bundle.json", `{"format":1,"target":"../../bin/sh"}`)
		}, firmware.ErrBundle},
		"stray entry": {func(r *firmwaretest.Repo, tr *firmware.Trust, c *clock) []byte {
			return tarOf(t, "outpost-bundle.json", `{"format":1,"target":"edge-1.1.0"}`, "metadata/evil.json", "{}")
		}, firmware.ErrBundle},
	} {
		t.Run(name, func(t *testing.T) {
			r, tr, c := setup(t, firmwaretest.Options{})
			b := tc.prepare(r, tr, c)
			_, err := tr.ReadBundle(context.Background(), bytes.NewReader(b), running, &bytes.Buffer{})
			t.Logf("refused: %v", err)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// tarOf is a tar of name, content pairs.
func tarOf(t testing.TB, kv ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i < len(kv); i += 2 {
		if err := tw.WriteHeader(&tar.Header{Name: kv[i], Mode: 0o644, Size: int64(len(kv[i+1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(kv[i+1]))
	}
	tw.Close()
	return buf.Bytes()
}

func FuzzReadBundle(f *testing.F) {
	r := firmwaretest.New(f, firmwaretest.Options{})
	r.AddTarget("edge-1.1.0", []byte("release 1.1.0"), custom("1.1.0", 2))
	r.Publish()
	good := r.Bundle("edge-1.1.0")
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(tarOf(f, "outpost-bundle.json", `{"format":1,"target":"edge-1.1.0"}`, "targets/edge-1.1.0", "x"))
	// One trust for every input: an accepted bundle only re-caches the
	// same metadata.
	tr := r.Trust(f, func() time.Time { return r.Now.Add(time.Minute) })
	f.Fuzz(func(t *testing.T, b []byte) {
		var out bytes.Buffer
		tg, err := tr.ReadBundle(context.Background(), bytes.NewReader(b), running, &out)
		if err != nil {
			return
		}
		// Whatever the bytes, what is accepted is the signed artifact.
		if out.String() != "release 1.1.0" || tg.Name != "edge-1.1.0" {
			t.Fatalf("accepted %q as %+v", out.String(), tg)
		}
		if !strings.HasPrefix(string(b), "outpost-bundle.json") {
			t.Fatalf("accepted a bundle that does not start with its manifest")
		}
	})
}
