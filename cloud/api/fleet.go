package api

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// Enrollment token lifetimes.
const (
	DefaultEnrollTTL = 24 * time.Hour
	MaxEnrollTTL     = 30 * 24 * time.Hour
)

// parsePublicKey reads and validates an Ed25519 public key given as 64 hex
// digits or as base64 of its 32 bytes (protocol.ParsePublicKey): a key of
// small order or off the curve is a 400, like a malformed one.
func parsePublicKey(field, s string) (ed25519.PublicKey, error) {
	if s == "" {
		return nil, badRequest("%s is required: the edge's 32-byte Ed25519 public key, as 64 hex digits or base64", field)
	}
	pub, err := protocol.ParsePublicKey(s)
	if err != nil {
		return nil, badRequest("%s: %v", field, err)
	}
	return pub, nil
}

func checkEdgeID(field, id string) error {
	if err := protocol.ValidateName("edge", id); err != nil {
		return badRequest("%s: %v", field, err)
	}
	return nil
}

type enrollRequest struct {
	Token     string `json:"token"`
	PublicKey string `json:"public_key"`
}

type enrollResponse struct {
	Edge           string         `json:"edge"`
	KID            protocol.KeyID `json:"kid"`
	CloudPublicKey string         `json:"cloud_public_key"` // hex
	CloudKID       protocol.KeyID `json:"cloud_kid"`
}

// enroll spends a one-time enrollment token: it registers the edge's key
// and answers with the cloud's key for the edge to pin.
func (s *server) enroll(w http.ResponseWriter, r *http.Request) error {
	var req enrollRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Token == "" {
		return badRequest("token is required: the enrollment token from cloud tokens create --edge ID")
	}
	pub, err := parsePublicKey("public_key", req.PublicKey)
	if err != nil {
		return err
	}
	e, err := s.opts.Ledger.Enroll(r.Context(), req.Token, pub)
	if err != nil {
		return err
	}
	s.log.Info("edge enrolled", "edge", e.ID, "kid", protocol.KeyIDOf(pub))
	writeJSON(w, http.StatusOK, enrollResponse{
		Edge: e.ID, KID: protocol.KeyIDOf(pub),
		CloudPublicKey: hex.EncodeToString(s.opts.CloudPublicKey), CloudKID: s.cloudKID,
	})
	return nil
}

type keyJSON struct {
	KID       protocol.KeyID `json:"kid"`
	PublicKey string         `json:"public_key"` // hex
	Status    string         `json:"status"`
	CreatedAt time.Time      `json:"created_at"`
	RevokedAt *time.Time     `json:"revoked_at,omitempty"`
}

type edgeJSON struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant,omitempty"`
	Store     string     `json:"store,omitempty"`
	Status    string     `json:"status"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Keys      []keyJSON  `json:"keys"`
	// Agent is the software the edge last named in its hello, e.g.
	// "outpost-edge/0.4.0 (linux/arm64)": the edge's own word (unsigned),
	// printable and at most 128 bytes. Absent before a hello named one.
	Agent   string     `json:"agent,omitempty"`
	AgentAt *time.Time `json:"agent_at,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func edgeOf(e ledger.Edge) edgeJSON {
	out := edgeJSON{ID: e.ID, Tenant: e.Tenant, Store: e.Store, Status: e.Status, CreatedAt: e.CreatedAt.UTC(), RevokedAt: timePtr(e.RevokedAt), Keys: []keyJSON{},
		Agent: e.Agent, AgentAt: timePtr(e.AgentAt)}
	for _, k := range e.Keys {
		out.Keys = append(out.Keys, keyJSON{KID: k.KID, PublicKey: hex.EncodeToString(k.Public), Status: k.Status,
			CreatedAt: k.CreatedAt.UTC(), RevokedAt: timePtr(k.RevokedAt)})
	}
	return out
}

type edgesBody struct {
	Edges []edgeJSON `json:"edges"`
}

