package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/firmware/firmwaretest"
	"github.com/outpost-edge/outpost/internal/poll"
)

func edgeCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(args, &out, &errb)
	return out.String() + errb.String(), code
}

// TestOTACommands drives `edge ota` from provisioning to an installed
// offline bundle on probation, with the refusals an operator would meet.
func TestOTACommands(t *testing.T) {
	dir := t.TempDir()
	r := firmwaretest.New(t, firmwaretest.Options{Now: time.Now().UTC().Truncate(time.Second)})
	r.AddTarget("edge-1.1.0", []byte("#!/bin/sh\necho 1.1.0\n"), firmware.Custom{Version: "1.1.0", Release: 2, Channel: "stable"})
	r.Publish()
	root := filepath.Join(dir, "root.json")
	os.WriteFile(root, r.RootBytes(1), 0o644)
	bin := filepath.Join(dir, "edge-1.0.0")
	os.WriteFile(bin, []byte("#!/bin/sh\necho 1.0.0\n"), 0o755)
	data := filepath.Join(dir, "data")

	if out, code := edgeCmd(t, "ota", "--help"); code != 0 || !strings.Contains(out, "install FILE") {
		t.Fatalf("ota --help (%d): %s", code, out)
	}
	if out, code := edgeCmd(t, "ota"); code != 2 {
		t.Fatalf("ota without a subcommand (%d): %s", code, out)
	}
	if out, code := edgeCmd(t, "ota", "status", "--data-dir", data); code != 0 || !strings.Contains(out, "no trusted root") {
		t.Fatalf("status before init (%d): %s", code, out)
	}
	if out, code := edgeCmd(t, "ota", "init", "--data-dir", data, "--root", root); code != 0 {
		t.Fatalf("init (%d): %s", code, out)
	}
	if out, code := edgeCmd(t, "ota", "init", "--data-dir", data, "--root", root); code == 0 {
		t.Fatalf("a second init was accepted: %s", out)
	}
	if out, code := edgeCmd(t, "ota", "adopt", "--data-dir", data, "--binary", bin, "--version", "1.0.0"); code != 0 {
		t.Fatalf("adopt (%d): %s", code, out)
	}
	out, code := edgeCmd(t, "ota", "check", "--data-dir", data, "--repo", r.Dir)
	if code != 0 || !strings.Contains(out, "edge-1.1.0") || !strings.Contains(out, "yes") {
		t.Fatalf("check (%d): %s", code, out)
	}

	bundle := filepath.Join(dir, "edge-1.1.0.bundle")
	good := r.Bundle("edge-1.1.0")
	os.WriteFile(bundle, bytes.Replace(good, []byte("echo 1.1.0"), []byte("echo 6.6.6"), 1), 0o644)
	if out, code := edgeCmd(t, "ota", "install", "--data-dir", data, bundle); code == 0 || !strings.Contains(out, "does not match") {
		t.Fatalf("tampered bundle (%d): %s", code, out)
	}
	os.WriteFile(bundle, good, 0o644)
	if out, code := edgeCmd(t, "ota", "install", "--data-dir", data, bundle); code != 0 {
		t.Fatalf("install (%d): %s", code, out)
	}
	if out, code := edgeCmd(t, "ota", "install", "--data-dir", data, bundle); code == 0 {
		t.Fatalf("a second install during probation was accepted: %s", out)
	}

	out, code = edgeCmd(t, "ota", "status", "--data-dir", data, "--json")
	if code != 0 {
		t.Fatalf("status (%d): %s", code, out)
	}
	var st otaStatusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if st.Current != "1.1.0" || st.Previous != "1.0.0" || st.Pending == nil || st.Pending.Release != 2 || st.Trust != "ok" || st.Metadata["timestamp"].Version != 2 {
		t.Fatalf("status %+v", st)
	}
	b, _ := os.ReadFile(filepath.Join(data, "ota", "current", "edge"))
	if string(b) != "#!/bin/sh\necho 1.1.0\n" {
		t.Fatalf("current binary %q", b)
	}
	if out, code := edgeCmd(t, "ota", "status", "--data-dir", data); code != 0 || !strings.Contains(out, "on probation") {
		t.Fatalf("status text (%d): %s", code, out)
	}

	// The systemd guard: each start is counted; past --max-attempts the
	// release is rolled back, and a committed one is left alone.
	for i := 1; i <= 2; i++ {
		if out, code := edgeCmd(t, "ota", "guard", "--data-dir", data, "--max-attempts", "2"); code != 0 || !strings.Contains(out, "on probation") {
			t.Fatalf("guard %d (%d): %s", i, code, out)
		}
	}
	if out, code := edgeCmd(t, "ota", "guard", "--data-dir", data, "--max-attempts", "2"); code != 0 || !strings.Contains(out, "rolled back 1.1.0") {
		t.Fatalf("guard after 2 starts (%d): %s", code, out)
	}
	if out, code := edgeCmd(t, "ota", "guard", "--data-dir", data); code != 0 || !strings.Contains(out, "starting 1.0.0") {
		t.Fatalf("guard of the committed release (%d): %s", code, out)
	}
}

