-- Schema version 15: the projection tables whose rows are updated in place
-- leave room in their pages for the new versions of their rows.
--
-- Every fold rewrites the rows of the keys it touched (a till day's row
-- on every fold that counts one of its sales, its day's sales, SKU, hour
-- and tender rows, on-hand, the minute's telemetry). With full pages (the
-- default fillfactor of 100) each new version lands on another page, so
-- every index of the table gets a new entry too. With room on the page,
-- and none of the indexed columns changed (the key; the till's status
-- only when it changes), Postgres writes a heap-only tuple (HOT) and no
-- index entry, and prunes the old version on the next visit of the page.
-- Measured on the till rows (200 rows of about 1 kB, upserted 100 times in
-- as many transactions): 1.8 to 2.2 s at 100, 1.2 s at 70, with 98% of the
-- updates HOT (docs/REPORTS.md, "Performance").
--
-- The append-only tables (movements, anomalies, restatements) and the
-- transactions (a row is updated only when its sale is voided) keep full
-- pages. Existing pages keep what they hold until a rewrite (VACUUM FULL,
-- or the TRUNCATE and copy of `cloud projections rebuild`); new pages are
-- filled to 70%.
ALTER TABLE sales_summary SET (fillfactor = 70);
ALTER TABLE sales_by_sku SET (fillfactor = 70);
ALTER TABLE sales_by_hour SET (fillfactor = 70);
ALTER TABLE tenders SET (fillfactor = 70);
ALTER TABLE inventory_on_hand SET (fillfactor = 70);
ALTER TABLE telemetry_per_minute SET (fillfactor = 70);
ALTER TABLE till_reconciliation SET (fillfactor = 70);
