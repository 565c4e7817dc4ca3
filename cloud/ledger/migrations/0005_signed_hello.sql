-- The edge's head, for lag, is taken only from a checkpoint the edge signed
-- (in its hello), the one with the latest edge_time: never the greatest seq
-- an unsigned hello claimed. edge_seq values from unsigned hellos may have
-- been spoofed (a seq of 999999 stuck for good), so they start again from
-- the watermark; the edge's next hello sets them.
ALTER TABLE streams ADD COLUMN edge_seq_time bigint; -- edge_time (HLC) of the checkpoint edge_seq came from
UPDATE streams SET edge_seq = hwm;
