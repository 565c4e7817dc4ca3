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
	// Not found unless the tenant's connection (row-level security) shows
	// the edge. Every row List returns is of id, which the token may see.
	if _, err := s.led(r).GetEdge(r.Context(), id); err != nil {
		return err
	}
	st, err := command.List(r.Context(), s.led(r).DB(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, command.ViewsOf(id, st, s.opts.Now()))
	return nil
}
