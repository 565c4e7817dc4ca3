-- A store's inventory movements in ledger order, for
-- /v1/reports/inventory/movements without a sku: without it the query
-- walks the (pos, ord) key through every store's movements and throws the
-- others away (38 ms, 16 times the plain-SELECT ceiling, for a store-year
-- among 20 stores in BenchmarkReports). Store ids are unique across
-- tenants, so the store alone leads.
CREATE INDEX inventory_movements_store ON inventory_movements (store, pos, ord);