// TestOTAInstallOnline: refresh over HTTP, download with the Downloader,
// install on probation; a target the checks refuse is reported and spooled
// as ota.refused.
func TestOTAInstallOnline(t *testing.T) {
	dir := t.TempDir()
	r := firmwaretest.New(t, firmwaretest.Options{Now: time.Now().UTC().Truncate(time.Second)})
	r.AddTarget("edge-1.1.0", []byte("#!/bin/sh\necho 1.1.0\n"), firmware.Custom{Version: "1.1.0", Release: 2, Channel: "stable"})
	r.AddTarget("edge-2.0.0", []byte("#!/bin/sh\necho 2.0.0\n"), firmware.Custom{Version: "2.0.0", Release: 3, Channel: "stable", MinVersion: "1.5.0"})
	r.Publish()
	srv := httptest.NewServer(http.FileServer(http.Dir(r.Dir)))
	t.Cleanup(srv.Close)
	root := filepath.Join(dir, "root.json")
	os.WriteFile(root, r.RootBytes(1), 0o644)
	bin := filepath.Join(dir, "edge-1.0.0")
	os.WriteFile(bin, []byte("#!/bin/sh\necho 1.0.0\n"), 0o755)
	data := filepath.Join(dir, "data")
	for _, args := range [][]string{
		{"ota", "init", "--data-dir", data, "--root", root},
		{"ota", "adopt", "--data-dir", data, "--binary", bin, "--version", "1.0.0"},
	} {
		if out, code := edgeCmd(t, args...); code != 0 {
			t.Fatalf("%v (%d): %s", args, code, out)
		}
	}
	if out, code := edgeCmd(t, "ota", "install", "--data-dir", data, "--repo", srv.URL, "--target", "edge-2.0.0", "--without-assignment"); code == 0 || !strings.Contains(out, "min_version") {
		t.Fatalf("2.0.0 over 1.0.0 (%d): %s", code, out)
	}
	out, _ := edgeCmd(t, "ota", "status", "--data-dir", data, "--json")
	var st otaStatusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.LastRefusal == nil || !strings.Contains(st.LastRefusal.Reason, "min_version") || st.Committed != "1.0.0" {
		t.Fatalf("status after a refusal (%v): %s", err, out)
	}
	// Uptane: no assignment from the cloud, no online install, unless the
	// local operator says so.
	if out, code := edgeCmd(t, "ota", "install", "--data-dir", data, "--repo", srv.URL, "--target", "edge-1.1.0"); code == 0 ||
		!strings.Contains(out, "no valid assignment") || !strings.Contains(out, "--without-assignment") {
		t.Fatalf("install without an assignment (%d): %s", code, out)
	}
	if out, code := edgeCmd(t, "ota", "install", "--data-dir", data, "--repo", srv.URL, "--target", "edge-1.1.0", "--rate-bytes", "1000000", "--without-assignment"); code != 0 {
		t.Fatalf("install (%d): %s", code, out)
	}
	b, _ := os.ReadFile(filepath.Join(data, "ota", "current", "edge"))
	if string(b) != "#!/bin/sh\necho 1.1.0\n" {
		t.Fatalf("current binary %q", b)
	}
	var kinds []string
	otaSpool(filepath.Join(data, "ota")).Drain(func(evs []ota.Event) error {
		for _, e := range evs {
			kinds = append(kinds, e.Kind)
			if e.Kind == "ota.installed" && !strings.Contains(e.Reason, "--without-assignment") {
				t.Errorf("installed by hand, and the event does not say so: %q", e.Reason)
			}
		}
		return nil
	})
	if strings.Join(kinds, ",") != "ota.refused,ota.refused,ota.downloaded,ota.verified,ota.installed" {
		t.Fatalf("spooled %v", kinds)
	}
	if ents, _ := os.ReadDir(filepath.Join(data, "ota", "downloads")); len(ents) != 0 {
		t.Fatalf("downloads left behind after the install: %v", ents)
	}
}

