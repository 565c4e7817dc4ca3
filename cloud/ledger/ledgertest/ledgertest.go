// Package ledgertest gives tests a migrated ledger database: a fresh
// database in the private test cluster (internal/pgtest), with the
// ledger's schema applied, and pools on it that close with the test.
package ledgertest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// URL returns the URL of a fresh, migrated database for tb. Tests that
// play several cloud replicas open one Pool each on it.
func URL(tb testing.TB) string {
	tb.Helper()
	url := pgtest.New(tb)
	if err := ledger.Migrate(context.Background(), Pool(tb, url)); err != nil {
		tb.Fatal(err)
	}
	return url
}

// Pool opens a pool on url that is closed when tb ends.
func Pool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}
