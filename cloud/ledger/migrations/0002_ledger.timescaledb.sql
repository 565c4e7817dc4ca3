-- Outpost cloud ledger, schema version 2 (TimescaleDB): the same table as
-- the native variant, as a hypertable on committed_at with 7-day chunks.
-- TimescaleDB makes chunks as rows arrive, so EnsurePartitions does nothing
-- here. See 0002_ledger.native.sql for the columns and why there is no
-- unique index.

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
	edge_time    timestamptz NOT NULL,
	hlc          bigint NOT NULL,
	shed         boolean NOT NULL DEFAULT false,
	hash         bytea NOT NULL,
	raw          bytea NOT NULL
);

ALTER SEQUENCE ledger_pos_seq OWNED BY ledger.pos;

SELECT create_hypertable('ledger', 'committed_at',
	chunk_time_interval => INTERVAL '7 days', create_default_indexes => false);

CREATE INDEX ledger_pos ON ledger (pos);
CREATE INDEX ledger_stream_seq ON ledger (edge, epoch, seq);
CREATE INDEX ledger_type_pos ON ledger (type, pos);
