package rollout_test

import (
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/protocol"
)

// TestOTABodyWithUnknownFieldsFolded: a later edge may say more in an
// ota.* body than this cloud knows (the fold's otaBody says so). Such an
// event is folded by the fields it knows: before, the strict body decoder
// refused the unknown field and the fold dropped the whole event, so an
// edge one version ahead of the cloud was never seen to accept, install or
// commit (the rollout counted it silent), and its acceptance acknowledged
// nothing.
func TestOTABodyWithUnknownFieldsFolded(t *testing.T) {
	ctx := t.Context()
	r := newRig(t)
	r.edges("e", 1, "linux/amd64")
	const edge = "e-00"
	later := map[string]any{"said_by_a_later_edge": "x", "count": 3}
	c := r.controller(r.pool)
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "100%", MaxFailures: "1"})
	r.step(c)
	as := assigned(r.status(id))
	if len(as) != 1 {
		t.Fatalf("assigned %d, want 1", len(as))
	}
	if _, err := command.Take(ctx, r.pool, edge, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	ev := accepted(protocol.CommandAssign, as[0].Seq)
	ev.extra = later
	r.commit(edge, ev, ota{kind: "committed", version: "1.1.0", target: "edge-1.1.0", extra: later})
	if cs := r.commands(edge, protocol.CommandAssign); len(cs) != 1 || cs[0].AckedAt == nil {
		t.Errorf("the assignment the edge accepted, in a body with a field this cloud does not know: %+v, want acknowledged", cs)
	}
	var seq int64
	var kind string
	if err := r.pool.QueryRow(ctx, `SELECT accepted_seq, last_kind FROM ota_edge_state WHERE edge = $1`, edge).Scan(&seq, &kind); err != nil {
		t.Fatalf("ota_edge_state of %s: %v (the events were not folded)", edge, err)
	}
	if uint64(seq) != as[0].Seq || kind != "committed" {
		t.Errorf("ota_edge_state: accepted %d, last %q; want %d, committed", seq, kind, as[0].Seq)
	}
	res, err := rollout.RebuildOTAState(ctx, r.pool, false)
	if err != nil || len(res.Diffs) != 0 {
		t.Errorf("rebuild: %+v, %v; want no differences", res, err)
	}
}

// TestAcceptanceWithNULKindCommits: the kind an ota.command_accepted names
// goes to Postgres as text to find the command; a NUL in it is valid UTF-8
// that Postgres refuses, and the error rolled back the whole commit (every
// edge's records in it), again on every retry (TestOTATextWithNULCommits
// for the fold's own columns). A kind that is no command kind names no
// command.
func TestAcceptanceWithNULKindCommits(t *testing.T) {
	r := newRig(t)
	r.edges("e", 1, "linux/amd64")
	r.commit("e-00", accepted(protocol.CommandAssign+"\x00", 1), accepted("Not a kind", 1))
}
