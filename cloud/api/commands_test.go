package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/api"
	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/protocol"
)

// GET /v1/edges/{id}/commands shows an edge's commands in seq order with
// where each stands, to readers of the edge's tenant only.
func TestEdgeCommands(t *testing.T) {
	ctx := context.Background()
	e := MustEnv(t, envOptions{})
	e.MustStream(t, "e1")
	e.MustStream(t, "e2")
	now := e.Clock.Now()
	assign := protocol.EncodeAssignment(protocol.Assignment{Rollout: "r-1", Channel: "stable", Target: "t", Version: "1.1.0", NotAfter: now.Add(time.Hour).UnixMilli()})
	enqueue := func(edge, ref string, body []byte, expires time.Time) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, e.Conn, func(tx pgx.Tx) error {
			_, err := command.Enqueue(ctx, tx, e.Cloud, edge, protocol.CommandAssign, ref, body, expires)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	enqueue("e1", "r-1", assign, now.Add(time.Hour))
	enqueue("e1", "r-2", []byte{0xff, 0x00}, now.Add(time.Hour))
	enqueue("e1", "", nil, now.Add(-time.Minute))
	if err := pgx.BeginFunc(ctx, e.Conn, func(tx pgx.Tx) error { _, err := command.CancelRef(ctx, tx, "r-2"); return err }); err != nil {
		t.Fatal(err)
	}

	var got command.Views
	e.MustDo(t, http.StatusOK, "GET", "/v1/edges/e1/commands", e.Reader, nil, &got)
	if got.Edge != "e1" || len(got.Commands) != 3 {
		t.Fatalf("got %+v, want e1's 3 commands", got)
	}
	for i, want := range []struct {
		state, ref string
		json       bool
	}{{command.StatePending, "r-1", true}, {command.StateCancelled, "r-2", false}, {command.StateExpired, "", false}} {
		c := got.Commands[i]
		if c.Seq != uint64(i+1) || c.State != want.state || c.Ref != want.ref || c.Kind != protocol.CommandAssign || (c.Body != nil) != want.json {
			t.Errorf("command %d: %+v, want seq %d, state %s, ref %q, JSON body %v", i, c, i+1, want.state, want.ref, want.json)
		}
	}
	if a, err := protocol.DecodeAssignment(got.Commands[0].Body); err != nil || a.Rollout != "r-1" {
		t.Errorf("the assignment's body reads back as %+v, %v", a, err)
	}
	if b := got.Commands[1].BodyBase64; string(b) != "\xff\x00" {
		t.Errorf("a body that is not JSON comes back as %q in body_base64", b)
	}
	e.MustDo(t, http.StatusOK, "GET", "/v1/edges/e2/commands", e.Reader, nil, &got)
	if got.Edge != "e2" || got.Commands == nil || len(got.Commands) != 0 {
		t.Fatalf("e2 without commands: %+v, want an empty list", got)
	}
	wantError(t, e.Do(t, "GET", "/v1/edges/ghost/commands", e.Reader, nil), http.StatusNotFound, "ghost")
	wantError(t, e.Do(t, "GET", "/v1/edges/a.b/commands", e.Reader, nil), http.StatusBadRequest, "edge id in the path")

	// Another tenant's reader does not find the edge.
	if _, err := e.Ledger.AddTenant(ctx, "other", "Other"); err != nil {
		t.Fatal(err)
	}
	tok, err := e.Ledger.CreateAPIToken(ctx, "other-reader", api.RoleReader, "other")
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, e.Do(t, "GET", "/v1/edges/e1/commands", tok, nil), http.StatusNotFound, "e1")
}
