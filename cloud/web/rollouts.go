package web

import (
	"net/http"
	"net/url"

	"github.com/outpost-edge/outpost/cloud/rollout"
)

// rollouts reads the newest rollouts through the API (docs/API.md
// "Rollouts"), in its wire form, rollout.Status.
func (s *server) rollouts(r *http.Request, sess *session) ([]rollout.Status, error) {
	var b struct {
		Rollouts []rollout.Status `json:"rollouts"`
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
	var out rollout.Status
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
