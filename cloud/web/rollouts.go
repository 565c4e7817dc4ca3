package web

import (
	"net/http"
	"net/url"
	"sort"
	"time"
)

// The API's rollout wire forms (docs/API.md "Rollouts") that the Fleet
// page reads.

type rolloutStageJSON struct {
	Index       int               `json:"index"`
	Size        string            `json:"size"`
	Edges       int               `json:"edges"`
	Pending     int               `json:"pending"`
	Assigned    int               `json:"assigned"`
	Accepted    int               `json:"accepted"`
	Downloading int               `json:"downloading"`
	Installed   int               `json:"installed"`
	Committed   int               `json:"committed"`
	RolledBack  int               `json:"rolled_back"`
	Refused     int               `json:"refused"`
	Silent      int               `json:"silent"`
	Cancelled   int               `json:"cancelled"`
	Excused     int               `json:"excused"`
	State       string            `json:"state"`
	Reasons     map[string]string `json:"reasons"`
}

type rolloutJSON struct {
	ID          string             `json:"id"`
	Release     string             `json:"release"`
	Channel     string             `json:"channel"`
	To          string             `json:"to"`
	State       string             `json:"state"`
	Reason      string             `json:"reason"`
	Stage       int                `json:"stage"`
	MaxFailures string             `json:"max_failures"`
	Budget      int                `json:"failure_budget"`
	Failures    int                `json:"failures"`
	Silence     string             `json:"silence"`
	Window      string             `json:"window"`
	Total       int                `json:"total"`
	Skipped     int                `json:"skipped"`
	SkippedWhy  string             `json:"skipped_why"`
	CreatedAt   time.Time          `json:"created_at"`
	Stages      []rolloutStageJSON `json:"stages"`
}

// reason is an edge's failure reason, for the page.
type reason struct{ Edge, Why string }

// ReasonList lists a stage's rolled back and refused edges' reasons, by edge.
func (s rolloutStageJSON) ReasonList() []reason {
	out := make([]reason, 0, len(s.Reasons))
	for e, why := range s.Reasons {
		out = append(out, reason{e, why})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Edge < out[j].Edge })
	return out
}

func (s *server) rollouts(r *http.Request, sess *session) ([]rolloutJSON, error) {
	var b struct {
		Rollouts []rolloutJSON `json:"rollouts"`
	}
	if err := s.getJSON(r, sess, "/v1/rollouts", url.Values{"limit": {"10"}}, &b); err != nil {
		return nil, err
	}
	return b.Rollouts, nil
}

// rolloutAction pauses, resumes or aborts a rollout through the API, then
// goes back to the Fleet page saying so.
func (s *server) rolloutAction(w http.ResponseWriter, r *http.Request, sess *session) error {
	id, action := r.PathValue("id"), r.PathValue("action")
	past := map[string]string{"pause": "paused", "resume": "resumed", "abort": "aborted"}[action]
	if past == "" {
		return notFound("no rollout action %q; the actions are pause, resume and abort", action)
	}
	var out rolloutJSON
	resp, err := s.call(r, sess, http.MethodPost, "/v1/rollouts/"+url.PathEscape(id)+"/"+action, nil, nil)
	if err != nil {
		return err
	}
	if err := jsonInto(resp, &out); err != nil {
		return err
	}
	done(w, r, "Rollout "+id+" is "+past+": "+out.Reason)
	return nil
}
