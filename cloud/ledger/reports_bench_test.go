package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/ledger"
)

// BenchmarkReports measures report queries for one store and one month
// (30 business days) on a database holding 1M ledger rows and a year of
// projection rows for 20 stores of two tenants: each report as the API
// runs it (ledger.ReadAs as the store's tenant, with row-level security,
// as_of and completeness), as a ratio (x_ceiling) to the ceiling measured
// in the same run: a plain SELECT of the same table rows by the same key
// range, as the owner, without a transaction.
func BenchmarkReports(b *testing.B) {
	ctx := context.Background()
	url := MustMigratedDB(b)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	start := time.Now()
	fillReportsDB(b, pool)
	b.Logf("filled 1M ledger rows and a year of 20 stores' projections in %s", time.Since(start).Round(time.Second))
	l := ledger.New(pool, ledger.Options{})
	f := ledger.ReportFilter{Tenant: "bench-a", Store: "store-8", From: "2026-03-01", To: "2026-03-30", Limit: ledger.MaxLimit}

	var ceiling float64 // ns per op
	b.Run("ceiling", func(b *testing.B) {
		for b.Loop() {
			rows, err := pool.Query(ctx, `SELECT * FROM sales_by_sku WHERE tenant = $1 AND store = $2
				AND business_day BETWEEN $3::date AND $4::date ORDER BY tenant, store, business_day, sku, currency LIMIT 1001`,
				f.Tenant, f.Store, f.From, f.To)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for rows.Next() {
				n++
			}
			if rows.Err() != nil || n == 0 {
				b.Fatalf("ceiling: %d rows, %v", n, rows.Err())
			}
		}
		ceiling = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	run := func(name string, fn func(*ledger.Ledger) (int, error)) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				var n int
				err := l.ReadAs(ctx, f.Tenant, func(l *ledger.Ledger) error {
					var err error
					n, err = fn(l)
					return err
				})
				if err != nil || n == 0 {
					b.Fatalf("%s: %d rows, %v", name, n, err)
				}
			}
			if ceiling > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/ceiling, "x_ceiling")
			}
		})
	}
	run("sales", func(l *ledger.Ledger) (int, error) {
		r, err := l.SalesReport(ctx, f)
		return len(r.Rows), err
	})
	run("by-sku", func(l *ledger.Ledger) (int, error) {
		r, err := l.SKUReport(ctx, f)
		return len(r.Rows), err
	})
	run("tenders", func(l *ledger.Ledger) (int, error) {
		r, err := l.TendersReport(ctx, f)
		return len(r.Rows), err
	})
	run("reconciliation", func(l *ledger.Ledger) (int, error) {
		r, err := l.ReconciliationReport(ctx, f)
		return len(r.Rows), err
	})
	// One SKU's movements in the store (a page of its year), and the
	// store's whole movement log from a position on (the logs have no day).
	run("movements-sku", func(l *ledger.Ledger) (int, error) {
		mf := ledger.ReportFilter{Tenant: f.Tenant, Store: f.Store, SKU: "sku-7", Limit: ledger.MaxLimit}
		r, err := l.MovementsReport(ctx, mf)
		return len(r.Rows), err
	})
	run("movements-store", func(l *ledger.Ledger) (int, error) {
		mf := ledger.ReportFilter{Tenant: f.Tenant, Store: f.Store, FromPos: 500000, Limit: ledger.MaxLimit}
		r, err := l.MovementsReport(ctx, mf)
		return len(r.Rows), err
	})
	run("restatements", func(l *ledger.Ledger) (int, error) {
		r, err := l.RestatementsReport(ctx, f)
		return len(r.Rows), err
	})
}

