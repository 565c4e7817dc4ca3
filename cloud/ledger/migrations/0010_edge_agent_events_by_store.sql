-- Schema version 10: the software an edge last said it runs, and an index
-- for the events of one store and business day.
--
-- edges.agent: the software an edge last named in the agent field of its
-- hello ("outpost-edge/VERSION (GOOS/GOARCH[/vN])"), for the Fleet page
-- and GET /v1/edges. It is the edge's own word, not covered by a signature
-- (a hello is unsigned; the broker authenticated the edge): shown as text,
-- never acted on. NoteHello stores it printable-only and at most 128 bytes
-- (ledger.CleanAgent); NULL until a hello names one.
ALTER TABLE edges
	ADD COLUMN agent    text,
	ADD COLUMN agent_at timestamptz; -- when a hello last named this agent first

-- GET /v1/events?store=&business_day= (the drill from a figure to the
-- events behind it) selects positions from projection_txns by store and
-- day; its primary key leads with tenant, so it needs its own index.
CREATE INDEX projection_txns_store_day ON projection_txns (store, business_day, pos);

-- Lag history for the Fleet page's sparkline: the lag (edge_seq - hwm) of
-- every current stream, sampled by the cloud's scheduled audit run
-- (ledger.SampleLag), the latest LagSamplesKept per stream kept. Readable
-- through the API like streams: by the tenant of its edge.
CREATE TABLE stream_lag_samples (
	edge  text COLLATE "C" NOT NULL,
	epoch bytea NOT NULL,
	at    timestamptz NOT NULL,
	lag   bigint NOT NULL CHECK (lag >= 0),
	PRIMARY KEY (edge, epoch, at),
	FOREIGN KEY (edge, epoch) REFERENCES streams (edge, epoch)
);
SELECT outpost_protect_edge_table('stream_lag_samples');
