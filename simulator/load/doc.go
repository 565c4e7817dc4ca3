// Package load plays a fleet of synthetic edges in one process, at the
// protocol level, against a real cloud: `sim load`.
//
// Each synthetic edge is what an edge is on the wire and nothing more. It
// makes its own Ed25519 key, enrolls with a one-time token (POST
// /v1/tokens, POST /v1/enroll) and pins the cloud key the enrollment
// returns; it logs in to the cloud's broker (MQTT or NATS) with its edge id
// and a fresh v2 broker token per connection; it says hello, resumes from
// the signed receipt the hello gets, and sends hash-chained records of
// point-of-sale traffic (package traffic) in segments, each with a
// checkpoint signed by its key, keeping a window of segments in flight. It
// trims only up to a receipt whose signature verifies against the pinned
// key and whose head is its own chain's hash at that seq; a nack rewinds it
// to the nack's watermark, and a window that gets no receipt within
// AckTimeout of the broker taking it is resent only when a hello shows the
// cloud's watermark stuck since the last look (edge/uplink's rule, which
// edge.go follows: see ackDue and helloAnswered). There is no outbox on disk: records are generated
// when they are first sent, and kept in memory only until they are
// receipted, so 10,000 edges with a backlog of 10,000 events each fit in
// one process. Every edge keeps its own connection (one MQTT or NATS
// connection per edge, as real edges have), and one goroutine owns each
// edge's state; the client libraries add their own few per connection.
//
// A run reports commits per second, receipt latency percentiles per edge
// and overall, nacks, resends, quarantine, the cloud's peak RSS (when the
// run knows the cloud's process), and each edge's drain time; every rate is
// also given as a ratio to a COPY ceiling measured in the same run, by a
// function the caller supplies (cmd/sim measures plain COPY of the same
// kind of rows into the ledger table of a scratch database on the same
// Postgres server, with the ledger package's own ceiling code). At the end
// it reads every stream back from the cloud's API and checks that it is
// gapless, complete, without doubles, and that its chain ends in the
// edge's own head.
//
// Like the rest of the simulator, load imports only protocol of Outpost's
// packages: it reaches the cloud over the network, as edges do.
package load
