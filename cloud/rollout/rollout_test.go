package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// TestStageAdvance: a stage advances only once every edge of it has
// committed; then the next stage's edges are assigned, and after the last
// the rollout completes.
func TestStageAdvance(t *testing.T) {
	r := newRig(t)
	amd := r.edges("a", 3, "linux/amd64")
	arm := r.edges("b", 2, "linux/arm64")
	c := r.controller(r.pool)
	id := r.create(rollout.Spec{ID: "r-1", Release: "1.1.0", To: "all", Stages: "1,60%,100%", MaxFailures: "1"})

	r.step(c)
	s := r.status(id)
	if s.State != rollout.StateRunning || s.Total != 5 || len(s.Stages) != 3 {
		t.Fatalf("after the first tick: %+v", s)
	}
	want := []int{1, 2, 2} // cumulative 1, ceil(60% of 5) = 3, 5
	for i, st := range s.Stages {
		if st.Edges != want[i] {
			t.Fatalf("stage %d has %d edges, want %d: %+v", i, st.Edges, want[i], s.Stages)
		}
	}
	as := assigned(s)
	if len(as) != 1 || as[0].Stage != 0 || s.Stages[0].Assigned != 1 || s.Stages[0].State != "active" {
		t.Fatalf("stage 0 not assigned alone: %+v", s)
	}
	first := as[0]
	wantTarget := "edge-1.1.0-linux-amd64"
	if slices.Contains(arm, first.Edge) {
		wantTarget = "edge-1.1.0-linux-arm64"
	}
	if first.Target != wantTarget {
		t.Fatalf("edge %s (%s) assigned %s, want %s", first.Edge, first.Arch, first.Target, wantTarget)
	}
	cs := r.commands(first.Edge, protocol.CommandAssign)
	if len(cs) != 1 || cs[0].Ref != id || cs[0].Seq != first.Seq {
		t.Fatalf("edge %s's assign commands: %+v", first.Edge, cs)
	}
	a, err := protocol.DecodeAssignment(cs[0].Body)
	if err != nil {
		t.Fatal(err)
	}
	if a.Rollout != id || a.Target != wantTarget || a.Version != "1.1.0" || a.Channel != "stable" || a.NotAfter <= time.Now().UnixMilli() {
		t.Fatalf("assignment %+v", a)
	}

	// Installed but not committed holds the stage.
	r.install(first.Edge, first.Seq, first.Target, "installed", "")
	r.step(c)
	s = r.status(id)
	if len(assigned(s)) != 1 || s.Stages[0].Installed != 1 || s.Stages[0].Accepted != 1 || s.Stage != 0 {
		t.Fatalf("stage 0 advanced before its edge committed: %+v", s)
	}
	r.commit(first.Edge, ota{kind: "started", version: "1.1.0"}, ota{kind: "committed", version: "1.1.0"})
	r.step(c)
	s = r.status(id)
	if s.Stage != 1 || len(assigned(s)) != 3 || s.Stages[0].Committed != 1 || s.Stages[0].State != "done" || s.Stages[1].Assigned != 2 {
		t.Fatalf("stage 1 not assigned after stage 0 committed: %+v", s)
	}
	// Every edge of stage 1 must commit: one is not enough.
	var stage1 []rollout.EdgeStatus
	for _, e := range s.Edges {
		if e.Stage == 1 {
			stage1 = append(stage1, e)
		}
	}
	r.install(stage1[0].Edge, stage1[0].Seq, stage1[0].Target, "committed", "")
	r.step(c)
	if s = r.status(id); s.Stage != 1 || len(assigned(s)) != 3 {
		t.Fatalf("stage 1 advanced with one of its two edges committed: %+v", s)
	}
	r.install(stage1[1].Edge, stage1[1].Seq, stage1[1].Target, "committed", "")
	r.step(c)
	s = r.status(id)
	if s.Stage != 2 || len(assigned(s)) != 5 {
		t.Fatalf("stage 2 not assigned: %+v", s)
	}
	for _, e := range s.Edges {
		if e.Stage == 2 {
			r.install(e.Edge, e.Seq, e.Target, "committed", "")
		}
	}
	r.step(c)
	s = r.status(id)
	if s.State != rollout.StateCompleted || s.Failures != 0 {
		t.Fatalf("not completed: %+v", s)
	}
	if st := c.Stats(); st.Assigned != 5 || st.Completed != 1 || st.AutoPauses != 0 || st.StepErrors != 0 || st.Steps < 5 {
		t.Fatalf("controller stats %+v", st)
	}
	for _, e := range append(amd, arm...) {
		if n := len(r.commands(e, protocol.CommandAssign)); n != 1 {
			t.Errorf("edge %s has %d assign commands, want 1", e, n)
		}
	}
	// A completed rollout cannot be paused.
	if err := rollout.Pause(context.Background(), r.pool, r.cmds, id, "test"); !errors.Is(err, rollout.ErrFinished) {
		t.Fatalf("pause of a completed rollout: %v", err)
	}
}

