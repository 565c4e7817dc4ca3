package rollout_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/protocol"
)

// TestRebuildEqualsIncremental: the OTA state folded commit by commit
// (edges committing at once, in batches of every size) equals its rebuild
// from the ledger; a live row that differs is found and the rebuild's
// swap puts it right.
func TestRebuildEqualsIncremental(t *testing.T) {
	r := newRig(t)
	edges := r.edges("e", 6, "linux/amd64")
	kinds := []string{"downloaded", "verified", "installed", "started", "committed", "rolled_back", "refused", "cancelled"}
	var g errgroup.Group
	for i, e := range edges {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			for b := range 8 {
				var evs []ota
				for range 1 + rng.IntN(6) {
					switch k := rng.IntN(len(kinds) + 3); {
					case k < len(kinds):
						evs = append(evs, ota{kind: kinds[k], version: fmt.Sprintf("1.%d.0", rng.IntN(3)),
							target: []string{"", "edge-x"}[rng.IntN(2)], reason: fmt.Sprintf("batch %d", b)})
					case k == len(kinds):
						evs = append(evs, ota{kind: "command_accepted", target: protocol.CommandAssign, reason: fmt.Sprintf("command %d", 1+rng.IntN(9))})
					case k == len(kinds)+1:
						evs = append(evs, ota{kind: "command_refused", target: protocol.CommandAssign, reason: "signature: forged"})
					default: // a device may not speak for the updater
						evs = append(evs, ota{kind: "committed", version: "6.6.6", device: "till-1"})
					}
				}
				r.commit(e, evs...)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := rollout.RebuildOTAState(ctx, r.pool, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Diffs) != 0 || res.Records == 0 {
		t.Fatalf("rebuild of %d records differs from the incremental rows:\n%v", res.Records, res.Diffs)
	}
	var n int
	if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM ota_edge_versions WHERE version = '6.6.6'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a device's ota.committed was folded: %d rows (%v)", n, err)
	}
	if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM ota_edge_state WHERE accepted_seq > 0`).Scan(&n); err != nil || n == 0 {
		t.Fatalf("no accepted command seq folded (%v)", err)
	}
	r.exec(`UPDATE ota_edge_versions SET kind = 'committed', reason = 'forged' WHERE edge = $1`, edges[0])
	r.exec(`DELETE FROM ota_edge_state WHERE edge = $1`, edges[1])
	res, err = rollout.RebuildOTAState(ctx, r.pool, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Diffs) == 0 || !res.Swapped {
		t.Fatalf("a tampered live row was not found: %+v", res)
	}
	if res, err = rollout.RebuildOTAState(ctx, r.pool, false); err != nil || len(res.Diffs) != 0 {
		t.Fatalf("after the swap: %v %v", res.Diffs, err)
	}
}

// TestTwoControllersRace: two controllers (two replicas, each with its
// own pool) step one rollout at once while its edges install and an
// operator pauses and resumes it: no edge ever holds two live assignments
// of it, and the last pause is never lost (nothing is assigned after it,
// and every assignment not acknowledged is cancelled).
func TestTwoControllersRace(t *testing.T) {
	r := newRig(t)
	edges := r.edges("e", 24, "linux/amd64")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca := r.controller(ledgertest.Pool(t, r.url))
	cb := r.controller(ledgertest.Pool(t, r.url))
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "2,25%,50%,100%", MaxFailures: "100%"})

	var wg sync.WaitGroup
	stepErrs := make(chan error, 2)
	for _, c := range []*rollout.Controller{ca, cb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := c.Step(ctx); err != nil && ctx.Err() == nil {
					stepErrs <- err
					return
				}
			}
		}()
	}
	// The edges: each installs and commits what it is assigned.
	installed := map[string]uint64{}
	installEdges := func() {
		s := r.status(id)
		for _, e := range s.Edges {
			if e.State == rollout.EdgeAssigned && installed[e.Edge] != e.Seq {
				installed[e.Edge] = e.Seq
				r.install(e.Edge, e.Seq, e.Target, "committed", "")
			}
		}
	}
	// Phase 1: no operator; the rollout must complete, each edge with one
	// assignment.
	deadline := time.Now().Add(2 * time.Minute)
	for r.status(id).State != rollout.StateCompleted {
		if time.Now().After(deadline) {
			t.Fatalf("not completed: %+v", r.status(id))
		}
		installEdges()
	}
	for _, e := range edges {
		if n := len(r.commands(e, protocol.CommandAssign)); n != 1 {
			t.Fatalf("edge %s has %d assignments, want 1", e, n)
		}
	}

	// Phase 2: a second rollout, paused and resumed while both
	// controllers run and its edges install, ending paused.
	id = r.create(rollout.Spec{ID: "r-race", Release: "1.2.0", To: "all", Stages: "1,10%,30%,100%", MaxFailures: "100%"})
	r.exec(`UPDATE edges SET agent = 'outpost-edge/1.1.0 (linux/amd64)'`)
	installed = map[string]uint64{}
	installEdges = func() {
		s := r.status(id)
		for i, e := range s.Edges {
			if i == len(s.Edges)-1 {
				continue // the last edge of the last stage never installs: the rollout cannot complete
			}
			if e.State == rollout.EdgeAssigned && installed[e.Edge] != e.Seq {
				installed[e.Edge] = e.Seq
				r.commit(e.Edge, ota{kind: "command_accepted", target: protocol.CommandAssign, reason: fmt.Sprintf("command %d", e.Seq)},
					ota{kind: "installed", version: "1.2.0", target: e.Target}, ota{kind: "committed", version: "1.2.0"})
			}
		}
	}
	for i := range 30 {
		installEdges()
		var err error
		if i%2 == 0 {
			err = rollout.Pause(ctx, r.pool, r.cmds, id, "op")
		} else {
			err = rollout.Resume(ctx, r.pool, id, "op", time.Now())
		}
		if err != nil {
			t.Fatal(err)
		}
		checkOneLiveAssignment(t, r, id, edges)
	}
	if err := rollout.Pause(ctx, r.pool, r.cmds, id, "op"); err != nil {
		t.Fatal(err)
	}
	var pausedAt time.Time
	if err := r.pool.QueryRow(ctx, `SELECT now()`).Scan(&pausedAt); err != nil {
		t.Fatal(err)
	}
	// Let both controllers tick on the paused rollout for a while.
	for range 20 {
		if err := ca.Step(ctx); err != nil {
			t.Fatal(err)
		}
		if err := cb.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	select {
	case err := <-stepErrs:
		t.Fatalf("controller step: %v", err)
	default:
	}
	s := r.status(id)
	if s.State != rollout.StatePaused {
		t.Fatalf("the last pause was lost: %+v", s)
	}
	for _, e := range edges {
		for _, c := range r.commands(e, protocol.CommandAssign) {
			if c.Ref != id {
				continue
			}
			if c.CreatedAt.After(pausedAt) {
				t.Fatalf("edge %s assigned (seq %d) at %s, after the pause at %s", e, c.Seq, c.CreatedAt, pausedAt)
			}
			if c.CancelledAt == nil && c.AckedAt == nil {
				t.Fatalf("edge %s's assignment seq %d is live after the pause", e, c.Seq)
			}
		}
	}
	checkOneLiveAssignment(t, r, id, edges)
}

// checkOneLiveAssignment: no edge has two assignments of rollout id that
// are neither cancelled nor settled.
func checkOneLiveAssignment(t *testing.T, r *rig, id string, edges []string) {
	t.Helper()
	for _, e := range edges {
		live := 0
		for _, c := range r.commands(e, protocol.CommandAssign) {
			if c.Ref == id && c.CancelledAt == nil {
				live++
			}
		}
		if live > 1 {
			t.Fatalf("edge %s holds %d live assignments of %s", e, live, id)
		}
	}
}
