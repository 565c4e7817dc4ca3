// Package web is the back office's web page: server-rendered html/template
// pages with their CSS and a little JavaScript, all embedded in the binary,
// served by `cloud serve` on the API's listener under / (docs/BACKOFFICE.md
// describes each page).
//
// Invariants:
//
//   - The page reads and acts only through the API: every table is the
//     answer of an API endpoint, called in-process on the API's own
//     http.Handler with the signed-in user's bearer token, and every action
//     is the API's POST. So the page sees exactly what the token's role
//     (and tenant) sees through the API, with the API's own refusals, and
//     never a copy of its queries. The one direct ledger call is
//     ledger.AuthAPIToken, the check the API itself makes, to decide which
//     actions to offer (a reader is offered none; the API would refuse
//     them anyway).
//   - The token lives in an HttpOnly, SameSite=Strict cookie (Secure when
//     the request came over TLS) and nowhere else: not in a URL, a page or
//     a log. Every form carries a CSRF token: for a signed-in user an HMAC
//     of the session's token, which any replica can check; for the login
//     form a random double-submit cookie. A POST whose Origin is another
//     site's is refused as well.
//   - Nothing is loaded from the network: no fonts, no scripts, no styles
//     but our own (the Content-Security-Policy says so). Charts are SVG
//     drawn on the server; every page works with scripts off, and the
//     scripts only enhance (confirmations).
//   - Money is shown as the API gives it, integer minor units with their
//     currency (and its decimal string), never through a float. Business
//     days and hours are each store's own (its time zone); ledger, commit
//     and contact times are shown in UTC.
//   - The report pages (Today, Store and day, Reconciliation with the
//     restatement log, Inventory and each SKU's movements) read
//     GET /v1/reports/...; the Today page's script follows the live
//     tail (GET /v1/events/stream, streamed through /today/live as the
//     session's token) and refetches the page when events commit.
//   - Paths the page does not own (/v1/..., /healthz, /readyz, /metrics)
//     go to the API unchanged.
package web