// TestArchFiltering: only edges whose hello named an arch the release has
// a target for (or already running it) are in the target set; each gets
// its arch's target.
func TestArchFiltering(t *testing.T) {
	r := newRig(t)
	r.edge("amd", "t1", "", "outpost-edge/1.0.0 (linux/amd64)")
	r.edge("arm64", "t1", "", "outpost-edge/1.0.0 (linux/arm64)")
	r.edge("armv7", "t1", "", "outpost-edge/1.0.0 (linux/arm/v7)")
	r.edge("nohello", "t1", "", "")
	r.edge("forged", "t1", "", "curl/8.0")
	r.edge("current", "t1", "", "outpost-edge/1.1.0 (linux/amd64)")
	c := r.controller(r.pool)
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "100%"})
	r.step(c)
	s := r.status(id)
	got := edgeStates(s)
	if len(got) != 2 || got["amd"].Target != "edge-1.1.0-linux-amd64" || got["arm64"].Target != "edge-1.1.0-linux-arm64" {
		t.Fatalf("edges %+v", s.Edges)
	}
	if s.Skipped != 4 || !strings.Contains(s.SkippedWhy, "no target for linux/arm/v7") || !strings.Contains(s.SkippedWhy, "already on 1.1.0") ||
		!strings.Contains(s.SkippedWhy, "2 no hello") {
		t.Fatalf("skipped %d: %s", s.Skipped, s.SkippedWhy)
	}
	for _, e := range []string{"armv7", "nohello", "forged", "current"} {
		if n := len(r.commands(e, protocol.CommandAssign)); n != 0 {
			t.Errorf("edge %s was assigned", e)
		}
	}
	// A release with one target of no arch goes to every arch.
	if err := rollout.Abort(context.Background(), r.pool, r.cmds, id, "test"); err != nil {
		t.Fatal(err)
	}
	id2 := r.create(rollout.Spec{Release: "1.1.0", Channel: "beta", To: "all", Stages: "100%"})
	r.step(c)
	if s := r.status(id2); s.Total != 3 || s.Edges[0].Target != "edge-1.1.0-beta" {
		t.Fatalf("beta rollout: %+v", s)
	}
	// A release without any target waits, and says why.
	id3 := r.create(rollout.Spec{Release: "9.9.9", To: "all"})
	r.step(c)
	if s := r.status(id3); s.State != rollout.StateRunning || !strings.Contains(s.Reason, "no signed target") || s.Total != 0 {
		t.Fatalf("rollout of an unpublished release: %+v", s)
	}
}

// TestOneUnfinishedRolloutPerEdge: an edge in a running or paused
// rollout is left out of another; once that one is finished, it is not.
func TestOneUnfinishedRolloutPerEdge(t *testing.T) {
	r := newRig(t)
	r.edges("e", 2, "linux/amd64")
	c := r.controller(r.pool)
	first := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "100%"})
	r.step(c)
	if err := rollout.Pause(context.Background(), r.pool, r.cmds, first, "op"); err != nil {
		t.Fatal(err)
	}
	second := r.create(rollout.Spec{Release: "1.2.0", To: "all", Stages: "100%"})
	r.step(c)
	if s := r.status(second); s.State != rollout.StateCompleted || s.Skipped != 2 || !strings.Contains(s.SkippedWhy, "unfinished rollout") {
		t.Fatalf("second rollout while the first is paused: %+v", s)
	}
	if err := rollout.Abort(context.Background(), r.pool, r.cmds, first, "op"); err != nil {
		t.Fatal(err)
	}
	third := r.create(rollout.Spec{Release: "1.2.0", To: "all", Stages: "100%", MaxFailures: "1"}) // both in flight at once
	r.step(c)
	if s := r.status(third); s.Total != 2 || len(assigned(s)) != 2 {
		t.Fatalf("third rollout after the first was aborted: %+v", s)
	}
}

