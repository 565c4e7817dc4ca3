package api

import (
	"errors"
	"net/http"

	"github.com/outpost-edge/outpost/cloud/ledger"
)

// serve runs an endpoint's handler. Every authenticated GET (every read)
// runs inside ledger.ReadAs with the token's scope: its queries run as the
// reader role, whose row-level security policies show a tenant's token
// only its tenant's rows, whichever ledger method the handler calls. The
// handler reads through s.led(r). For a tenant's token the ids of the
// tenant's edges are read first, on the owner's connection, for the
// handlers' second check (s.visible).
func (s *server) serve(w http.ResponseWriter, r *http.Request, ep endpoint) error {
	if ep.need == public || r.Method != http.MethodGet || ep.pattern == streamPattern {
		// The live tail lasts long: one snapshot would freeze it. It reads
		// each page through tenantEvents instead.
		return ep.h(w, r)
	}
	li := info(r)
	if li.scope != ledger.AllTenants {
		edges, err := s.opts.Ledger.TenantEdges(r.Context(), li.scope)
		if err != nil {
			return err
		}
		li.edges = edges
	}
	return s.opts.Ledger.ReadAs(r.Context(), li.scope, func(l *ledger.Ledger) error {
		li.led = l
		defer func() { li.led = nil }()
		return ep.h(w, r)
	})
}

// tenantEvents reads one page of events for the live tail as a read
// endpoint does: in its own ledger.ReadAs transaction with the token's
// scope, and checked row by row against the scope's edges, read again for
// each page (an edge may join the tenant while the stream runs).
func (s *server) tenantEvents(r *http.Request, f ledger.Filter) (ledger.Page, error) {
	li := info(r)
	if li.scope != ledger.AllTenants {
		edges, err := s.opts.Ledger.TenantEdges(r.Context(), li.scope)
		if err != nil {
			return ledger.Page{}, err
		}
		li.edges = edges
	}
	var p ledger.Page
	err := s.opts.Ledger.ReadAs(r.Context(), li.scope, func(l *ledger.Ledger) error {
		var err error
		p, err = l.Events(r.Context(), f)
		return err
	})
	if err != nil {
		return p, err
	}
	kept := p.Events[:0]
	for _, e := range p.Events {
		if s.visible(r, e.Edge) {
			kept = append(kept, e)
		}
	}
	p.Events = kept
	return p, nil
}

// led is the ledger a read handler reads through (bound to the token's
// tenant). Calling it outside a read is a wiring mistake, which fails
// closed.
func (s *server) led(r *http.Request) *ledger.Ledger {
	l := info(r).led
	if l == nil {
		panic("api: a read handler ran outside ledger.ReadAs")
	}
	return l
}

// scope is the request's tenant scope (ledger.AllTenants for a global
// token).
func scope(r *http.Request) string { return info(r).scope }

// visible reports whether rows of edge may be shown to the request's
// token: the check after row-level security. A row that the policies let
// through and this refuses is a bug in the policies; it is dropped and
// logged.
func (s *server) visible(r *http.Request, edge string) bool {
	if mine(r, edge) {
		return true
	}
	li := info(r)
	s.log.Error("row-level security showed a row of another tenant; dropped it", "tenant", li.scope, "edge", edge,
		"request_id", li.requestID)
	return false
}

// mine reports whether edge is one the request's token may see.
func mine(r *http.Request, edge string) bool {
	li := info(r)
	return li.scope == ledger.AllTenants || li.edges[edge]
}

// ownEdge checks, for a write by a tenant's admin token, that edge belongs
// to the token's tenant. Another tenant's edge is "not found", as it is to
// that token's reads.
func (s *server) ownEdge(r *http.Request, edge string) error {
	sc := scope(r)
	if sc == ledger.AllTenants {
		return nil
	}
	tenant, _, err := s.opts.Ledger.EdgeTenant(r.Context(), edge)
	if err != nil {
		return err
	}
	if tenant != sc {
		return errorf(http.StatusNotFound, "edge %s: not found", edge)
	}
	return nil
}

