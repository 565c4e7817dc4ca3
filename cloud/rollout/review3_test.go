package rollout_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/protocol"
)

// TestOTATextWithNULCommits: an ota.* event whose version, target or
// reason holds a NUL (valid UTF-8, but not storable in a Postgres text
// column) still commits: the projection must not make the edge's whole
// batch fail, which would wedge its stream at that batch for good.
func TestOTATextWithNULCommits(t *testing.T) {
	r := newRig(t)
	r.edges("e", 1, "linux/amd64")
	r.commit("e-00", ota{kind: "downloaded", version: "1.1.0\x00x", target: "edge\x00-1.1.0", reason: "bad\x00reason"})
	r.commit("e-00", ota{kind: "refused", version: "1.1.0", target: "t\x00", reason: "r\x00"})
	var n int
	if err := r.pool.QueryRow(t.Context(), `SELECT count(*) FROM ota_edge_versions WHERE edge = 'e-00'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("ota_edge_versions rows: %d, %v", n, err)
	}
}

// TestRefusalsDoNotKeepAnEdgeAlive: an ota.command_refused event is the
// edge's gate answering whatever arrives on its cmd topic, which anyone on
// the broker can publish to (one refusal a minute, by the edge's rate
// limit). It says nothing of the assignment: an edge stuck after its
// download must go silent all the same (hawkBit #693: no timeout on "in
// progress").
func TestRefusalsDoNotKeepAnEdgeAlive(t *testing.T) {
	r := newRig(t)
	r.edges("e", 2, "linux/amd64")
	c := r.controller(r.pool)
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "100%", MaxFailures: "5", Silence: time.Second})
	r.step(c)
	as := assigned(r.status(id))
	if len(as) != 2 {
		t.Fatalf("assigned %d, want 2", len(as))
	}
	e := as[0]
	r.commit(e.Edge, ota{kind: "command_accepted", target: protocol.CommandAssign, reason: fmt.Sprintf("command %d", e.Seq)},
		ota{kind: "downloaded", version: "1.1.0", target: e.Target})
	// More than --silence later, only refusals of forged commands. Silence
	// is judged by the records' commit times, the database's clock, which
	// a test cannot move: the sleep is the point.
	time.Sleep(1500 * time.Millisecond)
	r.commit(e.Edge, ota{kind: "command_refused", target: protocol.CommandAssign, reason: "signature: not the cloud key"})
	if st := edgeStates(r.status(id))[e.Edge]; st.State != rollout.EdgeSilent {
		t.Fatalf("edge stuck after its download, heard from only by refusals, is %s, want %s: %+v", st.State, rollout.EdgeSilent, st)
	}
}

// TestInFlightBoundedByFailureBudget: a stage larger than the failure
// budget is not assigned all at once. If every edge of it could fail
// together, the failures would pass --max-failures by the whole stage
// before the pause: at most budget+1 edges are ever in flight (assigned,
// neither committed nor failed), less those failed already, so the pause
// comes at the first failure over the budget.
func TestInFlightBoundedByFailureBudget(t *testing.T) {
	r := newRig(t)
	r.edges("e", 10, "linux/amd64")
	c := r.controller(r.pool)
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "100%", MaxFailures: "1"})
	r.step(c)
	s := r.status(id)
	as := assigned(s)
	if len(as) != 2 {
		t.Fatalf("a stage of 10 with a failure budget of 1 assigned %d edges at once, want 2: %+v", len(as), s)
	}
	if !strings.Contains(s.Reason, "8 more once") {
		t.Fatalf("reason %q does not say why the others wait", s.Reason)
	}
	// One commits: one more is assigned, never more than two in flight.
	r.install(as[0].Edge, as[0].Seq, as[0].Target, "committed", "")
	r.step(c)
	if as = assigned(r.status(id)); len(as) != 3 {
		t.Fatalf("after a commit, %d assigned, want 3", len(as))
	}
	// One fails (within the budget): only one may be in flight now.
	var flying []rollout.EdgeStatus
	for _, e := range as {
		if e.State != rollout.EdgeCommitted {
			flying = append(flying, e)
		}
	}
	r.install(flying[0].Edge, flying[0].Seq, flying[0].Target, "rolled_back", "health check failed")
	r.step(c)
	if n := len(assigned(r.status(id))); n != 3 {
		t.Fatalf("with one failure and one in flight, %d assigned, want still 3", n)
	}
	// The second failure pauses it: two failures, one over the budget,
	// not the eight the stage had left.
	r.install(flying[1].Edge, flying[1].Seq, flying[1].Target, "rolled_back", "health check failed")
	r.step(c)
	s = r.status(id)
	if s.State != rollout.StatePaused || s.Failures != 2 || len(assigned(s)) != 3 {
		t.Fatalf("want paused with 2 failures and 3 assigned: %+v", s)
	}
}

// TestPausedCommandsNeverReachAReturningEdge: after a pause, what a hello
// hands out to an edge coming back is never the rollout's ota.assign:
// an edge that never got it gets nothing, one that may hold it (published,
// or acknowledged) gets the ota.cancel.
func TestPausedCommandsNeverReachAReturningEdge(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.edges("e", 3, "linux/amd64")
	c := r.controller(r.pool)
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "100%", MaxFailures: "2"})
	r.step(c)
	as := assigned(r.status(id))
	if len(as) != 3 {
		t.Fatalf("assigned %d, want 3", len(as))
	}
	never, published, acked := as[0], as[1], as[2]
	if _, err := command.Take(ctx, r.pool, published.Edge, 0, time.Now()); err != nil { // published, then the edge went away
		t.Fatal(err)
	}
	if _, err := command.Take(ctx, r.pool, acked.Edge, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := command.NoteHello(ctx, r.pool, acked.Edge, acked.Seq, time.Now()); err != nil { // its hello said it holds it
		t.Fatal(err)
	}
	if err := rollout.Pause(ctx, r.pool, r.cmds, id, "op"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		e       rollout.EdgeStatus
		after   uint64 // the returning edge's hello cmd
		cancels int
	}{{never, 0, 0}, {published, 0, 1}, {acked, acked.Seq, 1}} {
		ps, err := command.Take(ctx, r.pool, tc.e.Edge, tc.after, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[uint64]string{}
		for _, k := range []string{protocol.CommandAssign, protocol.CommandCancel} {
			for _, c := range r.commands(tc.e.Edge, k) {
				kinds[c.Seq] = k
			}
		}
		n := 0
		for _, p := range ps {
			switch kinds[p.Seq] {
			case protocol.CommandAssign:
				t.Fatalf("edge %s, back, is handed the paused rollout's ota.assign (seq %d)", tc.e.Edge, p.Seq)
			case protocol.CommandCancel:
				n++
			}
		}
		if n != tc.cancels {
			t.Fatalf("edge %s is handed %d ota.cancel, want %d", tc.e.Edge, n, tc.cancels)
		}
	}
}

// TestRevokedEdgeNeitherHoldsNorPauses: an edge revoked during a rollout
// (a stolen or closed shop's) can never commit, and went silent: it paused
// the rollout, and each resume assigned it again, to go silent again, so
// the rollout could only be aborted. A revoked edge is left out: not
// assigned, not a failure, not holding its stage.
func TestRevokedEdgeNeitherHoldsNorPauses(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.edges("e", 3, "linux/amd64")
	c := r.controller(r.pool)
	var shift time.Duration
	c.Now = func() time.Time { return time.Now().Add(shift) }
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "100%", MaxFailures: "0", Silence: time.Hour})
	r.step(c)
	s := r.status(id)
	as := assigned(s)
	if len(as) != 1 {
		t.Fatalf("assigned %d, want 1", len(as))
	}
	var pending []string
	for _, e := range s.Edges {
		if e.State == rollout.EdgePending {
			pending = append(pending, e.Edge)
		}
	}
	// The assigned edge and one pending are revoked.
	for _, e := range []string{as[0].Edge, pending[0]} {
		if err := r.l.RevokeEdge(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	shift = 2 * time.Hour // the revoked assigned edge would be silent
	r.step(c)
	if s = r.statusAt(id, time.Now().Add(shift)); s.State != rollout.StateRunning {
		t.Fatalf("a revoked edge paused the rollout: %+v", s)
	}
	if e := edgeStates(s)[as[0].Edge]; !e.Excused || !strings.Contains(e.Reason, "revoked") {
		t.Fatalf("revoked assigned edge %s shows %+v", e.Edge, e)
	}
	s = r.status(id) // the last edge, just assigned, is not silent yet
	if s.Failures != 0 {
		t.Fatalf("a revoked edge counts as a failure: %+v", s)
	}
	st := edgeStates(s)
	if e := st[pending[1]]; e.State != rollout.EdgeAssigned {
		t.Fatalf("the active edge %s is %s, want assigned: %+v", e.Edge, e.State, s)
	}
	if e := st[pending[0]]; !e.Excused || !strings.Contains(e.Reason, "revoked") {
		t.Fatalf("revoked edge %s shows %+v", e.Edge, e)
	}
	r.install(pending[1], st[pending[1]].Seq, st[pending[1]].Target, "committed", "")
	shift = 0
	r.step(c)
	if s = r.status(id); s.State != rollout.StateCompleted {
		t.Fatalf("the revoked edges hold the rollout: %+v", s)
	}
	if cs := r.commands(pending[0], protocol.CommandAssign); len(cs) != 0 {
		t.Fatalf("revoked edge %s was assigned: %+v", pending[0], cs)
	}
}