// TestTargetSelection: --to tag:T and stores:S, and a tenant's rollout
// only takes its tenant's edges.
func TestTargetSelection(t *testing.T) {
	r := newRig(t)
	r.edge("tk", "t1", "tokyo", "outpost-edge/1.0.0 (linux/amd64)")
	r.edge("ny", "t1", "nyc", "outpost-edge/1.0.0 (linux/amd64)")
	r.edge("be", "t2", "berlin", "outpost-edge/1.0.0 (linux/amd64)")
	ctx := context.Background()
	if err := rollout.Tag(ctx, r.pool, "ny", []string{"pilot", "east"}, false); err != nil {
		t.Fatal(err)
	}
	if err := rollout.Tag(ctx, r.pool, "be", []string{"pilot"}, false); err != nil {
		t.Fatal(err)
	}
	if err := rollout.Tag(ctx, r.pool, "nope", []string{"pilot"}, false); !errors.Is(err, rollout.ErrNotFound) {
		t.Fatalf("tag of an unknown edge: %v", err)
	}
	if err := rollout.Tag(ctx, r.pool, "ny", []string{"bad tag"}, false); !errors.Is(err, rollout.ErrInvalid) {
		t.Fatalf("bad tag: %v", err)
	}
	c := r.controller(r.pool)
	cases := []struct {
		spec rollout.Spec
		want []string
	}{
		{rollout.Spec{To: "tag:pilot"}, []string{"be", "ny"}},
		{rollout.Spec{To: "tag:pilot", Tenant: "t1"}, []string{"ny"}},
		{rollout.Spec{To: "stores:tokyo,berlin"}, []string{"be", "tk"}},
		{rollout.Spec{To: "all", Tenant: "t2"}, []string{"be"}},
	}
	for _, tc := range cases {
		tc.spec.Release = "1.1.0"
		tc.spec.Stages = "100%"
		id := r.create(tc.spec)
		r.step(c)
		var got []string
		for _, e := range r.status(id).Edges {
			got = append(got, e.Edge)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("--to %s (tenant %q): edges %v, want %v", tc.spec.To, tc.spec.Tenant, got, tc.want)
		}
		if err := rollout.Abort(ctx, r.pool, r.cmds, id, "test"); err != nil {
			t.Fatal(err)
		}
	}
	tags, err := rollout.Tags(ctx, r.pool, "ny")
	if err != nil || !slices.Equal(tags, []string{"east", "pilot"}) {
		t.Fatalf("tags of ny: %v, %v", tags, err)
	}
	if err := rollout.Tag(ctx, r.pool, "ny", []string{"east"}, true); err != nil {
		t.Fatal(err)
	}
	if tags, _ := rollout.Tags(ctx, r.pool, "ny"); !slices.Equal(tags, []string{"pilot"}) {
		t.Fatalf("tags of ny after removing east: %v", tags)
	}
}