// tenantFor picks the tenant a write by the request's token applies to:
// a tenant's token writes in its own tenant only (want empty or equal); a
// global token writes where want says ("" for none).
func tenantFor(r *http.Request, field, want string) (string, error) {
	sc := scope(r)
	switch {
	case sc == ledger.AllTenants:
		return want, nil
	case want == "" || want == sc:
		return sc, nil
	}
	return "", errorf(http.StatusForbidden, "%s: token %q is scoped to tenant %q and cannot act for tenant %q; use a token of that tenant or a global admin token",
		field, info(r).token, sc, want)
}

// needGlobal refuses a tenant's token where only a global admin may act.
func needGlobal(r *http.Request, what string) error {
	if scope(r) == ledger.AllTenants {
		return nil
	}
	return errorf(http.StatusForbidden, "%s needs a global admin token, and token %q is scoped to tenant %q; ask an operator with a global admin token",
		what, info(r).token, scope(r))
}

type tenantsBody struct {
	Tenants []ledger.Tenant `json:"tenants"`
}

func (s *server) listTenants(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.led(r).Tenants(r.Context(), scope(r))
	if err != nil {
		return err
	}
	out := tenantsBody{Tenants: make([]ledger.Tenant, 0, len(ts))}
	for _, t := range ts {
		if scope(r) == ledger.AllTenants || t.ID == scope(r) {
			t.CreatedAt = t.CreatedAt.UTC()
			out.Tenants = append(out.Tenants, t)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type addTenantRequest struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func (s *server) addTenant(w http.ResponseWriter, r *http.Request) error {
	if err := needGlobal(r, "creating a tenant"); err != nil {
		return err
	}
	var req addTenantRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	t, err := s.opts.Ledger.AddTenant(r.Context(), req.ID, req.Name)
	if err != nil {
		return err
	}
	s.log.Info("tenant added", "tenant", t.ID, "token", info(r).token)
	t.CreatedAt = t.CreatedAt.UTC()
	writeJSON(w, http.StatusCreated, t)
	return nil
}

type storesBody struct {
	Stores []ledger.Store `json:"stores"`
}

func (s *server) listStores(w http.ResponseWriter, r *http.Request) error {
	sc := scope(r)
	if t := r.URL.Query().Get("tenant"); t != "" {
		if err := ledger.CheckTenantID(t); err != nil {
			return badRequest("parameter tenant: %v", err)
		}
		if sc != ledger.AllTenants && t != sc {
			// Another tenant's stores: nothing, as for any other row.
			writeJSON(w, http.StatusOK, storesBody{Stores: []ledger.Store{}})
			return nil
		}
		sc = t
	}
	ss, err := s.led(r).Stores(r.Context(), sc)
	if err != nil {
		return err
	}
	out := storesBody{Stores: make([]ledger.Store, 0, len(ss))}
	for _, st := range ss {
		if scope(r) == ledger.AllTenants || st.Tenant == scope(r) {
			st.CreatedAt = st.CreatedAt.UTC()
			out.Stores = append(out.Stores, st)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type addStoreRequest struct {
	Tenant   string `json:"tenant"`
	ID       string `json:"id"`
	Name     string `json:"name"`
	TimeZone string `json:"time_zone"`
	Currency string `json:"currency"`
}

func (s *server) addStore(w http.ResponseWriter, r *http.Request) error {
	var req addStoreRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	tenant, err := tenantFor(r, "tenant", req.Tenant)
	if err != nil {
		return err
	}
	if tenant == "" {
		return badRequest("tenant is required: the id of the tenant that owns the store (GET /v1/tenants lists them)")
	}
	st, err := s.opts.Ledger.AddStore(r.Context(), ledger.Store{Tenant: tenant, ID: req.ID, Name: req.Name,
		TimeZone: req.TimeZone, Currency: req.Currency})
	if err != nil {
		return err
	}
	s.log.Info("store added", "tenant", st.Tenant, "store", st.ID, "token", info(r).token)
	st.CreatedAt = st.CreatedAt.UTC()
	writeJSON(w, http.StatusCreated, st)
	return nil
}

// hideTenant keeps a tenant's token from learning which tenant another
// tenant's edge belongs to: edge ids are unique across tenants, so a taken
// id is a conflict, but the answer does not name its owner.
func hideTenant(r *http.Request, edge string, err error) error {
	if scope(r) != ledger.AllTenants && errors.Is(err, ledger.ErrTenantMismatch) {
		return errorf(http.StatusConflict, "edge id %s is taken; choose another edge id", edge)
	}
	return err
}
