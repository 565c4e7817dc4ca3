package api

import (
	"net/http"

	"github.com/outpost-edge/outpost/cloud/command"
)

// edgeCommands is GET /v1/edges/{id}/commands: the commands the cloud
// keeps for an edge (cloud/command), in seq order, with where each stands.
// Tenant-scoped like the edge itself: another tenant's edge is not found.
func (s *server) edgeCommands(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := checkEdgeID("edge id in the path", id); err != nil {
		return err
	}
	if !mine(r, id) {
		return errorf(http.StatusNotFound, "edge %s: not found", id)
	}
	e, err := s.led(r).GetEdge(r.Context(), id)
	if err != nil {
		return err
	}
	if !s.visible(r, e.ID) {
		return errorf(http.StatusNotFound, "edge %s: not found", id)
	}
	st, err := command.List(r.Context(), s.led(r).DB(), id)
	if err != nil {
		return err
	}
	for _, c := range st {
		if !s.visible(r, c.Edge) {
			return errorf(http.StatusNotFound, "edge %s: not found", id)
		}
	}
	writeJSON(w, http.StatusOK, command.ViewsOf(id, st, s.opts.Now()))
	return nil
}
