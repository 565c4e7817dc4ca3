// Package ledger is the Postgres side of cloud ingest: the schema and its
// migrations, the commit of verified segments into the append-only ledger,
// the reads the back-office API needs, and the fleet (edges, their keys,
// enrollment and API tokens). It is the only package that talks to
// Postgres (through pgx), and it depends on nothing of Outpost's but
// protocol.
//
// # Schema
//
// Migrations are SQL files embedded in the binary (migrations/NNNN_name.sql,
// or one file per partitioning mode: NNNN_name.native.sql and
// NNNN_name.timescaledb.sql). Migrate applies the missing ones in one
// transaction under an advisory lock, records them in schema_migrations,
// and refuses a database a newer binary has migrated. CheckSchema is the
// readiness check.
//
//   - edges, edge_keys: registered edges and their Ed25519 keys by kid
//     (protocol.KeyIDOf). A kid belongs to exactly one edge. Edges and keys
//     are active or revoked; revocation is permanent.
//   - enroll_tokens, api_tokens: one-time enrollment tokens and API bearer
//     tokens, stored as SHA-256 of the plaintext, which is shown once.
//   - streams: one row per (edge, epoch) with hwm and head, the dedup and
//     order state. When an edge shows up with a new epoch, its open epochs
//     are ended (ended_at, ended_at_seq = their hwm then, next_epoch) and the
//     new one points back (prev_epoch). edge_seq, from hellos, gives the lag.
//   - ledger: one row per committed record: stream, seq, device, event id,
//     type, class, device and edge times, raw bytes, link hash, commit time
//     and pos, the global commit offset.
//   - checkpoints: the edge's signed checkpoint behind each committed
//     segment, for proofs.
//   - quarantine: segments that failed their signature or chain, with the
//     reason and the payload. Never committed.
//
// # Partitions
//
// The ledger is partitioned by commit time. With native partitioning (the
// default) there is one RANGE partition per UTC month, ledger_pYYYYMM, made
// ahead of time by EnsurePartitions (Migrate makes the current month and
// the next two; the service runs PartitionKeeper, which keeps them made:
// at start-up, then daily, retrying hourly), and a DEFAULT partition that
// catches rows of a month nobody made a partition for; EnsurePartitions
// moves such rows out when it makes their partition. Monthly, not daily:
// the reads that cannot prune (a stream's audit, a proof) plan every
// partition, so fewer partitions mean cheaper plans, and a month of even a
// large fleet's events is a comfortable table. The hot reads do prune: the
// events page and Tail bound committed_at from below by the ledger mark at
// their cursor, and the duplicate check reads the ledger at the commit time
// of the checkpoint after the record (and not at all when the duplicate
// ends at a checkpoint, as resends do).
// When TimescaleDB is installed, preloaded and may be created by the role
// (DecidePartitioning, which checks before trying, since CREATE EXTENSION
// without the preload ends the session), Migrate makes the ledger a
// hypertable on committed_at instead, with 30-day chunks from schema
// version 9 on (7-day before; migration 0009 says why), and
// EnsurePartitions does nothing. The choice is made once, when the ledger
// table is created; Partitioning reports it, and MigrateReport and
// PartitioningReport say why.
//
// Retention is DropBefore: whole months (partitions or chunks) before a
// cut, after moving each stream's floor (floor_seq) to the highest seq
// dropped, so that an honest redelivery of dropped records stays a
// duplicate instead of becoming a fork. Checkpoints are kept.
//
// A unique index on a partitioned table must include the partition key, so
// nothing in the ledger enforces one row per (edge, epoch, seq): the streams
// watermark does, updated in the same transaction as the rows, under its
// row lock. (edge, epoch, seq) has a plain index, for reads and proofs.
//
// # Commit
//
// Commit takes a batch of decoded segments, each with the edge of the topic
// it arrived on, and returns one Outcome per segment: Committed (with the
// receipt fields), Duplicate (already committed, with the stored receipt
// fields), Gap (starts above hwm+1: nack with the hwm) or Quarantined.
//
//  1. Outside any transaction, in parallel: the segment's edge must be the
//     topic's edge; its checkpoint must verify against that edge's active
//     keys (a kid registered to another edge is unknown);
//     and its records must chain from their own first prev to the signed
//     head (protocol.VerifyChain). Failures are quarantined.
//  2. One transaction for the rest. While step 1 runs, the transaction is
//     begun, and in one round trip it locks the edges the batch claims
//     (registered edges whose segments came on their own topic; a
//     transaction advisory lock per edge, in key order) and takes the
//     transaction's xid, its range of positions (one per claimed record;
//     those not committed are gaps) and its commit time
//     (ledger_take_positions). After step 1, in one round trip: insert the
//     stream rows not seen before (ON CONFLICT DO NOTHING), lock the stream
//     rows of the verified edges (SELECT ... ORDER BY edge, epoch FOR
//     UPDATE), and share-lock the signing keys and edges while re-reading
//     their status. (A rerun after a deadlock does both in one round trip.)
//  3. Per segment, in (stream, first) order, against the stream's state
//     (which the batch's earlier segments advance): last <= hwm is a
//     duplicate, and must hash to what is stored at last (or it is a fork,
//     quarantined: compared with the stored checkpoint's head when the
//     duplicate ends at one, as a resent segment does, else with the
//     ledger row, looked up at the commit time of the next checkpoint);
//     first > hwm+1 is a gap; otherwise record hwm+1 must
//     have the stored head as its prev (or it is a fork), and the records
//     above hwm are new.
//  4. COPY the new records into ledger, in the binary format written by
//     copyrows.go (each row's xid column defaults to the writing
//     transaction's xid); insert the checkpoints; advance hwm,
//     head, last_commit and last_seen; end the old epochs of an edge that
//     started a new one; run the projections with the new records; COMMIT.
//  5. Quarantined segments are written in a transaction of their own, so
//     they persist whatever the commit did.
//
// A deadlock or serialization failure reruns the transaction (up to three
// times). Commit is idempotent: a batch may be delivered any number of
// times, to any number of concurrent callers.
//
// # Locks
//
// In the commit transaction, in this order: the edge locks (transaction
// advisory locks keyed by ("outp", hashtext(edge)), taken in key order, held
// to COMMIT), then, inside ledger_take_positions, the position lock (a
// session advisory lock held only for that call, never while waiting for
// anything else), then the stream rows (FOR UPDATE, by edge then epoch, all
// epochs of each edge in the batch, so that ending an old epoch takes no
// lock out of order; new stream rows are inserted just before, in the same
// order), then edge and key rows (FOR SHARE). Commits of different edges
// share no lock but the position lock, for microseconds; commits of one edge
// run one at a time, which keeps each stream's records in seq order and in
// pos order alike, as before. Two edges whose ids hash alike simply share a
// lock. RevokeEdge and RevokeKey each update one table, so they wait for
// commits in flight and commits wait for them, and once they return no
// commit signed by the revoked key can start.
//
// # Tailing the ledger: the horizon
//
// Commits of different edges run at once, so a commit can take positions
// and commit after another that took later positions: pos order is no
// longer commit order, and a reader that paged by pos alone could move its
// cursor past a row that commits late and never see it (the bug Marten's
// and Axon's event stores had with sequence-numbered events). Readers that
// tail the ledger by pos (Events, and through it /v1/events and the SSE
// tail; Tail; LastPos, the projections' rebuild bound; and any other)
// therefore add BelowHorizon: only rows whose
// transaction id (ledger.xid, xid8) is below pg_snapshot_xmin of the
// statement's snapshot, that is, rows of transactions that had all ended
// when the read began. ledger_take_positions assigns the xid and the
// positions together under the position lock, so a larger xid always has
// larger positions: every transaction still to commit has an xid at or
// above the horizon, hence positions above every row below it. Reading
// pos > cursor below the horizon, in pos order, is therefore final: each
// row is seen once, in pos order, and none is skipped. (The xid must be
// assigned there, not earlier: the edge locks are advisory locks, which
// assign none, and ledger_take_positions refuses a transaction that
// already has one.)
//
// What it costs: a reader sees a row only once every older transaction of
// the cluster that has an xid has ended, so a long write transaction
// anywhere in the cluster (a migration, a bulk delete, a session left idle
// in a transaction) holds every tail back for as long as it runs (never
// skipping, only waiting); docs/OPERATIONS.md says how to find one.
//
// The alternatives, judged:
//   - The global commit lock (before): exact, but it ran the database side
//     of all commits (COPY to COMMIT) one at a time.
//   - Per-shard locks (commits of edges hashing to one shard serialised,
//     shards in parallel): pos order is again not commit order across
//     shards, so readers still need a horizon; the shards only add lock
//     waits between unrelated edges.
//   - A sequence plus gap detection (readers stop at a gap in pos and wait
//     for it to fill or time out): gaps are normal here (duplicates and
//     rolled-back commits leave them), so a reader must guess how long a
//     gap may stay open, and a commit slower than the guess is skipped: the
//     Marten and Axon bugs exactly. The horizon asks Postgres, which knows.
//   - Assigning pos at COMMIT (a commit-time counter): Postgres has no hook
//     there; it would need the lock back.
//
// Commit times come from ledger_take_positions too, and are strictly
// increasing in pos (ledger_time_seq keeps the last one; a clock that steps
// back holds them at the last one plus a microsecond until it catches up).
// That is what lets reads by pos prune partitions: ledger_marks keeps the
// first position and the commit time of about one commit a minute, and a
// read after pos p adds committed_at >= the time of the last mark at or
// before p.
//
// # Keys
//
// RotateKey adds a key and leaves the old ones valid until RevokeKey: the
// edge's outbox holds checkpoints signed with the old key, which must still
// verify when they are uploaded. EdgeKeys reads one edge's keys as a Keys,
// which implements protocol.Keys. Commit caches keys between batches: a kid the cache lacks
// is looked up again before a segment is refused, and a revoked key the
// cache still holds is caught by the re-read in the transaction.
package ledger
