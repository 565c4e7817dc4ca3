-- Schema version 7: the tenant and store directory, and the back office's
-- read models (cloud/projection), folded from the ledger inside every
-- commit transaction. docs/REPORTS.md defines every figure.
--
-- Plain tables, the same with native partitioning and with TimescaleDB.
-- Every projection row carries its tenant, so that the API filters on it
-- and row-level security can apply. Money is bigint minor units with its
-- ISO 4217 code beside it; quantities are bigint thousandths of a unit;
-- business days are the dates the till declares (never a device clock).

-- A tenant owns stores and edges. The tenant 'default' always exists: a
-- single-tenant installation needs no setup, and every edge enrolled
-- before tenants existed belongs to it.
CREATE TABLE tenants (
	id         text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
	name       text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenants (id, name) VALUES ('default', 'Default tenant');

-- A store, by the id POS bodies name it by (the body's "store"). Store ids
-- are unique across tenants: a body names a store, not a tenant, and the
-- store says whose it is. time_zone is an IANA name (the by-hour report's
-- hours are local to it); currency is the store's default ISO 4217 code.
CREATE TABLE stores (
	tenant     text COLLATE "C" NOT NULL REFERENCES tenants (id),
	id         text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
	name       text NOT NULL,
	time_zone  text NOT NULL DEFAULT 'UTC',
	currency   text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
	created_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (tenant, id)
);

-- An edge belongs to one tenant (the 'default' one unless it is moved) and
-- usually serves one store (NULL when it serves several or none).
ALTER TABLE edges
	ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT 'default' REFERENCES tenants (id),
	ADD COLUMN store text COLLATE "C" REFERENCES stores (id);
CREATE INDEX edges_tenant ON edges (tenant);

-- Where each projection stands: the last ledger position folded into it,
-- the version of the definitions that folded it (a different version at
-- start-up means a rebuild), and digest, a SHA-256 chain over the (pos,
-- link hash) of every record folded, in pos order: two projections with
-- the same digest were folded from the same records.
CREATE TABLE projection_checkpoints (
	name       text COLLATE "C" PRIMARY KEY,
	version    integer NOT NULL,
	last_pos   bigint NOT NULL DEFAULT 0,
	digest     bytea NOT NULL CHECK (length(digest) = 32),
	updated_at timestamptz NOT NULL DEFAULT now()
);

-- Sales summary per (tenant, store, business day, currency).
CREATE TABLE sales_summary (
	tenant          text COLLATE "C" NOT NULL,
	store           text COLLATE "C" NOT NULL,
	business_day    date NOT NULL,
	currency        text COLLATE "C" NOT NULL,
	transactions    bigint NOT NULL,
	items           bigint NOT NULL, -- thousandths
	gross_sales     bigint NOT NULL,
	discounts       bigint NOT NULL,
	returns_count   bigint NOT NULL,
	returns_amount  bigint NOT NULL,
	voids_count     bigint NOT NULL,
	voids_amount    bigint NOT NULL,
	tax             bigint NOT NULL,
	net_sales       bigint NOT NULL,
	total_collected bigint NOT NULL,
	PRIMARY KEY (tenant, store, business_day, currency)
);

-- Sales by SKU per (store, business day, sku, currency).
CREATE TABLE sales_by_sku (
	tenant       text COLLATE "C" NOT NULL,
	store        text COLLATE "C" NOT NULL,
	business_day date NOT NULL,
	sku          text COLLATE "C" NOT NULL,
	currency     text COLLATE "C" NOT NULL,
	qty_sold     bigint NOT NULL,
	qty_returned bigint NOT NULL,
	qty_voided   bigint NOT NULL,
	gross        bigint NOT NULL,
	discounts    bigint NOT NULL,
	returns      bigint NOT NULL,
	voids        bigint NOT NULL,
	net          bigint NOT NULL,
	PRIMARY KEY (tenant, store, business_day, sku, currency)
);

-- Sales by hour per (store, business day, hour in the store's time zone,
-- currency); the hour is the edge's HLC time.
CREATE TABLE sales_by_hour (
	tenant       text COLLATE "C" NOT NULL,
	store        text COLLATE "C" NOT NULL,
	business_day date NOT NULL,
	hour         smallint NOT NULL CHECK (hour BETWEEN 0 AND 23),
	currency     text COLLATE "C" NOT NULL,
	count        bigint NOT NULL,
	net          bigint NOT NULL,
	PRIMARY KEY (tenant, store, business_day, hour, currency)
);

-- Tenders per (store, business day, tender type, currency).
CREATE TABLE tenders (
	tenant       text COLLATE "C" NOT NULL,
	store        text COLLATE "C" NOT NULL,
	business_day date NOT NULL,
	type         text COLLATE "C" NOT NULL,
	currency     text COLLATE "C" NOT NULL,
	count        bigint NOT NULL,
	amount       bigint NOT NULL,
	change       bigint NOT NULL,
	refunds      bigint NOT NULL,
	net          bigint NOT NULL,
	PRIMARY KEY (tenant, store, business_day, type, currency)
);

-- Inventory on hand per (store, sku), in thousandths.
CREATE TABLE inventory_on_hand (
	tenant  text COLLATE "C" NOT NULL,
	store   text COLLATE "C" NOT NULL,
	sku     text COLLATE "C" NOT NULL,
	on_hand bigint NOT NULL,
	PRIMARY KEY (tenant, store, sku)
);

-- Every change to on hand, append-only, in pos order: (pos, ord) is the
-- ord-th movement the record at pos made. A count sets on hand (delta 0,
-- on_hand the counted quantity); every other reason adds delta.
CREATE TABLE inventory_movements (
	tenant  text COLLATE "C" NOT NULL,
	pos     bigint NOT NULL,
	ord     integer NOT NULL,
	store   text COLLATE "C" NOT NULL,
	sku     text COLLATE "C" NOT NULL,
	reason  text NOT NULL,
	delta   bigint NOT NULL,
	on_hand bigint NOT NULL,
	PRIMARY KEY (pos, ord)
);
CREATE INDEX inventory_movements_sku ON inventory_movements (tenant, store, sku, pos);

-- Telemetry per (store, sensor, metric, minute of the edge's HLC time).
CREATE TABLE telemetry_per_minute (
	tenant text COLLATE "C" NOT NULL,
	store  text COLLATE "C" NOT NULL,
	sensor text COLLATE "C" NOT NULL,
	metric text COLLATE "C" NOT NULL,
	minute timestamptz NOT NULL,
	count  bigint NOT NULL,
	min    double precision NOT NULL,
	max    double precision NOT NULL,
	sum    double precision NOT NULL,
	PRIMARY KEY (tenant, store, sensor, metric, minute)
);

-- Till reconciliation per (store, terminal, business day, currency): what
-- the ledger holds (ledger_*, folded with pos.TillTotals) against the Z
-- report (z, the whole till.closed body reconciled against), the status
-- and its reasons, and the positions that restated it.
CREATE TABLE till_reconciliation (
	tenant                text COLLATE "C" NOT NULL,
	store                 text COLLATE "C" NOT NULL,
	terminal              text COLLATE "C" NOT NULL,
	business_day          date NOT NULL,
	currency              text COLLATE "C" NOT NULL,
	status                text NOT NULL CHECK (status IN ('open', 'match', 'pending', 'mismatch', 'restated')),
	reason                text[] NOT NULL DEFAULT '{}',
	ledger_sales_count    bigint NOT NULL,
	ledger_sales_total    bigint NOT NULL,
	ledger_returns_count  bigint NOT NULL,
	ledger_returns_total  bigint NOT NULL,
	ledger_voids_count    bigint NOT NULL,
	ledger_voids_total    bigint NOT NULL,
	ledger_net            bigint NOT NULL,
	ledger_tenders        jsonb NOT NULL DEFAULT '[]',
	z                     jsonb,
	z_pos                 bigint,
	z_event_id            text,
	z_count               bigint NOT NULL DEFAULT 0,
	matched               boolean NOT NULL DEFAULT false,
	restated              bigint[] NOT NULL DEFAULT '{}',
	PRIMARY KEY (tenant, store, terminal, business_day, currency)
);
CREATE INDEX till_reconciliation_status ON till_reconciliation (tenant, status, business_day);

-- Every event that changed a till day after it had matched its Z report.
CREATE TABLE restatements (
	tenant       text COLLATE "C" NOT NULL,
	pos          bigint NOT NULL,
	ord          integer NOT NULL,
	store        text COLLATE "C" NOT NULL,
	terminal     text COLLATE "C" NOT NULL,
	business_day date NOT NULL,
	currency     text COLLATE "C" NOT NULL,
	event_id     text NOT NULL,
	type         text NOT NULL,
	status       text NOT NULL,
	what         text[] NOT NULL DEFAULT '{}',
	PRIMARY KEY (pos, ord)
);
CREATE INDEX restatements_day ON restatements (tenant, store, business_day);

-- Records the folds did not count as they stand, and why: duplicate
-- transactions (with both ledger positions: pos and other_pos), unknown or
-- foreign stores, undecodable bodies, voids of unknown sales, superseded Z
-- reports, shed bodies. tenant is the tenant of the edge that sent the
-- record (a record naming another tenant's store is that edge's
-- anomaly, never the store owner's row).
CREATE TABLE anomalies (
	tenant         text COLLATE "C" NOT NULL,
	pos            bigint NOT NULL,
	ord            integer NOT NULL,
	kind           text NOT NULL,
	event_id       text NOT NULL,
	type           text NOT NULL,
	store          text COLLATE "C" NOT NULL DEFAULT '',
	other_pos      bigint,
	other_event_id text,
	detail         text NOT NULL,
	PRIMARY KEY (pos, ord)
);
CREATE INDEX anomalies_tenant ON anomalies (tenant, kind, pos);

-- The transactions counted (the folds' own state, not a report): a second
-- one with the same key is a duplicate, and a void reverses the sale it
-- names from here.
CREATE TABLE projection_txns (
	tenant       text COLLATE "C" NOT NULL,
	store        text COLLATE "C" NOT NULL,
	terminal     text COLLATE "C" NOT NULL,
	business_day date NOT NULL,
	txn          text COLLATE "C" NOT NULL,
	pos          bigint NOT NULL,
	event_id     text NOT NULL,
	type         text NOT NULL,
	currency     text COLLATE "C" NOT NULL,
	tax          bigint NOT NULL,
	net          bigint NOT NULL,
	lines        jsonb NOT NULL DEFAULT '[]',
	voided       boolean NOT NULL DEFAULT false,
	PRIMARY KEY (tenant, store, terminal, business_day, txn)
);
