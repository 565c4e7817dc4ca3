// Package api is the cloud's HTTP API: enrollment for edges, and the
// back-office API over the ledger (streams, events, quarantine), the
// reports, and the fleet (tenants, stores, edges, keys, enrollment and API
// tokens), plus health, readiness and metrics endpoints. docs/API.md is its reference and docs/openapi.yaml
// its OpenAPI 3.1 description.
//
// New returns one http.Handler; the caller (cmd/cloud) owns the listener,
// its TLS and its timeouts.
//
// Invariants:
//
//   - Every error is JSON {"error": "..."} saying what was wrong and what to
//     do, with the status that statusOf (errors.go) picks: that function is
//     the one place where ledger errors become HTTP statuses.
//   - The back-office endpoints need "Authorization: Bearer <token>", a token
//     made by `cloud tokens create --admin` (or POST /v1/api-tokens) and
//     checked with ledger.AuthAPIToken. Role "reader" may read; writes need
//     role "admin". POST /v1/enroll (the one-time token in its body is the
//     credential), GET /v1/cloud-key (public), /healthz, /readyz and
//     /metrics need no bearer token.
//   - Tenancy: a token is global or scoped to one tenant, and a scoped token
//     sees only its tenant's rows. Every authenticated GET runs inside
//     ledger.ReadAs (serve, tenancy.go): one read-only transaction as the
//     reader role, whose row-level security policies show only the token's
//     tenant, whichever ledger method the handler calls; the handlers filter
//     by the tenant as well (report filters, s.visible), so either layer
//     alone keeps tenants apart. The live tail, which one snapshot would
//     freeze, reads each page in its own ReadAs (tenantEvents). Handlers
//     must read through s.led(r), never s.opts.Ledger: TestTenantIsolation
//     (on a pool, as serve runs) walks every read route to catch one that
//     does not. Another tenant's row named in a path is
//     404, as if it did not exist. Writes by a scoped admin token act inside
//     its tenant only (tenantFor, ownEdge).
//   - Reports (reports.go) are the ledger's report functions served as JSON
//     or, with Accept: text/csv, CSV; money is minor units plus a decimal.
//   - Request bodies are JSON of at most MaxBodyBytes, and unknown fields
//     and query parameters are refused, so a typo is an error, not a silent
//     default.
//   - Secrets are never logged: not tokens (bearer or enrollment), not
//     request bodies. The access log names the API token by its name.
package api
