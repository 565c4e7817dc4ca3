-- Commits that do not queue behind one lock (schema version 9), for both
-- partitioning modes; 0009_commit_horizon.timescaledb.sql adds the chunk
-- interval after it.
--
-- Until now a commit held one transaction advisory lock from taking its
-- positions to COMMIT, so that pos order was commit order and a reader
-- tailing by pos never skipped a row that committed late. Now commits of
-- different edges run at once, and tailing readers read only below a
-- horizon instead:
--
--  * ledger.xid is the transaction id (xid8) of the commit that wrote the
--    row. Rows from before this version are all long committed and get 0.
--  * ledger_take_positions is the one place positions are taken. Under a
--    session advisory lock held only for the call (never to COMMIT), it
--    assigns the transaction's xid, takes its range of positions and its
--    commit time: a commit with a larger xid always has larger positions
--    and a later commit time.
--  * A tailing reader reads only rows with xid below
--    pg_snapshot_xmin(pg_current_snapshot()): every transaction below that
--    has ended, and every one still to commit has a larger xid, so larger
--    positions than any row the reader has seen. See cloud/ledger/doc.go.
--
-- The commit time is also strictly increasing in pos (ledger_time_seq holds
-- the last one, in microseconds since the Unix epoch; a sequence, because
-- it is not transactional and holds no lock to COMMIT), so the time of a
-- position bounds the times of every later one: ledger_marks keeps one
-- such (pos, committed_at) pair a minute, and reads by pos use it to add a
-- committed_at predicate that prunes partitions (chunks).

ALTER TABLE ledger ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE ledger ALTER COLUMN xid SET DEFAULT pg_current_xact_id();

-- A stream's floor: its records at or below floor_seq may have been
-- dropped from the ledger by retention (DropBefore, which moves it). A
-- duplicate there that ends at no stored checkpoint cannot be compared and
-- is taken as a duplicate, not as a fork.
ALTER TABLE streams ADD COLUMN floor_seq bigint NOT NULL DEFAULT 0;

CREATE SEQUENCE ledger_time_seq AS bigint MINVALUE 0;
SELECT setval('ledger_time_seq',
	greatest(0, coalesce((SELECT (extract(epoch FROM max(last_commit)) * 1000000)::bigint FROM streams), 0)), true);

-- One row about a minute: the first position a commit took, and its
-- commit time. Every row at or after pos committed at or after
-- committed_at. Written by the commit that takes the first positions of a
-- new minute; a commit that rolls back loses its mark, which only makes
-- the bound of that minute the one before.
CREATE TABLE ledger_marks (
	pos          bigint PRIMARY KEY,
	committed_at timestamptz NOT NULL
);
-- The API's reads (as outpost_reader, migration 0008) use it to bound
-- theirs; it holds no tenant's data, so it needs no policy.
GRANT SELECT ON ledger_marks TO outpost_reader;

-- ledger_take_positions(n) returns the transaction's xid, the first of n
-- consecutive positions, the commit time, and whether this commit writes
-- the minute's mark. It must be the transaction's first write (it refuses
-- a transaction that already has an xid): the xid must be assigned here,
-- in position order. The session lock is released before it returns,
-- also when it fails or is cancelled.
CREATE FUNCTION ledger_take_positions(n bigint,
	OUT xid xid8, OUT first_pos bigint, OUT committed_at timestamptz, OUT mark boolean)
LANGUAGE plpgsql AS $$
DECLARE
	last_us bigint;
	now_us  bigint;
BEGIN
	IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
		RAISE EXCEPTION 'ledger_take_positions must be the first write of its transaction (it has xid %)',
			pg_current_xact_id_if_assigned();
	END IF;
	IF n < 1 THEN
		RAISE EXCEPTION 'ledger_take_positions: n is %, must be at least 1', n;
	END IF;
	PERFORM pg_advisory_lock(8031453536740144131); -- 0x6f7574706f737403, lockCommit
	BEGIN
		xid := pg_current_xact_id();
		first_pos := nextval('ledger_pos_seq');
		IF n > 1 THEN
			PERFORM setval('ledger_pos_seq', first_pos + n - 1);
		END IF;
		SELECT last_value INTO last_us FROM ledger_time_seq;
		now_us := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
		IF now_us <= last_us THEN
			now_us := last_us + 1;
		END IF;
		mark := now_us / 60000000 > last_us / 60000000;
		PERFORM setval('ledger_time_seq', now_us);
		committed_at := timestamptz 'epoch' + now_us * interval '1 microsecond';
	EXCEPTION WHEN OTHERS OR query_canceled THEN
		PERFORM pg_advisory_unlock(8031453536740144131);
		RAISE;
	END;
	PERFORM pg_advisory_unlock(8031453536740144131);
END
$$;