// TestSpecErrors: a bad spec is refused with an error naming the flag.
func TestSpecErrors(t *testing.T) {
	r := newRig(t)
	cases := []struct {
		spec rollout.Spec
		want string
	}{
		{rollout.Spec{To: "all"}, "--release"},
		{rollout.Spec{Release: "1.1.0", To: "everything"}, "--to"},
		{rollout.Spec{Release: "1.1.0", To: "tag:"}, "--to"},
		{rollout.Spec{Release: "1.1.0", To: "all", Stages: "5%,1%"}, "cumulative"},
		{rollout.Spec{Release: "1.1.0", To: "all", Stages: "0"}, "--stages"},
		{rollout.Spec{Release: "1.1.0", To: "all", Stages: "150%"}, "--stages"},
		{rollout.Spec{Release: "1.1.0", To: "all", MaxFailures: "x"}, "--max-failures"},
		{rollout.Spec{Release: "1.1.0", To: "all", Window: "25:00-03:00"}, "--window"},
		{rollout.Spec{Release: "1.1.0", To: "all", Silence: time.Millisecond}, "--silence"},
		{rollout.Spec{Release: "1 1", To: "all"}, "--release"},
		{rollout.Spec{ID: "a/b", Release: "1.1.0", To: "all"}, "rollout id"},
	}
	for _, tc := range cases {
		_, err := rollout.Create(context.Background(), r.pool, tc.spec)
		if !errors.Is(err, rollout.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an ErrInvalid naming %s", tc.spec, err, tc.want)
		}
	}
	r.create(rollout.Spec{ID: "dup", Release: "1.1.0", To: "all"})
	if _, err := rollout.Create(context.Background(), r.pool, rollout.Spec{ID: "dup", Release: "1.1.0", To: "all"}); !errors.Is(err, rollout.ErrExists) {
		t.Fatalf("second rollout dup: %v", err)
	}
}