func (s *server) listEdges(w http.ResponseWriter, r *http.Request) error {
	es, err := s.led(r).ListEdges(r.Context())
	if err != nil {
		return err
	}
	out := edgesBody{Edges: make([]edgeJSON, 0, len(es))}
	for _, e := range es {
		if !s.visible(r, e.ID) {
			continue
		}
		out.Edges = append(out.Edges, edgeOf(e))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getEdge(w http.ResponseWriter, r *http.Request) error {
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
	writeJSON(w, http.StatusOK, edgeOf(e))
	return nil
}

type addEdgeRequest struct {
	ID        string `json:"id"`
	PublicKey string `json:"public_key"`
	Tenant    string `json:"tenant"`
	Store     string `json:"store"`
}

func (s *server) addEdge(w http.ResponseWriter, r *http.Request) error {
	var req addEdgeRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkEdgeID("id", req.ID); err != nil {
		return err
	}
	pub, err := parsePublicKey("public_key", req.PublicKey)
	if err != nil {
		return err
	}
	tenant, err := tenantFor(r, "tenant", req.Tenant)
	if err != nil {
		return err
	}
	if tenant == "" && req.Store != "" {
		return badRequest("store needs tenant: the tenant that owns store %s", req.Store)
	}
	if tenant != "" {
		// Checked before the edge exists, so that a bad tenant or store
		// does not leave an edge without one behind.
		if err := s.opts.Ledger.CheckTenantStore(r.Context(), tenant, req.Store); err != nil {
			return err
		}
	}
	e, err := s.opts.Ledger.AddEdge(r.Context(), req.ID, pub)
	if err != nil {
		return err
	}
	if tenant != "" {
		if err := s.opts.Ledger.SetEdgeTenant(r.Context(), e.ID, tenant, req.Store); err != nil {
			return hideTenant(r, e.ID, err)
		}
		if e, err = s.opts.Ledger.GetEdge(r.Context(), e.ID); err != nil {
			return err
		}
	}
	s.log.Info("edge added", "edge", e.ID, "kid", protocol.KeyIDOf(pub), "token", info(r).token)
	w.Header().Set("Location", "/v1/edges/"+e.ID)
	writeJSON(w, http.StatusCreated, edgeOf(e))
	return nil
}

func (s *server) revokeEdge(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := checkEdgeID("edge id in the path", id); err != nil {
		return err
	}
	if err := noBody(w, r); err != nil {
		return err
	}
	if err := s.ownEdge(r, id); err != nil {
		return err
	}
	if err := s.opts.Ledger.RevokeEdge(r.Context(), id); err != nil {
		return err
	}
	s.log.Info("edge revoked", "edge", id, "token", info(r).token)
	e, err := s.opts.Ledger.GetEdge(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, edgeOf(e))
	return nil
}

type rotateKeyRequest struct {
	PublicKey string `json:"public_key"`
}

type rotateKeyResponse struct {
	Edge string         `json:"edge"`
	KID  protocol.KeyID `json:"kid"`
}

func (s *server) rotateKey(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := checkEdgeID("edge id in the path", id); err != nil {
		return err
	}
	var req rotateKeyRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	pub, err := parsePublicKey("public_key", req.PublicKey)
	if err != nil {
		return err
	}
	if err := s.ownEdge(r, id); err != nil {
		return err
	}
	kid, err := s.opts.Ledger.RotateKey(r.Context(), id, pub)
	if err != nil {
		return err
	}
	s.log.Info("edge key added", "edge", id, "kid", kid, "token", info(r).token)
	writeJSON(w, http.StatusCreated, rotateKeyResponse{Edge: id, KID: kid})
	return nil
}

func (s *server) revokeKey(w http.ResponseWriter, r *http.Request) error {
	id, kid := r.PathValue("id"), r.PathValue("kid")
	if err := checkEdgeID("edge id in the path", id); err != nil {
		return err
	}
	if !isKeyID(kid) {
		return badRequest("key id in the path must be 16 lower-case hex digits (a kid from GET /v1/edges/%s)", id)
	}
	if err := noBody(w, r); err != nil {
		return err
	}
	if err := s.ownEdge(r, id); err != nil {
		return err
	}
	if err := s.opts.Ledger.RevokeKey(r.Context(), id, protocol.KeyID(kid)); err != nil {
		return err
	}
	s.log.Info("edge key revoked", "edge", id, "kid", kid, "token", info(r).token)
	e, err := s.opts.Ledger.GetEdge(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, edgeOf(e))
	return nil
}

func isKeyID(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

type enrollTokenRequest struct {
	Edge   string `json:"edge"`
	TTL    string `json:"ttl"`
	Tenant string `json:"tenant"`
	Store  string `json:"store"`
}

type enrollTokenResponse struct {
	Token     string    `json:"token"`
	Edge      string    `json:"edge"`
	Tenant    string    `json:"tenant,omitempty"`
	Store     string    `json:"store,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *server) createEnrollToken(w http.ResponseWriter, r *http.Request) error {
	var req enrollTokenRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkEdgeID("edge", req.Edge); err != nil {
		return err
	}
	ttl := DefaultEnrollTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > MaxEnrollTTL {
			return badRequest("ttl must be a duration such as \"30m\" or \"24h\", above zero and at most %s", fmtDuration(MaxEnrollTTL))
		}
		ttl = d
	}
	tenant, err := tenantFor(r, "tenant", req.Tenant)
	if err != nil {
		return err
	}
	if tenant == "" && req.Store != "" {
		return badRequest("store needs tenant: the tenant that owns store %s", req.Store)
	}
	now := s.opts.Now()
	var tok string
	if tenant == "" {
		tok, err = s.opts.Ledger.CreateEnrollToken(r.Context(), req.Edge, ttl)
	} else {
		tok, err = s.opts.Ledger.CreateTenantEnrollToken(r.Context(), req.Edge, tenant, req.Store, ttl)
	}
	if err != nil {
		return hideTenant(r, req.Edge, err)
	}
	s.log.Info("enrollment token created", "edge", req.Edge, "tenant", tenant, "ttl", ttl, "token", info(r).token)
	writeJSON(w, http.StatusCreated, enrollTokenResponse{Token: tok, Edge: req.Edge, Tenant: tenant, Store: req.Store,
		ExpiresAt: now.Add(ttl).UTC()})
	return nil
}

// fmtDuration prints whole hours as "720h" rather than "720h0m0s".
func fmtDuration(d time.Duration) string {
	if d%time.Hour == 0 {
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return d.String()
}

type apiTokenRequest struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	Tenant string `json:"tenant"`
}

type apiTokenResponse struct {
	Token  string `json:"token"`
	Name   string `json:"name"`
	Role   string `json:"role"`
	Tenant string `json:"tenant,omitempty"`
}

func (s *server) createAPIToken(w http.ResponseWriter, r *http.Request) error {
	var req apiTokenRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkTokenName("name", req.Name); err != nil {
		return err
	}
	if req.Role != RoleAdmin && req.Role != RoleReader {
		return badRequest("role must be %q or %q", RoleAdmin, RoleReader)
	}
	tenant, err := tenantFor(r, "tenant", req.Tenant)
	if err != nil {
		return err
	}
	var tok string
	if tenant == "" {
		tok, err = s.opts.Ledger.CreateAPIToken(r.Context(), req.Name, req.Role, "")
	} else {
		tok, err = s.opts.Ledger.CreateTenantAPIToken(r.Context(), req.Name, req.Role, tenant)
	}
	if err != nil {
		return err
	}
	s.log.Info("api token created", "name", req.Name, "role", req.Role, "tenant", tenant, "token", info(r).token)
	writeJSON(w, http.StatusCreated, apiTokenResponse{Token: tok, Name: req.Name, Role: req.Role, Tenant: tenant})
	return nil
}

func (s *server) revokeAPIToken(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := checkTokenName("token name in the path", name); err != nil {
		return err
	}
	if err := noBody(w, r); err != nil {
		return err
	}
	if sc := scope(r); sc != ledger.AllTenants {
		t, err := s.opts.Ledger.APITokenTenant(r.Context(), name)
		if err != nil {
			return err
		}
		if t != sc {
			return errorf(http.StatusNotFound, "api token %q: not found", name)
		}
	}
	if err := s.opts.Ledger.RevokeAPIToken(r.Context(), name); err != nil {
		return err
	}
	s.log.Info("api token revoked", "name", name, "token", info(r).token)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkTokenName keeps API token names to what fits in a URL path and a
// log line unquoted: the same alphabet as edge ids.
func checkTokenName(field, name string) error {
	if err := protocol.ValidateName("name", name); err != nil {
		return badRequest("%s: %v", field, err)
	}
	return nil
}

// noBody refuses a body on an action that takes none, so that a client
// that thinks it is sending options learns they are not read.
func noBody(w http.ResponseWriter, r *http.Request) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", MaxBodyBytes)
	case err != nil:
		return badRequest("read request body: %v", err)
	case len(bytes.TrimSpace(b)) == 0:
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	var v struct{}
	return decode(w, r, &v)
}
