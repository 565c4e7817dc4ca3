-- Schema version 13: staged rollouts (cloud/rollout, docs/OTA.md
-- "Operating rollouts"), edge tags, and the per-edge OTA state folded
-- from the ledger's ota.* events.

-- Tags an admin puts on edges (cloud edges tag EDGE TAG...), for a
-- rollout's --to tag:T.
CREATE TABLE edge_tags (
	edge text COLLATE "C" NOT NULL REFERENCES edges (id),
	tag  text COLLATE "C" NOT NULL CHECK (tag ~ '^[A-Za-z0-9_-]{1,64}$'),
	PRIMARY KEY (edge, tag)
);
CREATE INDEX edge_tags_tag ON edge_tags (tag);
SELECT outpost_protect_edge_table('edge_tags');

-- A rollout: release (a version) of channel to the edges of target
-- ("all", "tag:T", "stores:S1,S2"), in stages (cumulative sizes, counts or
-- percentages, the last taking every edge left). tenant is the tenant of
-- the admin token that made it ('' for a global one, which only a global
-- token sees); its target set is that tenant's edges. The controller
-- plans it on its first tick (planned_at: membership and stages frozen in
-- rollout_edges; targets maps each arch to the TUF target name) and then
-- assigns stage by stage. Every change to a rollout, by the controller or
-- by pause/resume/abort, holds its row lock.
CREATE TABLE rollouts (
	id           text COLLATE "C" PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
	tenant       text COLLATE "C" NOT NULL DEFAULT '',
	release      text NOT NULL,
	channel      text NOT NULL,
	target       text NOT NULL,
	stages       text NOT NULL,
	max_failures text NOT NULL,
	silence_ms   bigint NOT NULL CHECK (silence_ms > 0),
	window_spec  text NOT NULL DEFAULT '',
	expires_ms   bigint NOT NULL CHECK (expires_ms > 0),
	state        text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'paused', 'completed', 'aborted')),
	reason       text NOT NULL DEFAULT '',
	stage        integer NOT NULL DEFAULT 0,
	targets      jsonb,
	skipped      integer NOT NULL DEFAULT 0,
	skipped_why  text NOT NULL DEFAULT '',
	planned_at   timestamptz,
	created_by   text NOT NULL DEFAULT '',
	created_at   timestamptz NOT NULL DEFAULT now(),
	updated_at   timestamptz NOT NULL DEFAULT now()
);
SELECT outpost_protect_tenant_table('rollouts');

-- The edges of a rollout, each in its stage and its place in the
-- deterministic order. state is what the cloud did: pending (not yet
-- assigned), assigned (an ota.assign command, seq, since assigned_at) or
-- cancelled (withdrawn on pause or abort); what the edge did comes from
-- ota_edge_versions, after assigned_at.
CREATE TABLE rollout_edges (
	rollout     text COLLATE "C" NOT NULL REFERENCES rollouts (id),
	edge        text COLLATE "C" NOT NULL REFERENCES edges (id),
	stage       integer NOT NULL CHECK (stage >= 0),
	ord         integer NOT NULL,
	arch        text NOT NULL,
	target      text NOT NULL,
	zone        text NOT NULL DEFAULT '',
	state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'assigned', 'cancelled', 'excused')),
	seq         bigint,
	assigned_at timestamptz,
	PRIMARY KEY (rollout, edge)
);
CREATE INDEX rollout_edges_edge ON rollout_edges (edge);
SELECT outpost_protect_edge_table('rollout_edges');

-- The OTA state projection: a pure fold of the ota.* records of device
-- _edge (cloud/rollout.Projection), applied in every commit transaction,
-- rebuildable from the ledger (cloud rollouts rebuild). Every write keeps
-- the row of the highest ledger position, so the fold does not depend on
-- the order in which concurrent commits apply it.
--
-- ota_edge_state: per edge, the highest command seq it acknowledged
-- (ota.command_accepted, reason "command N") and its last ota.* event.
CREATE TABLE ota_edge_state (
	edge         text COLLATE "C" PRIMARY KEY REFERENCES edges (id),
	accepted_seq bigint NOT NULL DEFAULT 0,
	accepted_pos bigint NOT NULL DEFAULT 0,
	last_kind    text NOT NULL,
	last_at      timestamptz NOT NULL,
	last_pos     bigint NOT NULL
);
SELECT outpost_protect_edge_table('ota_edge_state');

-- ota_edge_versions: per edge and (version, target) the body named, its
-- latest ota.* step (kind without "ota."), with its reason, and the seq of
-- the assignment the event's id names ("assign-N-cancelled"; 0 when it
-- names none), so that the cancellation of an older assignment is not
-- taken for the newer one's.
CREATE TABLE ota_edge_versions (
	edge    text COLLATE "C" NOT NULL REFERENCES edges (id),
	version text NOT NULL,
	target  text NOT NULL,
	kind    text NOT NULL,
	release bigint NOT NULL DEFAULT 0,
	reason  text NOT NULL DEFAULT '',
	seq     bigint NOT NULL DEFAULT 0,
	at      timestamptz NOT NULL,
	pos     bigint NOT NULL,
	PRIMARY KEY (edge, version, target)
);
SELECT outpost_protect_edge_table('ota_edge_versions');