// TestPauseOnFailures: rolled back, refused and silent edges are failures;
// when they exceed --max-failures the rollout pauses by itself, says why,
// and withdraws the assignments not yet started.
func TestPauseOnFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fail    []string // how each of the two edges in flight ends
		silence time.Duration
		reason  string
	}{
		{"rolled back", []string{"rolled_back", "rolled_back"}, time.Hour, "2 failures (2 rolled back) exceed 1 of 10 (10%)"},
		{"refused", []string{"refused", "rolled_back"}, time.Hour, "2 failures (1 rolled back, 1 refused) exceed 1 of 10 (10%)"},
		// The first edge, published but quiet, goes silent.
		{"silent", []string{"silent", "rolled_back"}, time.Hour, "2 failures (1 rolled back, 1 silent) exceed 1 of 10 (10%)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.edges("e", 10, "linux/amd64")
			c := r.controller(r.pool)
			var shift time.Duration // the controller's clock runs ahead by it
			c.Now = func() time.Time { return time.Now().Add(shift) }
			id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "3,100%", MaxFailures: "10%", Silence: tc.silence})
			r.step(c)
			s := r.status(id)
			as := assigned(s)
			// A budget of 1 failure: two edges in flight at most, so that
			// the pause comes at the second failure whatever the stage's size.
			if len(as) != 2 {
				t.Fatalf("assigned %d edges, want 2: %+v", len(as), s)
			}
			var third string // the first stage's edge left pending
			for _, e := range s.Edges {
				if e.Stage == 0 && e.State == rollout.EdgePending {
					third = e.Edge
				}
			}
			if third == "" {
				t.Fatalf("no pending edge in stage 0: %+v", s)
			}
			for i, how := range tc.fail {
				if how != "silent" {
					r.install(as[i].Edge, as[i].Seq, as[i].Target, how, "health check failed: "+how)
				} else {
					r.exec(`UPDATE edge_commands SET delivered_at = now() WHERE edge = $1`, as[i].Edge) // published, not acknowledged
				}
			}
			r.step(c)
			if tc.name == "silent" {
				// One failure is within the budget (1 of 10): still running,
				// and nothing more is assigned with one failed and one in
				// flight, until the quiet edge's --silence has passed.
				if s := r.status(id); s.State != rollout.StateRunning || s.Failures != 1 || len(assigned(s)) != 2 {
					t.Fatalf("before --silence passed: %+v", s)
				}
				shift = tc.silence + time.Minute
				r.step(c)
			}
			s = r.statusAt(id, time.Now().Add(shift))
			if s.State != rollout.StatePaused {
				t.Fatalf("not paused: %+v", s)
			}
			if s.Reason != "paused: "+tc.reason {
				t.Fatalf("reason %q, want %q", s.Reason, "paused: "+tc.reason)
			}
			if want := int(tc.reason[0] - '0'); s.Failures != want {
				t.Fatalf("failures %d", s.Failures)
			}
			if st := c.Stats(); st.AutoPauses != 1 || st.Assigned != 2 {
				t.Fatalf("controller stats %+v", st)
			}
			st := edgeStates(s)
			if e := st[as[1].Edge]; e.Reason == "" {
				t.Fatalf("no reason for %s: %+v", e.Edge, e)
			}
			if len(s.Stages[0].Reasons) == 0 {
				t.Fatalf("stage 0 has no failure reasons: %+v", s.Stages[0])
			}
			if cs := r.commands(third, protocol.CommandAssign); len(cs) != 0 {
				t.Fatalf("edge %s, beyond the budget, got %+v", third, cs)
			}
			if tc.name == "silent" {
				// The quiet edge's assignment is withdrawn: its command is
				// cancelled and, as it was published, an ota.cancel
				// follows; it stays a silent failure.
				q := as[0].Edge
				cs := r.commands(q, protocol.CommandAssign)
				if len(cs) != 1 || cs[0].CancelledAt == nil {
					t.Fatalf("edge %s's assign command not cancelled: %+v", q, cs)
				}
				if cc := r.commands(q, protocol.CommandCancel); len(cc) != 1 {
					t.Fatalf("edge %s got %d ota.cancel, want 1", q, len(cc))
				} else if cb, err := protocol.DecodeCancel(cc[0].Body); err != nil || cb.Rollout != id {
					t.Fatalf("ota.cancel body %s: %v", cc[0].Body, err)
				}
				if st[q].State != rollout.EdgeSilent {
					t.Fatalf("edge %s is %s, want %s", q, st[q].State, rollout.EdgeSilent)
				}
			}
			// Paused: the controller assigns nothing more.
			r.step(c)
			if n := len(assigned(r.status(id))); n != 2 {
				t.Fatalf("a paused rollout assigned: %d", n)
			}
			// Resume accepts the failures so far and assigns again what
			// was withdrawn or silent, and what the budget held back.
			if err := rollout.Resume(context.Background(), r.pool, id, "test", time.Now().Add(shift)); err != nil {
				t.Fatal(err)
			}
			shift = 0
			r.step(c)
			s = r.status(id)
			if s.State != rollout.StateRunning || s.Failures != 0 {
				t.Fatalf("after resume: %+v", s)
			}
			if tc.name != "silent" {
				if cs := r.commands(third, protocol.CommandAssign); len(cs) != 1 {
					t.Fatalf("edge %s not assigned after the resume: %+v", third, cs)
				}
				return
			}
			q := as[0].Edge
			cs := r.commands(q, protocol.CommandAssign)
			if len(cs) != 2 || cs[1].CancelledAt != nil {
				t.Fatalf("edge %s not assigned again: %+v", q, cs)
			}
			// The edge, back, says it dropped the old assignment; that is
			// not the new one's cancellation.
			r.commit(q, ota{kind: "cancelled", version: "1.1.0", target: as[0].Target, id: fmt.Sprintf("assign-%d-cancelled", cs[0].Seq)})
			if st := edgeStates(r.status(id))[q]; st.State != rollout.EdgeAssigned || st.Seq != cs[1].Seq {
				t.Fatalf("the old assignment's cancellation taken for the new one's: %+v", st)
			}
			r.commit(q, ota{kind: "cancelled", version: "1.1.0", target: as[0].Target, id: fmt.Sprintf("assign-%d-cancelled", cs[1].Seq)})
			if st := edgeStates(r.status(id))[q]; st.State != rollout.EdgeCancelled {
				t.Fatalf("the new assignment's cancellation: %+v", st)
			}
		})
	}
}

