-- Schema version 8: tenant scope for enrollment tokens, and row-level
-- security on every table the back-office API reads, as defence in depth
-- behind the API's own tenant filters (docs/API.md, "Tenants").
--
-- How it works. The API runs every read in one transaction that sets the
-- token's scope (set_config('outpost.tenant', <tenant or '*'>, true)) and
-- then SET LOCAL ROLE outpost_reader. The policies below are written for
-- that role only: it sees the rows of the scope's tenant ('*': every
-- tenant; unset or empty: nothing). It has SELECT on exactly the tables
-- listed here, so a table added later without a policy is not readable
-- through the API at all (it fails closed, with "permission denied"),
-- rather than readable whole.
--
-- Ingest, commit, the projections' fold and rebuild, migrations and the
-- admin commands run as the role that owns the tables. An owner is not
-- subject to its tables' policies unless FORCE ROW LEVEL SECURITY is set,
-- which it is not: they are exempt by design (they must see every tenant
-- to verify, deduplicate and fold).

-- An enrollment token may name the tenant (and store) of the edge it
-- enrolls; Enroll puts the edge there.
ALTER TABLE enroll_tokens
	ADD COLUMN tenant text COLLATE "C" REFERENCES tenants (id),
	ADD COLUMN store  text COLLATE "C" REFERENCES stores (id);

-- The reader role. Roles belong to the cluster, not the database: another
-- database of the cluster may have made it already (concurrently, too).
-- The role running this migration must be able to create it (CREATEROLE)
-- or a DBA makes it first: CREATE ROLE outpost_reader NOLOGIN; GRANT
-- outpost_reader TO <the cloud's role>.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outpost_reader') THEN
		BEGIN
			CREATE ROLE outpost_reader NOLOGIN NOSUPERUSER NOBYPASSRLS;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN
			NULL; -- made meanwhile by another database's migration
		END;
	END IF;
	IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outpost_reader' AND (rolsuper OR rolbypassrls)) THEN
		RAISE EXCEPTION 'role outpost_reader is a superuser or bypasses row-level security, so tenant isolation would not hold: ALTER ROLE outpost_reader NOSUPERUSER NOBYPASSRLS';
	END IF;
	IF NOT pg_has_role(current_user, 'outpost_reader', 'MEMBER') THEN
		EXECUTE format('GRANT outpost_reader TO %I', current_user);
	END IF;
	EXECUTE format('GRANT USAGE ON SCHEMA %I TO outpost_reader', current_schema());
END $$;

-- The scope of the current transaction: a tenant id, '*' for every
-- tenant, '' for none.
CREATE FUNCTION outpost_scope() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
	AS $$ SELECT coalesce(current_setting('outpost.tenant', true), '') $$;

-- outpost_protect_tenant_table puts a table with a tenant column under
-- the tenant policy and lets the reader role read it: a later migration
-- that adds a table the API reads calls it (or the edge variant below).
-- (The projections' rebuild swaps by TRUNCATE and INSERT into the live
-- tables, which keeps their policies and grants.)
CREATE FUNCTION outpost_protect_tenant_table(t regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
	EXECUTE format('DROP POLICY IF EXISTS tenant_scope ON %s', t);
	EXECUTE format($p$CREATE POLICY tenant_scope ON %s FOR SELECT TO outpost_reader
		USING (outpost_scope() = '*' OR tenant = outpost_scope())$p$, t);
	EXECUTE format('GRANT SELECT ON %s TO outpost_reader', t);
END $$;

-- outpost_protect_edge_table does the same for a table whose rows belong
-- to the tenant of their edge column.
CREATE FUNCTION outpost_protect_edge_table(t regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
	EXECUTE format('DROP POLICY IF EXISTS tenant_scope ON %s', t);
	EXECUTE format($p$CREATE POLICY tenant_scope ON %s FOR SELECT TO outpost_reader
		USING (outpost_scope() = '*' OR edge IN (SELECT e.id FROM edges e WHERE e.tenant = outpost_scope()))$p$, t);
	EXECUTE format('GRANT SELECT ON %s TO outpost_reader', t);
END $$;

-- The directory.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON tenants FOR SELECT TO outpost_reader
	USING (outpost_scope() = '*' OR id = outpost_scope());
GRANT SELECT ON tenants TO outpost_reader;

SELECT outpost_protect_tenant_table('stores');
SELECT outpost_protect_tenant_table('edges');

-- The fleet and the ledger, by their edge.
SELECT outpost_protect_edge_table('edge_keys');
SELECT outpost_protect_edge_table('streams');
SELECT outpost_protect_edge_table('checkpoints');
SELECT outpost_protect_edge_table('quarantine');
SELECT outpost_protect_edge_table('ledger');

-- The projections (migration 0007), each row with its tenant.
SELECT outpost_protect_tenant_table('sales_summary');
SELECT outpost_protect_tenant_table('sales_by_sku');
SELECT outpost_protect_tenant_table('sales_by_hour');
SELECT outpost_protect_tenant_table('tenders');
SELECT outpost_protect_tenant_table('inventory_on_hand');
SELECT outpost_protect_tenant_table('inventory_movements');
SELECT outpost_protect_tenant_table('telemetry_per_minute');
SELECT outpost_protect_tenant_table('till_reconciliation');
SELECT outpost_protect_tenant_table('restatements');
SELECT outpost_protect_tenant_table('anomalies');
SELECT outpost_protect_tenant_table('projection_txns');

-- Where each projection stands holds no tenant's data (a name, a version,
-- a ledger position, a digest): every report shows its last_pos as as_of.
GRANT SELECT ON projection_checkpoints TO outpost_reader;