// TestExpiredMetadataLeavesEdgeRunning: metadata that expired (here, a
// timestamp published already expired, so the repository is stale)
// refuses new installs, online and from a bundle, with a status that says
// so, and does nothing to the release that runs: edge run keeps serving,
// healthy, on 1.0.0, and records the refusals in its own outbox.
func TestExpiredMetadataLeavesEdgeRunning(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().UTC().Truncate(time.Second)
	r := firmwaretest.New(t, firmwaretest.Options{Now: now})
	r.AddTarget("edge-1.1.0", []byte("#!/bin/sh\necho 1.1.0\n"), firmware.Custom{Version: "1.1.0", Release: 2, Channel: "stable"})
	r.Expires["timestamp"] = now.Add(-time.Hour)
	r.Publish()
	root := filepath.Join(dir, "root.json")
	os.WriteFile(root, r.RootBytes(1), 0o644)
	bin := filepath.Join(dir, "edge-1.0.0")
	os.WriteFile(bin, []byte("#!/bin/sh\necho 1.0.0\n"), 0o755)
	data := filepath.Join(dir, "data")
	for _, args := range [][]string{
		{"ota", "init", "--data-dir", data, "--root", root},
		{"ota", "adopt", "--data-dir", data, "--binary", bin, "--version", "1.0.0"},
	} {
		if out, code := edgeCmd(t, args...); code != 0 {
			t.Fatalf("%v (%d): %s", args, code, out)
		}
	}
	m, logs, stop := startEdge(t, "--data-dir", data, "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0", "--log-level", "warn")
	healthy := func() bool {
		resp, err := http.Get("http://" + m.StatusAddr() + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	if !healthy() {
		t.Fatalf("edge not healthy before the installs:\n%s", logs.String())
	}

	if out, code := edgeCmd(t, "ota", "install", "--data-dir", data, "--repo", r.Dir, "--target", "edge-1.1.0", "--without-assignment"); code == 0 || !strings.Contains(out, "expired") || !strings.Contains(out, "timestamp") {
		t.Fatalf("online install from expired metadata (%d): %s", code, out)
	}
	bundle := filepath.Join(dir, "edge-1.1.0.bundle")
	os.WriteFile(bundle, r.Bundle("edge-1.1.0"), 0o644)
	if out, code := edgeCmd(t, "ota", "install", "--data-dir", data, bundle); code == 0 || !strings.Contains(out, "expired") {
		t.Fatalf("bundle install from expired metadata (%d): %s", code, out)
	}
	out, _ := edgeCmd(t, "ota", "status", "--data-dir", data, "--json")
	var st otaStatusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Current != "1.0.0" || st.Pending != nil ||
		st.LastRefusal == nil || !strings.Contains(st.LastRefusal.Reason, "expired") {
		t.Fatalf("status after the refusals (%v): %s", err, out)
	}

	// The running edge was not touched: still healthy, and it moves the
	// two ota.refused into its outbox as it does any event.
	poll.Until(t, 60*time.Second, "the two refusals in the running edge's outbox", func() bool {
		_, err := os.Stat(filepath.Join(data, "ota", "events.jsonl"))
		return os.IsNotExist(err) && m.Status().NextSeq == 3
	})
	if !healthy() {
		t.Fatalf("edge not healthy after the refused installs:\n%s", logs.String())
	}
	// /v1/status and edge status show it: the release, the committed one,
	// the floor, the metadata's expiry and the last refusal.
	if so := m.Status().OTA; so == nil || so.Current != "1.0.0" || so.Committed != "1.0.0" || so.Pending != nil ||
		so.Expires.IsZero() || so.LastRefusal == nil || !strings.Contains(so.LastRefusal.Reason, "expired") {
		t.Fatalf("/v1/status ota %+v", so)
	}
	if out, code := edgeCmd(t, "status", "--status-listen", m.StatusAddr()); code != 0 ||
		!strings.Contains(out, "release 1.0.0") || !strings.Contains(out, "floor 0") || !strings.Contains(out, "metadata expires") || !strings.Contains(out, "expired") {
		t.Fatalf("edge status (%d): %s", code, out)
	}
	if err := stop(); err != nil {
		t.Fatalf("edge run: %v\n%s", err, logs.String())
	}
	out, code := edgeCmd(t, "outbox", "export", "--data-dir", data)
	if code != 0 || strings.Count(out, `"ota.refused"`) != 2 || !strings.Contains(out, "expired") {
		t.Fatalf("outbox (%d): %s", code, out)
	}
}

// TestOTADecideByHand follows docs/OTA.md, "Recovering a gateway by
// hand": with the release on probation and nothing running, an operator
// keeps it by raising the floor, or sends it back by pinning it known bad,
// and leaves pending.json; the next start (edge ota guard) finishes the
// decision and records its event for the ledger.
func TestOTADecideByHand(t *testing.T) {
	for _, tc := range []struct {
		name, current, kind string
		decide              func(t *testing.T, otaDir string)
	}{
		{"keep", "1.1.0", "ota.committed", func(t *testing.T, otaDir string) {
			if err := os.WriteFile(filepath.Join(otaDir, "trust", "state.json"), []byte(`{"floor":2,"verified":"2026-01-01T00:00:00Z"}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"go back", "1.0.0", "ota.rolled_back", func(t *testing.T, otaDir string) {
			if err := os.WriteFile(filepath.Join(otaDir, "known-bad.json"), []byte(`{"1.1.0": "rolled back by hand: till printer broke"}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := firmwaretest.New(t, firmwaretest.Options{Now: time.Now().UTC().Truncate(time.Second)})
			r.AddTarget("edge-1.1.0", []byte("#!/bin/sh\necho 1.1.0\n"), firmware.Custom{Version: "1.1.0", Release: 2, Channel: "stable"})
			r.Publish()
			root := filepath.Join(dir, "root.json")
			os.WriteFile(root, r.RootBytes(1), 0o644)
			bin := filepath.Join(dir, "edge-1.0.0")
			os.WriteFile(bin, []byte("#!/bin/sh\necho 1.0.0\n"), 0o755)
			bundle := filepath.Join(dir, "edge-1.1.0.bundle")
			os.WriteFile(bundle, r.Bundle("edge-1.1.0"), 0o644)
			data := filepath.Join(dir, "data")
			for _, args := range [][]string{
				{"ota", "init", "--data-dir", data, "--root", root},
				{"ota", "adopt", "--data-dir", data, "--binary", bin, "--version", "1.0.0"},
				{"ota", "install", "--data-dir", data, bundle},
			} {
				if out, code := edgeCmd(t, args...); code != 0 {
					t.Fatalf("%v (%d): %s", args, code, out)
				}
			}
			otaDir := filepath.Join(data, "ota")
			tc.decide(t, otaDir)
			if out, code := edgeCmd(t, "ota", "guard", "--data-dir", data); code != 0 || !strings.Contains(out, "starting "+tc.current) {
				t.Fatalf("guard after deciding by hand (%d): %s", code, out)
			}
			out, _ := edgeCmd(t, "ota", "status", "--data-dir", data, "--json")
			var st otaStatusJSON
			if err := json.Unmarshal([]byte(out), &st); err != nil || st.Current != tc.current || st.Pending != nil {
				t.Fatalf("status (%v): %s", err, out)
			}
			// The systemd unit's guard runs the committed release's binary.
			if b, err := os.ReadFile(filepath.Join(otaDir, "committed", "edge")); err != nil || !strings.Contains(string(b), "echo "+tc.current) {
				t.Fatalf("committed/edge %q (%v), want release %s", b, err, tc.current)
			}
			var got []ota.Event
			otaSpool(otaDir).Drain(func(evs []ota.Event) error {
				for _, e := range evs {
					if e.Kind == tc.kind {
						got = append(got, e)
					}
				}
				return nil
			})
			if len(got) != 1 || got[0].Version != "1.1.0" || (tc.kind == "ota.rolled_back" && !strings.Contains(got[0].Reason, "by hand")) {
				t.Fatalf("spooled %s: %+v, want one for 1.1.0", tc.kind, got)
			}
		})
	}
}