// TestSilentNeverSuccess: a silent edge within the failure budget is a
// failure that holds its stage: the rollout never advances past it.
func TestSilentNeverSuccess(t *testing.T) {
	r := newRig(t)
	r.edges("e", 3, "linux/amd64")
	c := r.controller(r.pool)
	var shift time.Duration // the controller's clock runs ahead by it
	c.Now = func() time.Time { return time.Now().Add(shift) }
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "1,100%", MaxFailures: "1", Silence: 30 * time.Minute})
	r.step(c)
	as := assigned(r.status(id))
	r.commit(as[0].Edge, ota{kind: "command_accepted", target: protocol.CommandAssign, reason: fmt.Sprintf("command %d", as[0].Seq)})
	shift = 29 * time.Minute
	r.step(c)
	if s := r.statusAt(id, time.Now().Add(shift)); s.Edges[0].State != rollout.EdgeAccepted || s.Failures != 0 {
		t.Fatalf("within --silence: %+v", s)
	}
	shift = 31 * time.Minute
	for range 3 {
		r.step(c)
		s := r.statusAt(id, time.Now().Add(shift))
		if s.Stage != 0 || len(assigned(s)) != 1 || s.State != rollout.StateRunning {
			t.Fatalf("a silent edge let the rollout on: %+v", s)
		}
		if s.Edges[0].State != rollout.EdgeSilent || s.Failures != 1 || s.Stages[0].Silent != 1 || s.Stages[0].Committed != 0 || s.Stages[0].Accepted != 1 {
			t.Fatalf("silent edge counted as %+v", s)
		}
		if !strings.Contains(s.Edges[0].Reason, "no ota event for 31m") {
			t.Fatalf("silent reason %q", s.Edges[0].Reason)
		}
	}
	// When the edge speaks again and commits, the stage goes on.
	r.commit(as[0].Edge, ota{kind: "installed", version: "1.1.0", target: as[0].Target}, ota{kind: "committed", version: "1.1.0"})
	r.step(c)
	if s := r.status(id); s.Stage != 1 || len(assigned(s)) != 3 {
		t.Fatalf("after the silent edge committed: %+v", s)
	}
}

// TestWindowInStoreZone: an edge is assigned only while its store's local
// time is in the window, and its assignment carries the window and zone.
func TestWindowInStoreZone(t *testing.T) {
	r := newRig(t)
	r.edge("tk", "t1", "tokyo", "outpost-edge/1.0.0 (linux/amd64)")
	r.edge("ny", "t1", "nyc", "outpost-edge/1.0.0 (linux/amd64)")
	r.edge("nostore", "t1", "", "outpost-edge/1.0.0 (linux/amd64)")
	now := time.Date(2026, 3, 1, 18, 30, 0, 0, time.UTC) // Tokyo 03:30, New York 13:30, UTC 18:30
	c := r.controller(r.pool)
	c.Now = func() time.Time { return now }
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "100%", Window: "02:00-05:00", Expires: 96 * time.Hour, MaxFailures: "2"})
	r.step(c)
	st := edgeStates(r.status(id))
	if st["tk"].State != rollout.EdgeAssigned || st["ny"].State != rollout.EdgePending || st["nostore"].State != rollout.EdgePending {
		t.Fatalf("at %s: %+v", now, st)
	}
	cs := r.commands("tk", protocol.CommandAssign)
	a, err := protocol.DecodeAssignment(cs[0].Body)
	if err != nil || a.Window != "02:00-05:00" || a.Zone != "Asia/Tokyo" || a.NotAfter != now.Add(96*time.Hour).UnixMilli() {
		t.Fatalf("assignment %+v (%v)", a, err)
	}
	if s := r.status(id); !strings.Contains(s.Reason, "2 waiting for their window") {
		t.Fatalf("reason %q", s.Reason)
	}
	now = time.Date(2026, 3, 2, 7, 30, 0, 0, time.UTC) // New York 02:30 (EST), Tokyo 16:30, UTC 07:30
	r.step(c)
	st = edgeStates(r.status(id))
	if st["ny"].State != rollout.EdgeAssigned || st["nostore"].State != rollout.EdgePending {
		t.Fatalf("at %s: %+v", now, st)
	}
	a, _ = protocol.DecodeAssignment(r.commands("ny", protocol.CommandAssign)[0].Body)
	if a.Zone != "America/New_York" {
		t.Fatalf("ny's zone %q", a.Zone)
	}
	now = time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC) // an edge without a store: UTC
	r.step(c)
	if st = edgeStates(r.status(id)); st["nostore"].State != rollout.EdgeAssigned {
		t.Fatalf("at %s: %+v", now, st)
	}
}

