-- Outpost cloud ledger, schema version 1: the fleet (edges, keys, tokens),
-- the per-stream watermarks, the checkpoints and the quarantine. The ledger
-- table itself comes in version 2, which has a native-partitioning and a
-- TimescaleDB variant.
--
-- Identifiers that are compared or sorted in Go (edge ids, key ids) use the
-- "C" collation, so that ORDER BY agrees byte for byte with Go's ordering:
-- the commit locks stream rows in that order.

CREATE TABLE edges (
	id         text COLLATE "C" PRIMARY KEY,
	status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
	created_at timestamptz NOT NULL DEFAULT now(),
	revoked_at timestamptz,
	CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);

-- A key belongs to exactly one edge: kid is globally unique, and so is the
-- public key itself.
CREATE TABLE edge_keys (
	kid        text COLLATE "C" PRIMARY KEY,
	edge       text COLLATE "C" NOT NULL REFERENCES edges (id),
	pubkey     bytea NOT NULL UNIQUE CHECK (length(pubkey) = 32),
	status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
	created_at timestamptz NOT NULL DEFAULT now(),
	revoked_at timestamptz,
	CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX edge_keys_edge ON edge_keys (edge);

-- One-time enrollment tokens, stored as SHA-256 of the plaintext.
CREATE TABLE enroll_tokens (
	hash       bytea PRIMARY KEY CHECK (length(hash) = 32),
	edge       text COLLATE "C" NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz NOT NULL,
	used_at    timestamptz,
	used_kid   text COLLATE "C"
);

-- Bearer tokens of the back-office API, stored as SHA-256 of the plaintext.
CREATE TABLE api_tokens (
	hash       bytea PRIMARY KEY CHECK (length(hash) = 32),
	name       text NOT NULL UNIQUE,
	role       text NOT NULL,
	tenant     text NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL DEFAULT now(),
	revoked_at timestamptz
);

-- The dedup and order state of each stream (edge, epoch): everything at or
-- below hwm is committed, and head is the link hash of record hwm. The row
-- lock on it serializes commits of one stream. When an edge shows up with a
-- new epoch, its open epochs get ended_at, ended_at_seq (their hwm at that
-- moment: where the old life ended as far as the cloud knows) and
-- next_epoch; the new one gets prev_epoch.
CREATE TABLE streams (
	edge         text COLLATE "C" NOT NULL REFERENCES edges (id),
	epoch        bytea NOT NULL CHECK (length(epoch) = 16),
	hwm          bigint NOT NULL DEFAULT 0 CHECK (hwm >= 0),
	head         bytea NOT NULL DEFAULT decode(repeat('00', 32), 'hex') CHECK (length(head) = 32),
	edge_seq     bigint NOT NULL DEFAULT 0, -- the edge's own last seq, from its latest hello
	first_seen   timestamptz NOT NULL DEFAULT now(),
	last_commit  timestamptz,               -- the commit that reached hwm
	last_seen    timestamptz NOT NULL DEFAULT now(),
	prev_epoch   bytea,
	next_epoch   bytea,
	ended_at     timestamptz,
	ended_at_seq bigint,
	PRIMARY KEY (edge, epoch)
);

-- The edge's signed checkpoint (the whole COSE_Sign1 message) behind each
-- committed segment, for proofs: every committed record is covered by the
-- first checkpoint at or after its seq.
CREATE TABLE checkpoints (
	edge         text COLLATE "C" NOT NULL,
	epoch        bytea NOT NULL,
	seq          bigint NOT NULL,
	head         bytea NOT NULL,
	kid          text COLLATE "C" NOT NULL,
	signature    bytea NOT NULL,
	committed_at timestamptz NOT NULL,
	PRIMARY KEY (edge, epoch, seq)
);

-- Segments that failed their signature or chain check. edge is the edge
-- whose topic the segment arrived on; epoch, first and last are what the
-- segment claims. Never committed; kept for inspection and alerts.
CREATE TABLE quarantine (
	id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	edge        text COLLATE "C" NOT NULL,
	epoch       bytea,
	first       bigint,
	last        bigint,
	reason      text NOT NULL,
	code        text NOT NULL,
	payload     bytea,
	received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_received_at ON quarantine (received_at);
CREATE INDEX quarantine_edge ON quarantine (edge, id);
