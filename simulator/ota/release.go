package ota

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/outpost-edge/outpost/simulator/fleet"
)

// The scenario's versions.
const (
	V1      = "1.0.0" // adopted by every edge at enrollment
	V2      = "1.1.0" // good, rolled out to every edge
	V3      = "1.2.0" // bad, rolled out to the fleet with a fifth offline
	Channel = "stable"
)

// Bad faults: how the bad release fails (cmd/edge's otaFault switch).
var Bad = map[string]string{
	"panic":       "panic",          // panics before main
	"hang":        "hang",           // hangs before main: never ready
	"late-health": "unhealthy-late", // healthy three probes, then its outbox stops committing
}

// Releases are the scenario's built, signed and published releases.
type Releases struct {
	Dir        string            // where they were built and signed
	Binaries   map[string]string // version → edge binary
	Targets    map[string]string // version → signed target name (V2, V3)
	Root       string            // the signers' root.json, for `edge ota init`
	Keys       string            // the offline keys (root, targets)
	OnlineKeys string            // the cloud's snapshot and timestamp keys
	RepoDir    string            // the published repository (cloud serve --release-dir)
	Arch       string            // GOOS/GOARCH of the builds and their targets
}

// Build builds the edge program as V1, V2 and V3 (V3 with the bad fault,
// a key of Bad) from the module source into dir, then makes the release
// keys, signs V2 and V3 and publishes them with the cloud program. logf
// gets a line per step.
func Build(ctx context.Context, cloudBin, dir, bad string, logf func(string, ...any)) (*Releases, error) {
	fault, ok := Bad[bad]
	if !ok {
		return nil, fmt.Errorf("bad release %q: want panic, hang or late-health", bad)
	}
	root, err := fleet.ModuleRoot()
	if err != nil {
		return nil, fmt.Errorf("build the releases: %w", err)
	}
	r := &Releases{Dir: dir, Binaries: map[string]string{}, Targets: map[string]string{},
		Keys: filepath.Join(dir, "release-keys"), OnlineKeys: filepath.Join(dir, "release-online-keys"),
		RepoDir: filepath.Join(dir, "repo"), Arch: runtime.GOOS + "/" + runtime.GOARCH}
	r.Root = filepath.Join(r.Keys, "1.root.json")
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return nil, err
	}
	for _, b := range []struct{ version, fault string }{{V1, ""}, {V2, ""}, {V3, fault}} {
		out := filepath.Join(dir, "bin", "edge-"+b.version)
		ld := "-X main.Version=" + b.version
		if b.fault != "" {
			ld += " -X main.otaFault=" + b.fault
		}
		cmd := exec.CommandContext(ctx, fleet.GoTool(), "build", "-trimpath", "-o", out, "-ldflags", ld, "./cmd/edge")
		cmd.Dir = root
		if o, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/edge as %s: %w\n%s", b.version, err, o)
		}
		r.Binaries[b.version] = out
		what := "good"
		if b.fault != "" {
			what = "bad: -X main.otaFault=" + b.fault
		}
		logf("release %s: built %s (%s)", b.version, out, what)
	}
	cloud := func(args ...string) (string, error) { return fleet.RunTool(ctx, nil, cloudBin, args...) }
	if _, err := cloud("release", "keys", "init", "--keys", r.Keys, "--release-online-keys", r.OnlineKeys); err != nil {
		return nil, err
	}
	logf("release keys: offline root and targets keys in %s, online snapshot and timestamp keys in %s", r.Keys, r.OnlineKeys)
	var arts []string
	for _, v := range []string{V2, V3} {
		name := "edge-" + v + "-" + strings.ReplaceAll(r.Arch, "/", "-")
		out, err := cloud("release", "sign", r.Binaries[v], "--keys", r.Keys, "--version", v, "--channel", Channel, "--arch", r.Arch, "--name", name)
		if err != nil {
			return nil, err
		}
		r.Targets[v] = name
		arts = append(arts, r.Binaries[v])
		logf("release %s: %s", v, firstLine(out))
	}
	out, err := cloud(append([]string{"release", "publish", "--keys", r.Keys, "--release-online-keys", r.OnlineKeys, "--release-dir", r.RepoDir}, arts...)...)
	if err != nil {
		return nil, err
	}
	logf("release repository %s: %s", r.RepoDir, firstLine(out))
	return r, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// CloudArgs are the `cloud serve` flags that serve the repository, and
// run the rollout controller every second (rather than every 5 s) so that
// a run does not wait on it.
func (r *Releases) CloudArgs() []string {
	return []string{"--release-dir", r.RepoDir, "--release-online-keys", r.OnlineKeys, "--rollout-tick", "1s"}
}