// TestSilenceCountsOnlyInsideTheWindow: an edge assigned just before its
// window closes, told to wait for the window, is not silent overnight;
// once the window is open again for longer than --silence, it is.
func TestSilenceCountsOnlyInsideTheWindow(t *testing.T) {
	r := newRig(t)
	r.edges("e", 1, "linux/amd64") // no store: UTC
	c := r.controller(r.pool)
	var shift time.Duration
	c.Now = func() time.Time { return time.Now().Add(shift) }
	now := time.Now().UTC()
	window := now.Add(-time.Hour).Format("15:04") + "-" + now.Add(time.Minute).Format("15:04") // closes within a minute
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "100%", Window: window, Silence: 30 * time.Minute, MaxFailures: "1"})
	r.step(c)
	if s := r.status(id); len(assigned(s)) != 1 {
		t.Fatalf("not assigned inside the window %s: %+v", window, s)
	}
	shift = 12 * time.Hour
	r.step(c)
	if s := r.statusAt(id, time.Now().Add(shift)); s.Edges[0].State != rollout.EdgeAssigned || s.Failures != 0 {
		t.Fatalf("silent while its window was closed: %+v", s.Edges[0])
	}
	shift = 23*time.Hour + 40*time.Minute // the window opened again 40 minutes ago
	r.step(c)
	if s := r.statusAt(id, time.Now().Add(shift)); s.Edges[0].State != rollout.EdgeSilent || s.Failures != 1 {
		t.Fatalf("not silent 40 minutes into its window: %+v", s.Edges[0])
	}
}

// TestAbortCancelsPendingCommands: abort cancels every command of the
// rollout the edges have not acknowledged, sends an ota.cancel to those
// that may hold theirs, and the rollout never assigns or resumes again.
func TestAbortCancelsPendingCommands(t *testing.T) {
	r := newRig(t)
	r.edges("e", 4, "linux/amd64")
	c := r.controller(r.pool)
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "3,100%", MaxFailures: "2"})
	r.step(c)
	as := assigned(r.status(id))
	// as[0] committed; as[1] was published; as[2] never left the cloud.
	r.install(as[0].Edge, as[0].Seq, as[0].Target, "committed", "")
	r.exec(`UPDATE edge_commands SET delivered_at = now() WHERE edge = $1`, as[1].Edge)
	ctx := context.Background()
	if err := rollout.Abort(ctx, r.pool, r.cmds, id, "alice"); err != nil {
		t.Fatal(err)
	}
	s := r.status(id)
	if s.State != rollout.StateAborted || s.Reason != "aborted by alice" {
		t.Fatalf("after abort: %+v", s)
	}
	for _, e := range as[1:] {
		cs := r.commands(e.Edge, protocol.CommandAssign)
		if len(cs) != 1 || cs[0].CancelledAt == nil {
			t.Fatalf("edge %s's assignment not cancelled: %+v", e.Edge, cs)
		}
	}
	if n := len(r.commands(as[1].Edge, protocol.CommandCancel)); n != 1 {
		t.Fatalf("published edge %s got %d ota.cancel", as[1].Edge, n)
	}
	if n := len(r.commands(as[2].Edge, protocol.CommandCancel)); n != 0 {
		t.Fatalf("edge %s, which never got its assignment, got %d ota.cancel", as[2].Edge, n)
	}
	if n := len(r.commands(as[0].Edge, protocol.CommandCancel)); n != 0 {
		t.Fatalf("committed edge %s got an ota.cancel", as[0].Edge)
	}
	if st := edgeStates(s); st[as[0].Edge].State != rollout.EdgeCommitted || st[as[2].Edge].State != rollout.EdgeCancelled {
		t.Fatalf("states after abort: %+v", st)
	}
	r.step(c)
	if n := len(assigned(r.status(id))); n != 3 {
		t.Fatalf("an aborted rollout assigned: %d", n)
	}
	if err := rollout.Resume(ctx, r.pool, id, "bob", time.Now()); !errors.Is(err, rollout.ErrFinished) {
		t.Fatalf("resume of an aborted rollout: %v", err)
	}
	if err := rollout.Abort(ctx, r.pool, r.cmds, id, "bob"); err != nil {
		t.Fatalf("abort again: %v", err)
	}
	if err := rollout.Pause(ctx, r.pool, r.cmds, "nope", "bob"); !errors.Is(err, rollout.ErrNotFound) {
		t.Fatalf("pause of an unknown rollout: %v", err)
	}
}

