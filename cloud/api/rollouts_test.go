package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/protocol"
)

// rolloutOf is the id of the fixture's rollout of tenant.
func rolloutOf(tenant string) string { return "rollout-" + tenant }

// insertRolloutRows makes a rollout of tenant with edge in it, and the
// edge's OTA state rows, as the controller and the commit's fold would
// (both are cloud/rollout's and tested there): the read path is what is
// under test here.
func insertRolloutRows(t *testing.T, e *env, tenant, edge string) {
	t.Helper()
	ctx := context.Background()
	id := rolloutOf(tenant)
	if _, err := rollout.Create(ctx, e.Ledger.DB(), rollout.Spec{ID: id, Release: "1.1.0", To: "all", Tenant: tenant}); err != nil {
		t.Fatal(err)
	}
	db := e.Ledger.DB()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`UPDATE rollouts SET planned_at = now() WHERE id = $1`, []any{id}},
		{`INSERT INTO rollout_edges (rollout, edge, stage, ord, arch, target, state, seq, assigned_at)
			VALUES ($1, $2, 0, 0, 'linux/amd64', 'edge-1.1.0', 'assigned', 1, now())`, []any{id, edge}},
		{`INSERT INTO ota_edge_state (edge, accepted_seq, last_kind, last_at, last_pos) VALUES ($1, 1, 'installed', now(), 1)`, []any{edge}},
		{`INSERT INTO ota_edge_versions (edge, version, target, kind, at, pos) VALUES ($1, '1.1.0', 'edge-1.1.0', 'installed', now(), 1)`, []any{edge}},
	} {
		if _, err := db.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	if err := rollout.Tag(ctx, db, edge, []string{"pilot"}, false); err != nil {
		t.Fatal(err)
	}
	// The rollout's assignment command.
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		_, err := rollout.CommandQueue{Signer: e.Cloud}.Enqueue(ctx, tx, edge, protocol.CommandAssign, id, []byte(`{}`), time.Now().Add(time.Hour))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRollouts: create, read, pause, resume and abort over the API, with
// roles and tenants.
func TestRollouts(t *testing.T) {
	f := mustTwoTenants(t)
	var ro rollout.Status
	body := map[string]any{"id": "r-1", "release": "1.1.0", "to": "all", "stages": "1,100%", "max_failures": "10%", "silence": "10m", "window": "02:00-05:00"}
	wantError(t, f.Do(t, "POST", "/v1/rollouts", f.ReaderA, body), http.StatusForbidden, "role")
	f.MustDo(t, http.StatusCreated, "POST", "/v1/rollouts", f.GlobalAdmin, body, &ro)
	if ro.ID != "r-1" || ro.State != rollout.StateRunning || ro.Silence != "10m0s" || ro.Window != "02:00-05:00" || ro.Tenant != "" || len(ro.Stages) != 2 {
		t.Fatalf("created %+v", ro)
	}
	wantError(t, f.Do(t, "POST", "/v1/rollouts", f.GlobalAdmin, body), http.StatusConflict, "already exists")
	for _, bad := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"release": "1.1.0"}, "to is required"},
		{map[string]any{"release": "1.1.0", "to": "all", "stages": "x"}, "--stages"},
		{map[string]any{"release": "1.1.0", "to": "all", "silence": "soon"}, "silence"},
		{map[string]any{"release": "1.1.0", "to": "all", "colour": "red"}, "colour"},
	} {
		wantError(t, f.Do(t, "POST", "/v1/rollouts", f.GlobalAdmin, bad.body), http.StatusBadRequest, bad.want)
	}
	// A tenant's admin makes its tenant's rollout, and cannot act for another.
	f.MustDo(t, http.StatusCreated, "POST", "/v1/rollouts", f.AdminA, map[string]any{"id": "r-a", "release": "1.1.0", "to": "all"}, &ro)
	if ro.Tenant != f.A.Tenant {
		t.Fatalf("tenant A's rollout has tenant %q", ro.Tenant)
	}
	wantError(t, f.Do(t, "POST", "/v1/rollouts", f.AdminA, map[string]any{"release": "1.1.0", "to": "all", "tenant": f.B.Tenant}), http.StatusForbidden, "scoped")
	wantError(t, f.Do(t, "POST", "/v1/rollouts/"+rolloutOf(f.B.Tenant)+"/pause", f.AdminA, nil), http.StatusNotFound, "not found")
	wantError(t, f.Do(t, "POST", "/v1/rollouts/r-1/pause", f.AdminA, nil), http.StatusNotFound, "not found")
	wantError(t, f.Do(t, "GET", "/v1/rollouts/r-1", f.ReaderA, nil), http.StatusNotFound, "not found")

	var list struct {
		Rollouts []rollout.Status `json:"rollouts"`
	}
	f.MustDo(t, http.StatusOK, "GET", "/v1/rollouts", f.ReaderA, nil, &list)
	var ids []string
	for _, r := range list.Rollouts {
		ids = append(ids, r.ID)
	}
	if strings.Join(ids, ",") != "r-a,"+rolloutOf(f.A.Tenant) {
		t.Fatalf("tenant A lists %v", ids)
	}
	f.MustDo(t, http.StatusOK, "GET", "/v1/rollouts", f.GlobalAdmin, nil, &list)
	if len(list.Rollouts) != 4 {
		t.Fatalf("the global admin lists %d rollouts", len(list.Rollouts))
	}
	f.MustDo(t, http.StatusOK, "GET", "/v1/rollouts?limit=1", f.GlobalAdmin, nil, &list)
	if len(list.Rollouts) != 1 || list.Rollouts[0].ID != "r-a" {
		t.Fatalf("limit=1 lists %+v", list.Rollouts)
	}
	wantError(t, f.Do(t, "GET", "/v1/rollouts?limit=0", f.GlobalAdmin, nil), http.StatusBadRequest, "limit")
	f.MustDo(t, http.StatusOK, "GET", "/v1/rollouts/"+rolloutOf(f.A.Tenant), f.ReaderA, nil, &ro)
	if len(ro.Edges) != 1 || ro.Edges[0].Edge != f.A.Edge || ro.Edges[0].State != rollout.EdgeInstalled || ro.Stages[0].Installed != 1 {
		t.Fatalf("tenant A's rollout: %+v", ro)
	}

	f.MustDo(t, http.StatusOK, "POST", "/v1/rollouts/r-1/pause", f.GlobalAdmin, nil, &ro)
	if ro.State != rollout.StatePaused || ro.Reason != "paused by token root" {
		t.Fatalf("after pause: %+v", ro)
	}
	f.MustDo(t, http.StatusOK, "POST", "/v1/rollouts/r-1/resume", f.GlobalAdmin, nil, &ro)
	if ro.State != rollout.StateRunning {
		t.Fatalf("after resume: %+v", ro)
	}
	wantError(t, f.Do(t, "POST", "/v1/rollouts/r-1/abort", f.ReaderA, nil), http.StatusForbidden, "role")
	f.MustDo(t, http.StatusOK, "POST", "/v1/rollouts/r-1/abort", f.GlobalAdmin, nil, &ro)
	if ro.State != rollout.StateAborted {
		t.Fatalf("after abort: %+v", ro)
	}
	wantError(t, f.Do(t, "POST", "/v1/rollouts/r-1/resume", f.GlobalAdmin, nil), http.StatusConflict, "finished")
	wantError(t, f.Do(t, "POST", "/v1/rollouts/nope/pause", f.GlobalAdmin, nil), http.StatusNotFound, "not found")
}