// fillReportsDB writes 1M ledger rows (20 edges, one a store, 50,000 seqs
// each) and the projection rows a year of such trade makes: per store and
// day a sales row, 4 tenders, 50 SKUs and 4 tills; a movement per ledger
// row, and a restatement every tenth day of every store.
func fillReportsDB(b *testing.B, pool *pgxpool.Pool) {
	b.Helper()
	ctx := context.Background()
	for _, sql := range []string{
		`INSERT INTO tenants (id, name) VALUES ('bench-a', 'A'), ('bench-b', 'B')`,
		`INSERT INTO stores (tenant, id, name, time_zone, currency)
			SELECT CASE WHEN s % 2 = 0 THEN 'bench-a' ELSE 'bench-b' END, 'store-' || s, 'Store ' || s, 'Europe/Paris', 'EUR'
			FROM generate_series(0, 19) s`,
		`INSERT INTO edges (id, tenant, store) SELECT 'edge-' || s, st.tenant, st.id
			FROM generate_series(0, 19) s JOIN stores st ON st.id = 'store-' || s`,
		`INSERT INTO streams (edge, epoch, hwm, edge_seq, last_commit)
			SELECT 'edge-' || s, decode(lpad(to_hex(s + 1), 32, '0'), 'hex'), 50000, 50000, now() FROM generate_series(0, 19) s`,
		`INSERT INTO ledger (edge, epoch, seq, pos, committed_at, device, event_id, type, class, device_ts, edge_time, hlc, hash, raw)
			SELECT 'edge-' || (g % 20), decode(lpad(to_hex(g % 20 + 1), 32, '0'), 'hex'), g / 20 + 1, g + 1, now(),
				'till-1', 'ev-' || g, 'sale.completed', 'ledger', now(), now() - interval '1 second' * (1000000 - g), g,
				sha256(int8send(g)), decode(repeat('a5', 200), 'hex')
			FROM generate_series(0, 999999) g`,
		`INSERT INTO sales_summary SELECT st.tenant, st.id, d::date, 'EUR', 100, 150000, 500000, 10000, 2, 3000, 1, 2000, 80000, 485000, 565000
			FROM stores st, generate_series('2026-01-01'::date, '2026-12-31'::date, '1 day') d`,
		`INSERT INTO tenders SELECT st.tenant, st.id, d::date, t, 'EUR', 25, 140000, 500, 1000, 138500
			FROM stores st, generate_series('2026-01-01'::date, '2026-12-31'::date, '1 day') d, unnest(ARRAY['cash', 'card', 'voucher', 'mobile']) t`,
		`INSERT INTO sales_by_sku SELECT st.tenant, st.id, d::date, 'sku-' || k, 'EUR', 3000, 100, 0, 10000, 200, 300, 0, 9500
			FROM stores st, generate_series('2026-01-01'::date, '2026-12-31'::date, '1 day') d, generate_series(1, 50) k`,
		`INSERT INTO till_reconciliation (tenant, store, terminal, business_day, currency, status, ledger_sales_count, ledger_sales_total,
				ledger_returns_count, ledger_returns_total, ledger_voids_count, ledger_voids_total, ledger_net)
			SELECT st.tenant, st.id, 'T' || t, d::date, 'EUR', 'match', 25, 140000, 0, 0, 0, 0, 140000
			FROM stores st, generate_series('2026-01-01'::date, '2026-12-31'::date, '1 day') d, generate_series(1, 4) t`,
		// A movement per ledger row: store g % 20, one of its 50 SKUs.
		`INSERT INTO inventory_movements SELECT CASE WHEN g % 2 = 0 THEN 'bench-a' ELSE 'bench-b' END, g + 1, 0,
				'store-' || (g % 20), 'sku-' || (g / 20 % 50), 'sale', -1000, -1000 * (g / 1000 + 1)
			FROM generate_series(0, 999999) g`,
		// A restatement for one store day in ten.
		`INSERT INTO restatements SELECT st.tenant, 2000000 + row_number() OVER (), 0, st.id, 'T1', d::date, 'EUR', 'ev-late', 'sale.completed',
				'mismatch', '{"1 sale more than the Z"}'
			FROM stores st, generate_series('2026-01-01'::date, '2026-12-31'::date, '10 days') d`,
		`INSERT INTO projection_checkpoints (name, version, last_pos, digest) VALUES ('bench', 1, 1000000, sha256(''))`,
		`ANALYZE`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			b.Fatalf("fill: %v\n%s", err, sql)
		}
	}
}
