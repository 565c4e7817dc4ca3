-- A role and database for the cloud. Run as a superuser:
--   psql -v pw="'change-me'" -f deploy/postgres/outpost.sql
CREATE ROLE outpost LOGIN PASSWORD :pw;
CREATE DATABASE outpost OWNER outpost;
-- With TimescaleDB installed, `cloud migrate` makes the ledger a hypertable;
-- it needs the extension available in the database:
--   \c outpost
--   CREATE EXTENSION IF NOT EXISTS timescaledb;
