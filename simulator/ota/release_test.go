package ota_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/simulator/fleet"
	"github.com/outpost-edge/outpost/simulator/ota"
)

// TestBuildSignPublish builds the scenario's three releases, signs and
// publishes the two updates with the cloud CLI, and checks them as an
// edge on 1.0.0 does: `edge ota check` on the published repository lists
// 1.1.0 and 1.2.0 of this machine's arch as installable, and each build
// reports its stamped version.
func TestBuildSignPublish(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the edge and cloud programs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bins, _, err := fleet.FindBinaries(ctx, "", filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	rel, err := ota.Build(ctx, bins.Cloud, filepath.Join(dir, "ota"), "panic", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ota.Build(ctx, bins.Cloud, filepath.Join(dir, "ota2"), "crash", t.Logf); err == nil {
		t.Error("Build took an unknown fault")
	}
	data := filepath.Join(dir, "edge")
	v1 := rel.Binaries[ota.V1]
	for _, args := range [][]string{
		{"ota", "init", "--data-dir", data, "--root", rel.Root},
		{"ota", "adopt", "--data-dir", data, "--binary", v1, "--version", ota.V1},
	} {
		if _, err := fleet.RunTool(ctx, nil, v1, args...); err != nil {
			t.Fatal(err)
		}
	}
	out, err := fleet.RunTool(ctx, nil, v1, "ota", "check", "--data-dir", data, "--repo", rel.RepoDir, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var check struct {
		Running struct{ Version string } `json:"running"`
		Targets []struct {
			Name        string `json:"name"`
			Installable string `json:"installable"`
			Custom      struct {
				Version string `json:"version"`
				Arch    string `json:"arch"`
				Channel string `json:"channel"`
			} `json:"custom"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(out), &check); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if check.Running.Version != ota.V1 {
		t.Errorf("the 1.0.0 build runs as %q", check.Running.Version)
	}
	got := map[string]string{}
	for _, tg := range check.Targets {
		if tg.Custom.Arch != rel.Arch || tg.Custom.Channel != ota.Channel || tg.Installable != "yes" {
			t.Errorf("target %+v", tg)
		}
		got[tg.Custom.Version] = tg.Name
	}
	if got[ota.V2] != rel.Targets[ota.V2] || got[ota.V3] != rel.Targets[ota.V3] || len(got) != 2 {
		t.Errorf("targets %v, want %v", got, rel.Targets)
	}
}
