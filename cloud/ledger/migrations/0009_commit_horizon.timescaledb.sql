-- Schema version 9, TimescaleDB only: after 0009_commit_horizon.sql (which
-- both modes run).

-- The chunk interval, chosen: 30 days, as the native variant's monthly
-- partitions (it was 7 days). The hot reads (the duplicate check, the
-- events tail) now carry a committed_at predicate and touch one or two
-- chunks whatever the interval, so what the interval still decides is the
-- cost of the reads that cannot prune (a stream's audit, a proof, a query
-- by device over all time), which plan and scan every chunk: 12 chunks a
-- year instead of 52. The bound on the other side is memory: the newest
-- chunk's indexes should fit in about a quarter of shared_buffers; a fleet
-- that writes more than that in 30 days lowers it with
-- set_chunk_time_interval (docs/OPERATIONS.md). It applies to chunks made
-- from now on.
SELECT set_chunk_time_interval('ledger', INTERVAL '30 days');
