-- Schema version 12: the cloud's commands to its edges (the command
-- channel, docs/OTA.md "Commands"), kept until they are delivered,
-- acknowledged, cancelled or expired, so that an edge offline when a
-- command was made gets it when it next says hello.
--
-- seq is the edge's command sequence number: the edge accepts only a seq
-- above the last it accepted, so one edge's seqs must be unique, must never
-- be reused (not even after rows are pruned) and must become visible in
-- order. edge_command_seqs holds the last seq given per edge: Enqueue takes
-- the next one with an upsert that row-locks the edge's counter until its
-- transaction ends, so two enqueuers for one edge (in one process or in
-- two cloud replicas) are serialised, a rolled-back enqueue gives its seq
-- back, and seq N+1 cannot commit before seq N. acked is the cmd of the
-- edge's last hello (the last seq it says it accepted): a push to a
-- connected edge sends every kept command after it.
CREATE TABLE edge_command_seqs (
	edge  text COLLATE "C" PRIMARY KEY REFERENCES edges (id),
	last  bigint NOT NULL CHECK (last > 0),
	acked bigint NOT NULL DEFAULT 0 CHECK (acked >= 0)
);

-- One signed command. signed is the exact COSE_Sign1 the edge gets (it
-- binds edge, seq, expires, kind and body); kind, ref and body are kept
-- beside it for the operators' views. delivered_at is when it was first
-- published (set before the publish, so that a cancel racing a delivery
-- errs towards "may have been received"), acked_at when a hello of the
-- edge first said it accepted it (hello.cmd >= seq), cancelled_at when it
-- was withdrawn (CancelRef): a cancelled or expired command is never sent
-- again.
CREATE TABLE edge_commands (
	edge         text COLLATE "C" NOT NULL REFERENCES edges (id),
	seq          bigint NOT NULL CHECK (seq > 0),
	kind         text COLLATE "C" NOT NULL CHECK (kind <> ''),
	ref          text COLLATE "C" NOT NULL DEFAULT '',
	body         bytea NOT NULL,
	signed       bytea NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now(),
	expires_at   timestamptz NOT NULL,
	delivered_at timestamptz,
	acked_at     timestamptz,
	cancelled_at timestamptz,
	PRIMARY KEY (edge, seq)
);

-- CancelRef finds a rollout's commands by ref.
CREATE INDEX edge_commands_ref ON edge_commands (ref) WHERE ref <> '';

-- The back-office API reads an edge's commands (GET /v1/edges/{id}/commands)
-- under the tenant policy of migration 0008; the counters are not read
-- through the API.
SELECT outpost_protect_edge_table('edge_commands');
