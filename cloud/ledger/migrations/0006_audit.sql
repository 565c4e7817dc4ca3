-- The incremental ledger audit (Auditor, run by cloud serve): per stream,
-- the seq of the checkpoint up to which the audit has verified the chain
-- and signatures. The next run starts there, checks that checkpoint's
-- signature again and trusts its head. A full `cloud audit` ignores it and
-- checks everything.
CREATE TABLE audit_checkpoints (
	edge       text COLLATE "C" NOT NULL,
	epoch      bytea NOT NULL CHECK (length(epoch) = 16),
	seq        bigint NOT NULL CHECK (seq > 0),
	audited_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (edge, epoch)
);
