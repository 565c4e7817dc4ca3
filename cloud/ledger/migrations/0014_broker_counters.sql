-- Schema version 14: an edge's broker-login counter moves out of its edges
-- row into a table of its own.
--
-- A commit holds the rows of its edges FOR SHARE from taking its positions
-- to its end, so that a revocation cannot slip in between (0009). The
-- login's UPDATE of edges.broker_counter needed that row exclusively, so
-- every login of an edge waited behind its edge's commits: under a
-- reconnect storm, logins passed their limit and were refused. A row of
-- edge_broker_counters is locked by logins only. Its foreign key takes FOR
-- KEY SHARE on the edge, which a commit's FOR SHARE does not block.
--
-- Not readable by outpost_reader (no grant): it is the broker's, not the
-- back office's.
CREATE TABLE edge_broker_counters (
	edge    text COLLATE "C" PRIMARY KEY REFERENCES edges (id),
	counter bigint NOT NULL CHECK (counter >= 0)
);
INSERT INTO edge_broker_counters (edge, counter)
	SELECT id, broker_counter FROM edges WHERE broker_counter > 0;
ALTER TABLE edges DROP COLUMN broker_counter;
