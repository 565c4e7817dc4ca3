-- Schema version 10: the software an edge last said it runs, from the
-- agent field of its hello ("outpost-edge/VERSION (GOOS/GOARCH[/vN])"),
-- for the Fleet page and GET /v1/edges. It is the edge's own word, not
-- covered by a signature (a hello is unsigned; the broker authenticated the
-- edge): shown as text, never acted on. NoteHello stores it printable-only
-- and at most 128 bytes (ledger.CleanAgent); NULL until a hello names one.
ALTER TABLE edges
	ADD COLUMN agent    text,
	ADD COLUMN agent_at timestamptz; -- when a hello last named this agent first
