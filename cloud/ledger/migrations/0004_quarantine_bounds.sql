-- A bounded quarantine. Each row is one distinct payload from one sender
-- (the edge whose topic it came on), found again by its hash: a copy that
-- arrives again only counts. What a sender may keep is capped (bytes, rows);
-- beyond the byte cap only a prefix of a payload is kept, beyond the row cap
-- nothing but a count. quarantine_senders holds the running totals.
ALTER TABLE quarantine
	ADD COLUMN hash      bytea,                            -- SHA-256 of the payload as received
	ADD COLUMN size      bigint,                           -- its length; payload may be a prefix
	ADD COLUMN truncated boolean NOT NULL DEFAULT false,   -- payload is only a prefix
	ADD COLUMN copies    bigint NOT NULL DEFAULT 1,        -- how many times it arrived
	ADD COLUMN last_at   timestamptz;                      -- the last time it arrived

UPDATE quarantine SET hash = sha256(payload), size = length(payload), last_at = received_at
	WHERE payload IS NOT NULL;

-- Rows from before this version may repeat a hash; new ones do not.
CREATE INDEX quarantine_edge_hash ON quarantine (edge, hash);

CREATE TABLE quarantine_senders (
	edge          text COLLATE "C" PRIMARY KEY,
	bytes         bigint NOT NULL DEFAULT 0, -- payload bytes kept
	rows          bigint NOT NULL DEFAULT 0, -- rows kept
	dropped       bigint NOT NULL DEFAULT 0, -- arrivals beyond the row cap: counted only
	dropped_bytes bigint NOT NULL DEFAULT 0,
	truncated     bigint NOT NULL DEFAULT 0  -- rows kept as a prefix (beyond the byte cap)
);

INSERT INTO quarantine_senders (edge, bytes, rows)
	SELECT edge, coalesce(sum(length(payload)), 0), count(*) FROM quarantine GROUP BY edge;
