-- Outpost cloud ledger, schema version 2 (native partitioning): one row per
-- committed record, range-partitioned by commit time into monthly
-- partitions (ledger_pYYYYMM, made ahead of time by EnsurePartitions) and a
-- DEFAULT partition that catches rows no monthly partition covers.
--
-- There is no unique index on (edge, epoch, seq): a unique index on a
-- partitioned table must include the partition key. The streams watermark,
-- updated under its row lock in the same transaction, is what keeps each
-- record in exactly once.
--
-- pos is the global commit offset. A commit takes a contiguous range of it
-- from ledger_pos_seq (nextval, then setval past the range) under one
-- transaction advisory lock that it holds until COMMIT, so pos order is
-- commit order and a reader tailing by pos never skips a row that commits
-- later with a smaller pos. Nothing else may draw from the sequence, so the
-- column has no default: only Commit writes the ledger.

CREATE SEQUENCE ledger_pos_seq AS bigint;

CREATE TABLE ledger (
	edge         text COLLATE "C" NOT NULL,
	epoch        bytea NOT NULL,
	seq          bigint NOT NULL,
	pos          bigint NOT NULL,      -- from ledger_pos_seq, in ranges taken under the commit lock
	committed_at timestamptz NOT NULL,
	device       text NOT NULL,
	event_id     text NOT NULL,
	type         text NOT NULL,
	class        text NOT NULL,
	device_ts    timestamptz NOT NULL,
	edge_time    timestamptz NOT NULL, -- physical part of hlc
	hlc          bigint NOT NULL,      -- the edge's hybrid logical clock reading
	shed         boolean NOT NULL DEFAULT false, -- a tombstone of shed telemetry
	hash         bytea NOT NULL,       -- link hash: SHA-256 of raw (of the shed record for a tombstone)
	raw          bytea NOT NULL        -- the record's bytes as the edge signed them
) PARTITION BY RANGE (committed_at);

ALTER SEQUENCE ledger_pos_seq OWNED BY ledger.pos;

CREATE TABLE ledger_default PARTITION OF ledger DEFAULT;

CREATE INDEX ledger_pos ON ledger (pos);
CREATE INDEX ledger_stream_seq ON ledger (edge, epoch, seq);
CREATE INDEX ledger_type_pos ON ledger (type, pos);
