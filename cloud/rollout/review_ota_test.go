package rollout_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/internal/poll"
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

// TestAcceptanceNeverWaitsForACommandTransaction: the commit transaction
// folds an edge's ota.command_accepted into edge_commands, and must never
// wait for a transaction that holds the command's row or the edge's
// counter (a rollout enqueueing or cancelling for the edge, a hello): the
// acknowledgement is skipped instead, and comes with the next hello. The
// commit is watched in pg_stat_activity: it must end without ever being
// blocked by the holder.
func TestAcceptanceNeverWaitsForACommandTransaction(t *testing.T) {
	ctx := t.Context()
	r := newRig(t)
	r.edges("e", 1, "linux/amd64")
	const edge = "e-00"
	var seq uint64
	if err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var err error
		seq, err = r.cmds.Enqueue(ctx, tx, edge, protocol.CommandAssign, "r-1", []byte("{}"), time.Now().Add(time.Hour))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := command.Take(ctx, r.pool, edge, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		lock  string
		acked bool   // the command acknowledged after it
		last  uint64 // where the next push starts after it
	}{
		// The command's row held: nothing acknowledged.
		{`SELECT 1 FROM edge_commands WHERE edge = $1 FOR UPDATE`, false, 0},
		// The counter held: the command acknowledged, the start not raised.
		{`SELECT 1 FROM edge_command_seqs WHERE edge = $1 FOR UPDATE`, true, 0},
	} {
		lock := tc.lock
		holder, err := r.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := holder.Exec(ctx, lock, edge); err != nil {
			t.Fatal(err)
		}
		var pid int
		if err := holder.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- r.tryCommit(edge, accepted(protocol.CommandAssign, seq)) }()
		poll.For(t, time.Minute, func() error {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				return nil
			default:
			}
			var blocked int
			if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).Scan(&blocked); err != nil {
				t.Fatal(err)
			}
			if blocked > 0 {
				_ = holder.Rollback(ctx)
				t.Fatalf("%s: the commit waits for the transaction that holds it", lock)
			}
			return fmt.Errorf("the commit is running")
		})
		if err := holder.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if cs := r.commands(edge, protocol.CommandAssign); len(cs) != 1 || (cs[0].AckedAt != nil) != tc.acked {
			t.Fatalf("%s: %+v, want acknowledged %v", lock, cs, tc.acked)
		}
		if last, err := command.LastHello(ctx, r.pool, edge); err != nil || last != tc.last {
			t.Fatalf("%s: the next push starts after %d (%v), want %d", lock, last, err, tc.last)
		}
	}
	// With nothing held, the acceptance (a second copy) raises the start.
	r.commit(edge, accepted(protocol.CommandAssign, seq))
	if last, err := command.LastHello(ctx, r.pool, edge); err != nil || last != seq {
		t.Fatalf("the next push starts after %d (%v), want %d", last, err, seq)
	}
}
