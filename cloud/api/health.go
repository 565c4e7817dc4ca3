package api

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// healthz says the process is alive and serving. It checks only
// opts.Live (a part stuck for good), not the database, so that a slow
// database never gets the process restarted.
func (s *server) healthz(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.opts.Live != nil {
		if err := s.opts.Live(); err != nil {
			info(r).err = err
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not live: " + err.Error() + "\n"))
			return nil
		}
	}
	_, _ = w.Write([]byte("ok\n"))
	return nil
}

type readyBody struct {
	Status string `json:"status"`
}

// readyz says whether the service can do its work: the database answers,
// its schema is the one this binary knows, and opts.Ready passes.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
	defer cancel()
	if reason, err := s.notReady(ctx); err != nil {
		info(r).err = err
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "not ready: " + reason})
		return nil
	}
	writeJSON(w, http.StatusOK, readyBody{Status: "ready"})
	return nil
}

// notReady returns the reason the service is not ready (for anyone who
// asks, so without driver details) and the error behind it (for the log).
func (s *server) notReady(ctx context.Context) (string, error) {
	err := ledger.CheckSchema(ctx, s.opts.Ledger.DB())
	var se *ledger.SchemaError
	switch {
	case errors.As(err, &se) && errors.Is(err, ledger.ErrSchemaBehind):
		return fmt.Sprintf("database schema is at version %d and this binary needs %d: run cloud migrate", se.Have, se.Known), err
	case errors.As(err, &se):
		return fmt.Sprintf("database schema is at version %d, newer than this binary's %d: run the newer cloud binary", se.Have, se.Known), err
	case err != nil:
		return "database unreachable (the cloud's log has the details)", err
	}
	// Every read runs as the reader role: a serving role that may not
	// switch to it would answer every authenticated GET with a 500.
	if err := s.opts.Ledger.ReadAs(ctx, ledger.AllTenants, func(*ledger.Ledger) error { return nil }); err != nil {
		return fmt.Sprintf("the cloud's database role cannot switch to the role %s that every API read runs as: "+
			"GRANT %s TO <the cloud's role> (docs/OPERATIONS.md, Tenants)", ledger.ReaderRole, ledger.ReaderRole), err
	}
	if s.opts.Ready != nil {
		if err := s.opts.Ready(ctx); err != nil {
			return err.Error(), err
		}
	}
	return "", nil
}

type cloudKeyBody struct {
	PublicKey string         `json:"public_key"` // hex
	KID       protocol.KeyID `json:"kid"`
}

// cloudKey returns the key the cloud signs receipts with. It is public:
// an edge pins it at enrollment, and anyone may check a receipt.
func (s *server) cloudKey(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, cloudKeyBody{PublicKey: hex.EncodeToString(s.opts.CloudPublicKey), KID: s.cloudKID})
	return nil
}

// openAPI serves GET /openapi.yaml: the API's spec, docs/openapi.yaml as
// the binary embeds it.
func (s *server) openAPI(w http.ResponseWriter, r *http.Request) error {
	if s.opts.OpenAPI == nil {
		return errorf(http.StatusNotFound, "this server was built without its OpenAPI spec; docs/openapi.yaml in the source is the same document")
	}
	h := w.Header()
	h.Set("Content-Type", "application/yaml")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(s.opts.OpenAPI)
	return nil
}
