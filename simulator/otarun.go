package simulator

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/outpost-edge/outpost/simulator/fleet"
	"github.com/outpost-edge/outpost/simulator/ota"
)

// OTA configures the over-the-air scenario (`sim run --scenario ota`,
// package ota). With it the run builds the releases and serves them from
// the cloud, runs every edge under `edge supervise` on ota.V1 with
// --ota-repo, and the devices' traffic lasts as long as the rollouts.
type OTA struct {
	// Bad is how the bad release fails: panic, hang or late-health.
	Bad string
	// Supervise tunes the edges' supervisors (probation, readiness).
	Supervise fleet.Supervise
	// Plan tunes the rollouts; the run fills its Releases, Rollouts, Edges
	// and Logf.
	Plan ota.Plan
}

// otaSetup builds, signs and publishes the releases before the cloud
// starts, and returns the cloud's flags that serve them.
func (r *run) otaSetup(ctx context.Context) ([]string, error) {
	rel, err := ota.Build(ctx, r.bins.Cloud, r.path("ota"), r.cfg.OTA.Bad, r.printf)
	if err != nil {
		return nil, err
	}
	r.releases = rel
	return rel.CloudArgs(), nil
}

// otaEdge sets an edge up for the scenario: supervised, on V1, trusting
// the release root and reading the cloud's repository.
func (r *run) otaEdge(eo *fleet.EdgeOptions) {
	eo.Binary = r.releases.Binaries[ota.V1]
	sup := r.cfg.OTA.Supervise
	eo.Supervise = &sup
	eo.Args = append(eo.Args, "--ota-repo", r.cloud.API+"/v1/ota/repo")
}

// otaProvision runs `edge ota init` and `edge ota adopt` for an enrolled
// edge, before its first start.
func (r *run) otaProvision(ctx context.Context, e *fleet.Edge) error {
	if err := e.OTAInit(ctx, r.releases.Root); err != nil {
		return err
	}
	return e.Adopt(ctx, r.releases.Binaries[ota.V1], ota.V1)
}

// otaPlan runs the rollouts while the devices send, then ends the traffic.
func (r *run) otaPlan(ctx context.Context) {
	defer r.noteLimit()
	p := r.cfg.OTA.Plan
	p.Releases, p.Edges, p.Logf = r.releases, r.edges, r.printf
	p.Rollouts = &ota.CLI{Cloud: r.bins.Cloud, DatabaseURL: r.cfg.DatabaseURL}
	res, err := p.Run(ctx)
	if err != nil && ctx.Err() == nil {
		// The first line: a CLI's error may go on with its usage.
		msg, _, _ := strings.Cut(err.Error(), "\n")
		res.Problems = append(res.Problems, "the scenario could not be carried out: "+msg)
		r.printf("ota: %v", err)
	}
	r.mu.Lock()
	r.otaResult = res
	r.mu.Unlock()
}

// printOTA writes the scenario's figures and problems.
func printOTA(w io.Writer, res *ota.Result) {
	if res == nil {
		return
	}
	if len(res.Problems) == 0 {
		fmt.Fprintln(w, "  ota       PASS: the good release reached every edge, committed; the bad one paused its rollout by itself, every edge that took it went back, and the offline edges installed nothing from it")
	} else {
		fmt.Fprintf(w, "  ota       FAIL: %d problems:\n", len(res.Problems))
		for _, p := range res.Problems {
			fmt.Fprintf(w, "              %s\n", p)
		}
	}
	if g := res.Good; g != nil {
		fmt.Fprintf(w, "            %s: %s; every edge on it, committed, after %s\n", ota.V2, g.State, res.GoodTime)
	}
	if b := res.Bad; b != nil {
		fmt.Fprintf(w, "            %s: %s after %s (%s), %d failures of max %s\n", ota.V3, b.State, res.PausedAfter, b.Reason, b.Failures, b.MaxFailures)
	}
	var took []string
	for _, t := range res.TookBad {
		s := t.Edge + " not back"
		if t.Returned {
			s = fmt.Sprintf("%s back in %s", t.Edge, t.Back)
		}
		took = append(took, s)
	}
	if res.Bad != nil {
		fmt.Fprintf(w, "            took %s: %d edges (%s); offline during it: %s, of them assigned it while away: %d\n",
			ota.V3, len(res.TookBad), strings.Join(took, ", "), strings.Join(res.Offline, ", "), len(res.OfflineAssigned))
	}
}
