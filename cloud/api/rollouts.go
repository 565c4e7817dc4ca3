package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/rollout"
)

// rolloutEndpoints are the staged rollouts (docs/API.md "Rollouts"):
// admin objects, read by tenant like every other read.
func (s *server) rolloutEndpoints() []endpoint {
	return []endpoint{
		{"GET /v1/rollouts", reader, s.listRollouts, []string{"limit"}, false},
		{"POST /v1/rollouts", admin, s.createRollout, nil, false},
		{"GET /v1/rollouts/{id}", reader, s.getRollout, nil, false},
		{"POST /v1/rollouts/{id}/pause", admin, s.rolloutAction("pause"), nil, false},
		{"POST /v1/rollouts/{id}/resume", admin, s.rolloutAction("resume"), nil, false},
		{"POST /v1/rollouts/{id}/abort", admin, s.rolloutAction("abort"), nil, false},
	}
}

// rolloutErr maps the rollout package's errors to statuses.
func rolloutErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rollout.ErrInvalid):
		return badRequest("%v", err)
	case errors.Is(err, rollout.ErrNotFound):
		return errorf(http.StatusNotFound, "%v", err)
	case errors.Is(err, rollout.ErrExists):
		return errorf(http.StatusConflict, "%v: choose another id, or leave it out for a new one", err)
	case errors.Is(err, rollout.ErrFinished):
		return errorf(http.StatusConflict, "%v: create a new rollout instead", err)
	}
	return err
}

type rolloutsBody struct {
	Rollouts []rollout.Status `json:"rollouts"`
}

func (s *server) listRollouts(w http.ResponseWriter, r *http.Request) error {
	limit, err := parseLimit(r)
	if err != nil {
		return err
	}
	rs, err := rollout.List(r.Context(), s.led(r).DB(), s.opts.Now(), limit)
	if err != nil {
		return err
	}
	out := rolloutsBody{Rollouts: make([]rollout.Status, 0, len(rs))}
	for _, ro := range rs {
		if s.rolloutVisible(r, ro) {
			out.Rollouts = append(out.Rollouts, ro)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getRollout(w http.ResponseWriter, r *http.Request) error {
	ro, err := rollout.Get(r.Context(), s.led(r).DB(), r.PathValue("id"), s.opts.Now())
	if err != nil {
		return rolloutErr(err)
	}
	if !s.rolloutVisible(r, ro) {
		return errorf(http.StatusNotFound, "rollout %s: not found", ro.ID)
	}
	writeJSON(w, http.StatusOK, ro)
	return nil
}

// rolloutVisible is the check after row-level security: a tenant's token
// sees its tenant's rollouts, and of them only its own edges.
func (s *server) rolloutVisible(r *http.Request, ro rollout.Status) bool {
	if scope(r) == ledger.AllTenants {
		return true
	}
	if ro.Tenant != scope(r) {
		s.log.Error("row-level security showed another tenant's rollout; dropped it", "tenant", scope(r), "rollout", ro.ID)
		return false
	}
	for _, e := range ro.Edges {
		if !s.visible(r, e.Edge) {
			return false
		}
	}
	return true
}

// createRolloutRequest is POST /v1/rollouts's body; durations are Go
// durations ("30m", "72h").
type createRolloutRequest struct {
	ID          string `json:"id"`
	Release     string `json:"release"`
	Channel     string `json:"channel"`
	To          string `json:"to"`
	Stages      string `json:"stages"`
	MaxFailures string `json:"max_failures"`
	Silence     string `json:"silence"`
	Window      string `json:"window"`
	Expires     string `json:"expires"`
	Tenant      string `json:"tenant"`
}

func (s *server) createRollout(w http.ResponseWriter, r *http.Request) error {
	var req createRolloutRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	tenant, err := tenantFor(r, "tenant", req.Tenant)
	if err != nil {
		return err
	}
	spec := rollout.Spec{ID: req.ID, Release: req.Release, Channel: req.Channel, To: req.To, Stages: req.Stages,
		MaxFailures: req.MaxFailures, Window: req.Window, Tenant: tenant, CreatedBy: "token " + info(r).token}
	for _, d := range []struct {
		name string
		v    string
		to   *time.Duration
	}{{"silence", req.Silence, &spec.Silence}, {"expires", req.Expires, &spec.Expires}} {
		if d.v == "" {
			continue
		}
		if *d.to, err = time.ParseDuration(d.v); err != nil {
			return badRequest("%s %q: want a duration such as 30m or 72h", d.name, d.v)
		}
	}
	if spec.To == "" {
		return badRequest("to is required: all, tag:TAG or stores:S1,S2")
	}
	id, err := rollout.Create(r.Context(), s.opts.Ledger.DB(), spec)
	if err != nil {
		return rolloutErr(err)
	}
	s.log.Info("rollout created", "rollout", id, "release", spec.Release, "to", spec.To, "token", info(r).token)
	ro, err := rollout.Get(r.Context(), s.opts.Ledger.DB(), id, s.opts.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, ro)
	return nil
}

// rolloutAction is pause, resume or abort of rollout {id}.
func (s *server) rolloutAction(what string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if s.opts.Signer == nil {
			return errorf(http.StatusNotImplemented, "this API has no cloud key to sign the commands that withdraw assignments")
		}
		id := r.PathValue("id")
		db := s.opts.Ledger.DB()
		tenant, err := rollout.Tenant(r.Context(), db, id)
		if err != nil {
			return rolloutErr(err)
		}
		if sc := scope(r); sc != ledger.AllTenants && tenant != sc {
			return errorf(http.StatusNotFound, "rollout %s: not found", id)
		}
		who := "token " + info(r).token
		cmds := rollout.CommandQueue{Signer: s.opts.Signer}
		switch what {
		case "pause":
			err = rollout.Pause(r.Context(), db, cmds, id, who)
		case "resume":
			err = rollout.Resume(r.Context(), db, id, who, s.opts.Now())
		case "abort":
			err = rollout.Abort(r.Context(), db, cmds, id, who)
		}
		if err != nil {
			return rolloutErr(err)
		}
		s.log.Info("rollout "+what, "rollout", id, "token", info(r).token)
		ro, err := rollout.Get(r.Context(), db, id, s.opts.Now())
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, ro)
		return nil
	}
}
