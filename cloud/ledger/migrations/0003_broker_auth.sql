-- Broker logins and revocations (docs/PROTOCOL.md, "Broker tokens";
-- docs/OPERATIONS.md, "Revocation").
--
-- broker_counter is the highest broker-token counter the cloud accepted for
-- the edge. A login is accepted only with a higher one, in one UPDATE that
-- also checks the edge and the key are active, so every replica agrees and
-- a replayed token is refused.
ALTER TABLE edges ADD COLUMN broker_counter bigint NOT NULL DEFAULT 0 CHECK (broker_counter >= 0);

-- One row per revocation of an edge (kid NULL) or of one of its keys, made
-- by triggers whatever the path (API, CLI, SQL by hand). Every cloud replica
-- polls the recent rows and closes the broker sessions of what was revoked.
CREATE TABLE revocations (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	edge       text COLLATE "C" NOT NULL,
	kid        text COLLATE "C",
	revoked_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX revocations_revoked_at ON revocations (revoked_at);

CREATE FUNCTION outpost_note_edge_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO revocations (edge) VALUES (NEW.id);
	RETURN NULL;
END $$;

CREATE FUNCTION outpost_note_key_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO revocations (edge, kid) VALUES (NEW.edge, NEW.kid);
	RETURN NULL;
END $$;

CREATE TRIGGER edges_revoked AFTER UPDATE OF status ON edges
	FOR EACH ROW WHEN (OLD.status = 'active' AND NEW.status = 'revoked')
	EXECUTE FUNCTION outpost_note_edge_revoked();

CREATE TRIGGER edge_keys_revoked AFTER UPDATE OF status ON edge_keys
	FOR EACH ROW WHEN (OLD.status = 'active' AND NEW.status = 'revoked')
	EXECUTE FUNCTION outpost_note_key_revoked();
