// Package edgeauth decides which edges may hold a session on the cloud's
// embedded brokers (cloud/broker/mqtt and cloud/broker/nats), once for both.
//
// An edge logs in with its id as user name and a broker token v2 as
// password (protocol.BrokerToken, docs/PROTOCOL.md "Broker tokens"). Login
// checks, cheapest first, so that a flood of bad logins costs little:
//
//  1. the source address is not over its budget of failed logins for this
//     edge (a token bucket per IP and edge id: FailureBurst failures, one
//     more every FailureRefill), nor over its ceiling for all edges (a
//     bucket per IP: AddressFailureBurst, one more every
//     AddressFailureRefill), so that many shops behind one NAT address
//     each have a budget of their own while one address trying edge after
//     edge is still slowed;
//  2. the token parses (version 2, sizes, encodings);
//  3. the edge is not in the negative cache (unknown or revoked edges, for
//     NegativeTTL), so a flood for made-up edges costs no database lookup;
//  4. the edge's keys (one lookup, kept for KeysTTL when the Store's
//     UseCounter checks the edge and key itself, as LedgerStore's UPDATE
//     does; a token of a key not among them looks again) and the Ed25519
//     signature over the token's audience (the broker kind and the cloud's
//     key id), edge and counter;
//  5. the edge holds fewer than MaxSessionsPerEdge sessions here;
//  6. the counter is spent in the Store (Postgres: one UPDATE that refuses
//     a counter not above the highest accepted, and a revoked edge or key),
//     so a token works once on every replica together.
//
// Each accepted login is a Session that the broker keeps until the
// connection ends (Release). Run watches the Store's revocations and
// closes, within PollInterval, the sessions of every revoked edge (or of a
// revoked key) through the callback the broker gave the session (OnKick).
// A session registered before its counter is spent is kicked even if the
// revocation lands while its login is in flight.
//
// Refusals are logged at most LogBurst at once and one per LogEvery after,
// with a count of the lines suppressed. Lock order: Authenticator.mu, then
// Session.mu; the limiter, cache and log limiter have their own mutexes
// and take no other lock.
package edgeauth
