// Package api is the cloud's HTTP API: enrollment for edges, and the
// back-office API over the ledger (streams, events, quarantine) and the
// fleet (edges, keys, enrollment and API tokens), plus health, readiness
// and metrics endpoints. docs/API.md is its reference and docs/openapi.yaml
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
//   - Tenancy: edges carry no tenant yet, so the API serves a single tenant.
//     A token scoped to a tenant is refused (403) rather than shown every
//     tenant's rows.
//   - Request bodies are JSON of at most MaxBodyBytes, and unknown fields
//     and query parameters are refused, so a typo is an error, not a silent
//     default.
//   - Secrets are never logged: not tokens (bearer or enrollment), not
//     request bodies. The access log names the API token by its name.
package api
