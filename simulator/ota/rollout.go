package ota

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/outpost-edge/outpost/simulator/fleet"
)

// Rollout is what `cloud rollouts status ID --json` says (the fields the
// scenario reads; docs/OTA.md).
type Rollout struct {
	ID          string         `json:"id"`
	Release     string         `json:"release"`
	Channel     string         `json:"channel"`
	State       string         `json:"state"` // running, paused, completed, aborted
	Reason      string         `json:"reason"`
	Stage       int            `json:"stage"`
	MaxFailures string         `json:"max_failures"`
	Failures    int            `json:"failures"`
	Stages      []RolloutStage `json:"stages"`
	Edges       []RolloutEdge  `json:"edges"`
}

// RolloutStage is one stage's counts.
type RolloutStage struct {
	Index       int    `json:"index"`
	Size        string `json:"size"`
	Edges       int    `json:"edges"`
	Assigned    int    `json:"assigned"`
	Accepted    int    `json:"accepted"`
	Downloading int    `json:"downloading"`
	Installed   int    `json:"installed"`
	Committed   int    `json:"committed"`
	RolledBack  int    `json:"rolled_back"`
	Refused     int    `json:"refused"`
	Silent      int    `json:"silent"`
	Cancelled   int    `json:"cancelled"`
	State       string `json:"state"` // done, active, pending
}

// RolloutEdge is one edge's state in a rollout.
type RolloutEdge struct {
	Edge   string `json:"edge"`
	Stage  int    `json:"stage"`
	State  string `json:"state"`
	Reason string `json:"reason"`
	Arch   string `json:"arch"`
	Target string `json:"target"`
}

// Edge returns the state of edge in the rollout ("" when it is not in it).
func (r *Rollout) Edge(edge string) RolloutEdge {
	for _, e := range r.Edges {
		if e.Edge == edge {
			return e
		}
	}
	return RolloutEdge{}
}

// Line is a progress line: state, stage and the counts summed over the
// stages.
func (r *Rollout) Line() string {
	var t RolloutStage
	for _, s := range r.Stages {
		t.Edges += s.Edges
		t.Assigned += s.Assigned
		t.Accepted += s.Accepted
		t.Downloading += s.Downloading
		t.Installed += s.Installed
		t.Committed += s.Committed
		t.RolledBack += s.RolledBack
		t.Refused += s.Refused
		t.Silent += s.Silent
		t.Cancelled += s.Cancelled
	}
	stage := "-"
	if r.Stage >= 0 && r.Stage < len(r.Stages) {
		stage = fmt.Sprintf("%d/%d (%s)", r.Stage+1, len(r.Stages), r.Stages[r.Stage].Size)
	}
	line := fmt.Sprintf("rollout %s of %s: %s, stage %s; edges %d: assigned %d accepted %d downloading %d installed %d committed %d rolled back %d refused %d silent %d cancelled %d; failures %d (max %s)",
		r.ID, r.Release, r.State, stage, t.Edges, t.Assigned, t.Accepted, t.Downloading, t.Installed, t.Committed, t.RolledBack, t.Refused, t.Silent, t.Cancelled, r.Failures, r.MaxFailures)
	if r.Reason != "" {
		line += "; " + r.Reason
	}
	return line
}

// CLI runs the cloud's rollout commands against the cloud's database.
type CLI struct {
	Cloud       string // the cloud program
	DatabaseURL string
}

func (c *CLI) run(ctx context.Context, args ...string) (string, error) {
	// The URL goes in the environment, where ps does not show a password.
	return fleet.RunTool(ctx, []string{"OUTPOST_DATABASE_URL=" + c.DatabaseURL}, c.Cloud, args...)
}

// Create creates a rollout (`cloud rollouts create ... --json`) and
// returns its id. args are its flags (--release, --to, --stages, ...).
func (c *CLI) Create(ctx context.Context, args ...string) (string, error) {
	out, err := c.run(ctx, append([]string{"rollouts", "create", "--json"}, args...)...)
	if err != nil {
		return "", err
	}
	var r struct {
		ID string `json:"id"`
	}
	if json.Unmarshal([]byte(out), &r) == nil && r.ID != "" {
		return r.ID, nil
	}
	if f := strings.Fields(out); len(f) > 0 {
		return f[len(f)-1], nil
	}
	return "", fmt.Errorf("cloud rollouts create printed no id: %q", out)
}

// Status reads a rollout (`cloud rollouts status ID --json`).
func (c *CLI) Status(ctx context.Context, id string) (*Rollout, error) {
	out, err := c.run(ctx, "rollouts", "status", id, "--json")
	if err != nil {
		return nil, err
	}
	var r Rollout
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, fmt.Errorf("cloud rollouts status %s: %w: %.300q", id, err, out)
	}
	return &r, nil
}