// TestMaxAssignPerTick: a large stage is assigned over several ticks,
// MaxAssign edges at a time.
func TestMaxAssignPerTick(t *testing.T) {
	r := newRig(t)
	r.edges("e", 5, "linux/amd64")
	c := r.controller(r.pool)
	c.MaxAssign = 2
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "100%", MaxFailures: "100%"}) // no bound from the budget
	for _, want := range []int{2, 4, 5} {
		r.step(c)
		s := r.status(id)
		if n := len(assigned(s)); n != want {
			t.Fatalf("assigned %d, want %d: %+v", n, want, s)
		}
		if more := 5 - want; more > 0 && !strings.Contains(s.Reason, fmt.Sprintf("%d more to assign", more)) {
			t.Fatalf("reason %q", s.Reason)
		}
	}
}

// TestControllerRun: Run ticks (assigning, then advancing once the first
// stage committed) until its context ends.
func TestControllerRun(t *testing.T) {
	r := newRig(t)
	r.edges("e", 2, "linux/amd64")
	c := r.controller(r.pool)
	c.Tick = 20 * time.Millisecond
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "1,100%"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	poll.For(t, time.Minute, func() error {
		if s := r.status(id); len(assigned(s)) != 1 {
			return fmt.Errorf("assigned: %+v", s.Edges)
		}
		return nil
	})
	first := assigned(r.status(id))[0]
	r.install(first.Edge, first.Seq, first.Target, "committed", "")
	poll.For(t, time.Minute, func() error {
		if s := r.status(id); len(assigned(s)) != 2 {
			return fmt.Errorf("stage 1 not assigned: %+v", s)
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a hang guard, not a timing check
		t.Fatal("Run did not return after its context ended")
	}
}

// TestCancelAcceptedIsNoAcceptance: an edge silent when the rollout
// paused (its assignment withdrawn: the command cancelled, an ota.cancel
// enqueued) comes back and accepts the ota.cancel. Its gate's seq now
// passes the withdrawn assignment's, but it never accepted that
// assignment: it is not "accepted" in the paused rollout. (Seen in `sim
// run --scenario ota`: the offline edge, back, showed as accepted.)
func TestCancelAcceptedIsNoAcceptance(t *testing.T) {
	r := newRig(t)
	r.edges("e", 10, "linux/amd64")
	c := r.controller(r.pool)
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "3,100%", MaxFailures: "2", Silence: time.Second})
	r.step(c)
	as := assigned(r.status(id))
	if len(as) != 3 {
		t.Fatalf("assigned %d edges, want 3", len(as))
	}
	r.install(as[0].Edge, as[0].Seq, as[0].Target, "rolled_back", "health check failed")
	r.exec(`UPDATE edge_commands SET delivered_at = now() WHERE edge = $1 OR edge = $2`, as[1].Edge, as[2].Edge) // published, not acknowledged
	deadline := time.Now().Add(time.Minute)
	for r.status(id).State != rollout.StatePaused {
		if time.Now().After(deadline) {
			t.Fatalf("not paused: %+v", r.status(id))
		}
		time.Sleep(100 * time.Millisecond) // waiting out --silence, on the real clock
		r.step(c)
	}
	cc := r.commands(as[2].Edge, protocol.CommandCancel)
	if len(cc) != 1 || cc[0].Seq <= as[2].Seq {
		t.Fatalf("edge %s's ota.cancel: %+v (assignment seq %d)", as[2].Edge, cc, as[2].Seq)
	}
	r.commit(as[2].Edge, ota{kind: "command_accepted", target: protocol.CommandCancel, reason: fmt.Sprintf("command %d", cc[0].Seq)})
	s := r.status(id)
	if e := edgeStates(s)[as[2].Edge]; e.State == rollout.EdgeAccepted {
		t.Errorf("edge %s accepted only the ota.cancel, and is %s in the paused rollout", e.Edge, e.State)
	}
	if s.Stages[0].Accepted != 1 {
		t.Errorf("stage 0 counts %d accepted, want 1 (the edge that rolled back)", s.Stages[0].Accepted)
	}
}
