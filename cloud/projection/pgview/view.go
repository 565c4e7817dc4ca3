package pgview

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// entry is a cached row: its value, or that it does not exist.
type entry[V any] struct {
	v  V
	ok bool
}

// tab caches the rows of one table read during one Apply and notes the
// keys asked for and not yet read. base, when not nil, is the
// Projection's rows kept from earlier Applies (rowCache), looked in after
// m: the caller holds the rowCache's lock while it is attached.
type tab[K comparable, V any] struct {
	m    map[K]entry[V]
	miss map[K]bool
	base *tab[K, V]
	puts int // rows read into m
}

func newTab[K comparable, V any]() tab[K, V] {
	return tab[K, V]{m: map[K]entry[V]{}, miss: map[K]bool{}}
}

func (t *tab[K, V]) get(k K) (V, bool) {
	if e, ok := t.m[k]; ok {
		return e.v, e.ok
	}
	if t.base != nil {
		if e, ok := t.base.m[k]; ok {
			return e.v, e.ok
		}
	}
	t.miss[k] = true
	var z V
	return z, false
}

// misses returns the keys to read and marks them read and absent; the
// rows read then overwrite those marks with their values.
func (t *tab[K, V]) misses() []K {
	ks := make([]K, 0, len(t.miss))
	for k := range t.miss {
		ks = append(ks, k)
		t.m[k] = entry[V]{}
	}
	clear(t.miss)
	return ks
}

func (t *tab[K, V]) put(k K, v V) { t.m[k] = entry[V]{v: v, ok: true}; t.puts++ }

// cache is a projection.View over the rows of the keys a batch touches:
// Fold runs on it, and every key it asks for that is not cached is read
// (under the checkpoint lock) before Fold runs again.
type cache struct {
	sales     tab[projection.SalesKey, projection.Sales]
	sku       tab[projection.SKUKey, projection.SKUSales]
	hour      tab[projection.HourKey, projection.HourSales]
	tenders   tab[projection.TenderKey, projection.Tenders]
	onHand    tab[projection.StockKey, int64]
	telemetry tab[projection.TelemetryKey, projection.Telemetry]
	tills     tab[pos.TillKey, projection.Till]
	txns      tab[projection.TxnKey, projection.Txn]

	// voided are the keys of the sales the batch's voids name: when one
	// of them is read, the rows its void reverses are read with it.
	voided map[projection.TxnKey]bool
}

// noteVoids notes the sales the voids among recs name (a body that does
// not decode names none; the fold lists it).
func (c *cache) noteVoids(recs []projection.Record) {
	for i := range recs {
		if recs[i].Type != pos.TypeSaleVoided || recs[i].IsTombstone() {
			continue
		}
		var v pos.Void
		if pos.Decode(recs[i].Type, recs[i].Body, &v) == nil {
			if c.voided == nil {
				c.voided = map[projection.TxnKey]bool{}
			}
			c.voided[projection.TxnKey{Store: v.Store, Terminal: v.Terminal, BusinessDay: v.BusinessDay, Txn: v.VoidedTxn}] = true
		}
	}
}

func newCache() *cache {
	return &cache{sales: newTab[projection.SalesKey, projection.Sales](), sku: newTab[projection.SKUKey, projection.SKUSales](),
		hour: newTab[projection.HourKey, projection.HourSales](), tenders: newTab[projection.TenderKey, projection.Tenders](),
		onHand: newTab[projection.StockKey, int64](), telemetry: newTab[projection.TelemetryKey, projection.Telemetry](),
		tills: newTab[pos.TillKey, projection.Till](), txns: newTab[projection.TxnKey, projection.Txn]()}
}

var _ projection.View = (*cache)(nil)

func (c *cache) Sales(k projection.SalesKey) (projection.Sales, bool)     { return c.sales.get(k) }
func (c *cache) SKU(k projection.SKUKey) (projection.SKUSales, bool)      { return c.sku.get(k) }
func (c *cache) Hour(k projection.HourKey) (projection.HourSales, bool)   { return c.hour.get(k) }
func (c *cache) Tender(k projection.TenderKey) (projection.Tenders, bool) { return c.tenders.get(k) }
func (c *cache) OnHand(k projection.StockKey) (int64, bool)               { return c.onHand.get(k) }
func (c *cache) Telemetry(k projection.TelemetryKey) (projection.Telemetry, bool) {
	k.Minute = k.Minute.UTC()
	return c.telemetry.get(k)
}
func (c *cache) Till(k pos.TillKey) (projection.Till, bool) {
	t, ok := c.tills.get(k)
	if ok {
		t = cloneTill(t)
	}
	return t, ok
}
func (c *cache) Txn(k projection.TxnKey) (projection.Txn, bool) { return c.txns.get(k) }

// cloneTill copies t's slices. slices.Clone keeps an empty list empty and
// a missing one nil: the fold compares a Z report with its reprint
// (reflect.DeepEqual), and a Z whose tenders are an empty list, read back
// or kept, must still equal the same report decoded again.
func cloneTill(t projection.Till) projection.Till {
	t.Ledger.Tenders = slices.Clone(t.Ledger.Tenders)
	if t.Z != nil {
		z := *t.Z
		z.Tenders = slices.Clone(z.Tenders)
		t.Z = &z
	}
	t.Reason = slices.Clone(t.Reason)
	t.Restated = slices.Clone(t.Restated)
	return t
}

// found is how many rows have been read into c: a fold treats a key it
// has not read as absent, so when every key read was absent (found did
// not move) the fold made before the read stands.
func (c *cache) found() int {
	return c.sales.puts + c.sku.puts + c.hour.puts + c.tenders.puts + c.onHand.puts + c.telemetry.puts + c.tills.puts + c.txns.puts
}

func (c *cache) missing() bool {
	return len(c.sales.miss)+len(c.sku.miss)+len(c.hour.miss)+len(c.tenders.miss)+len(c.onHand.miss)+
		len(c.telemetry.miss)+len(c.tills.miss)+len(c.txns.miss) > 0
}

// tenantOf is the tenant of a store the Directory holds ("" when it holds
// none: Fold never writes rows of a store it does not know).
type tenantOf func(store string) string

// reads is a batch of queries and what reads each one's results, in order.
type reads struct {
	b  pgx.Batch
	fn []func(pgx.BatchResults) error
}

// query queues a query whose rows scan reads.
func (r *reads) query(sql string, args []any, scan func(pgx.Rows) error) {
	r.b.Queue(sql, args...)
	r.fn = append(r.fn, func(br pgx.BatchResults) error {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		return scan(rows)
	})
}

// run sends the batch in one round trip and reads every result.
func (r *reads) run(ctx context.Context, tx pgx.Tx) error {
	if len(r.fn) == 0 {
		return nil
	}
	br := tx.SendBatch(ctx, &r.b)
	defer br.Close()
	for _, fn := range r.fn {
		if err := fn(br); err != nil {
			return err
		}
	}
	return br.Close()
}

// queueFetch queues the reads of every row the last fold asked
// for and did not have.
func (c *cache) queueFetch(rd *reads, suffix string, ten tenantOf) {
	queue := func(t *table, n int, args []any, scan func(pgx.Rows) error, sql ...string) {
		if n == 0 {
			return
		}
		q := t.fetchSQL(suffix)
		if len(sql) > 0 {
			q = sql[0]
		}
		rd.query(q, args, func(rows pgx.Rows) error {
			if err := scan(rows); err != nil {
				return fmt.Errorf("read %s: %w", t.name, err)
			}
			return nil
		})
	}
	{
		ks := c.sales.misses()
		a := make([][]string, 4)
		for _, k := range ks {
			a[0], a[1], a[2], a[3] = append(a[0], k.Tenant), append(a[1], k.Store), append(a[2], k.BusinessDay), append(a[3], k.Currency)
		}
		queue(tSales, len(ks), []any{a[0], a[1], a[2], a[3]}, func(rows pgx.Rows) error {
			var k projection.SalesKey
			var v projection.Sales
			return scanEach(rows, func() { c.sales.put(k, v) }, &k.Tenant, &k.Store, &k.BusinessDay, &k.Currency,
				&v.Transactions, &v.Items, &v.GrossSales, &v.Discounts, &v.ReturnsCount, &v.ReturnsAmount,
				&v.VoidsCount, &v.VoidsAmount, &v.Tax, &v.NetSales, &v.TotalCollected)
		})
	}
	{
		ks := c.sku.misses()
		a := make([][]string, 5)
		for _, k := range ks {
			a[0], a[1], a[2], a[3], a[4] = append(a[0], ten(k.Store)), append(a[1], k.Store), append(a[2], k.BusinessDay), append(a[3], k.SKU), append(a[4], k.Currency)
		}
		queue(tSKU, len(ks), []any{a[0], a[1], a[2], a[3], a[4]}, c.scanSKU)
	}
	{
		ks := c.hour.misses()
		a := make([][]string, 4)
		var hours []int64
		for _, k := range ks {
			a[0], a[1], a[2], a[3] = append(a[0], ten(k.Store)), append(a[1], k.Store), append(a[2], k.BusinessDay), append(a[3], k.Currency)
			hours = append(hours, int64(k.Hour))
		}
		queue(tHour, len(ks), []any{a[0], a[1], a[2], hours, a[3]}, func(rows pgx.Rows) error {
			var k projection.HourKey
			var v projection.HourSales
			var t string
			var h int64
			return scanEach(rows, func() { k.Hour = int(h); c.hour.put(k, v) }, &t, &k.Store, &k.BusinessDay, &h, &k.Currency,
				&v.Count, &v.Net)
		})
	}
	{
		ks := c.tenders.misses()
		a := make([][]string, 5)
		for _, k := range ks {
			a[0], a[1], a[2], a[3], a[4] = append(a[0], ten(k.Store)), append(a[1], k.Store), append(a[2], k.BusinessDay), append(a[3], k.Type), append(a[4], k.Currency)
		}
		queue(tTenders, len(ks), []any{a[0], a[1], a[2], a[3], a[4]}, func(rows pgx.Rows) error {
			var k projection.TenderKey
			var v projection.Tenders
			var t string
			return scanEach(rows, func() { c.tenders.put(k, v) }, &t, &k.Store, &k.BusinessDay, &k.Type, &k.Currency,
				&v.Count, &v.Amount, &v.Change, &v.Refunds, &v.Net)
		})
	}
	{
		ks := c.onHand.misses()
		a := make([][]string, 3)
		for _, k := range ks {
			a[0], a[1], a[2] = append(a[0], ten(k.Store)), append(a[1], k.Store), append(a[2], k.SKU)
		}
		queue(tOnHand, len(ks), []any{a[0], a[1], a[2]}, c.scanOnHand)
	}
	{
		ks := c.telemetry.misses()
		a := make([][]string, 4)
		var mins []time.Time
		for _, k := range ks {
			a[0], a[1], a[2], a[3] = append(a[0], k.Tenant), append(a[1], k.Store), append(a[2], k.Sensor), append(a[3], k.Metric)
			mins = append(mins, k.Minute)
		}
		queue(tTelemetry, len(ks), []any{a[0], a[1], a[2], a[3], mins}, func(rows pgx.Rows) error {
			var k projection.TelemetryKey
			var v projection.Telemetry
			return scanEach(rows, func() { k.Minute = k.Minute.UTC(); c.telemetry.put(k, v) }, &k.Tenant, &k.Store, &k.Sensor, &k.Metric, &k.Minute,
				&v.Count, &v.Min, &v.Max, &v.Sum)
		})
	}
	{
		ks := c.tills.misses()
		a := make([][]string, 5)
		for _, k := range ks {
			a[0], a[1], a[2], a[3], a[4] = append(a[0], ten(k.Store)), append(a[1], k.Store), append(a[2], k.Terminal), append(a[3], k.BusinessDay), append(a[4], k.Currency)
		}
		queue(tTills, len(ks), []any{a[0], a[1], a[2], a[3], a[4]}, func(rows pgx.Rows) error {
			var k pos.TillKey
			var t string
			var v projection.Till
			var tenders string
			var z, zID *string
			var zPos *int64
			return scanEach(rows, func() error {
				v.Ledger.Store, v.Ledger.Terminal, v.Ledger.BusinessDay, v.Ledger.Currency = k.Store, k.Terminal, k.BusinessDay, k.Currency
				v.Ledger.Tenders = nil
				if err := json.Unmarshal([]byte(tenders), &v.Ledger.Tenders); err != nil {
					return fmt.Errorf("till %v: ledger_tenders: %w", k, err)
				}
				v.Z, v.ZPos, v.ZID = nil, 0, ""
				if z != nil {
					v.Z = new(pos.TillClosed)
					if err := json.Unmarshal([]byte(*z), v.Z); err != nil {
						return fmt.Errorf("till %v: z: %w", k, err)
					}
					v.ZPos, v.ZID = deref(zPos), deref(zID)
				}
				if len(v.Reason) == 0 {
					v.Reason = nil
				}
				if len(v.Restated) == 0 {
					v.Restated = nil
				}
				c.tills.put(k, cloneTill(v))
				return nil
			}, &t, &k.Store, &k.Terminal, &k.BusinessDay, &k.Currency,
				&v.Status, &v.Reason, &v.Ledger.Sales.Count, &v.Ledger.Sales.Total, &v.Ledger.Returns.Count, &v.Ledger.Returns.Total,
				&v.Ledger.Voids.Count, &v.Ledger.Voids.Total, &v.Ledger.Net, &tenders, &z, &zPos, &zID, &v.ZCount, &v.Matched, &v.Restated)
		})
	}
	{
		ks := c.txns.misses()
		a := make([][]string, 5)
		for _, k := range ks {
			a[0], a[1], a[2], a[3], a[4] = append(a[0], ten(k.Store)), append(a[1], k.Store), append(a[2], k.Terminal), append(a[3], k.BusinessDay), append(a[4], k.Txn)
		}
		queue(tTxns, len(ks), []any{a[0], a[1], a[2], a[3], a[4]}, func(rows pgx.Rows) error {
			var k projection.TxnKey
			var t, lines string
			var v projection.Txn
			return scanEach(rows, func() error {
				v.Lines = nil
				if err := json.Unmarshal([]byte(lines), &v.Lines); err != nil {
					return fmt.Errorf("txn %v: lines: %w", k, err)
				}
				c.txns.put(k, v)
				if c.voided[k] {
					c.voidable(k, v)
				}
				return nil
			}, &t, &k.Store, &k.Terminal, &k.BusinessDay, &k.Txn, &v.Pos, &v.ID, &v.Type, &v.Currency, &v.Tax, &v.Net, &lines, &v.Voided)
		})
		// A void of a sale read here reverses the sale's lines: it reads
		// the sales-by-SKU and on-hand rows of their SKUs, which the fold
		// could not ask for before it had the sale. They are read in this
		// same round trip, the keys taken from the sale rows by the
		// server as voidable takes them from the rows read, so the fold
		// that follows has them and a void needs no further round trip.
		// The statements are queued only for the sales the batch's voids
		// name (noteVoids), so a batch without voids pays nothing.
		// Only the voided sales among the rows read now: the same keys
		// voidable is given.
		v := make([][]string, 5)
		n := 0
		for _, k := range ks {
			if c.voided[k] {
				v[0], v[1], v[2], v[3], v[4] = append(v[0], ten(k.Store)), append(v[1], k.Store), append(v[2], k.Terminal), append(v[3], k.BusinessDay), append(v[4], k.Txn)
				n++
			}
		}
		args := []any{v[0], v[1], v[2], v[3], v[4], pos.TypeSaleCompleted}
		queue(tSKU, n, args, func(rows pgx.Rows) error { return c.scanSKU(rows) }, tSKU.voidedLinesSQL(suffix))
		queue(tOnHand, n, args, func(rows pgx.Rows) error { return c.scanOnHand(rows) }, tOnHand.voidedLinesSQL(suffix))
	}
}

// voidable notes the keys of the sales-by-SKU and on-hand rows a void of
// txn row v (key k) would read, as not existing unless already read: the
// rows that do exist are read next, in the same round trip (see
// voidedLinesSQL, which selects the same keys), and overwrite the note.
func (c *cache) voidable(k projection.TxnKey, v projection.Txn) {
	if v.Type != pos.TypeSaleCompleted || v.Voided {
		return
	}
	for _, l := range v.Lines {
		sk := projection.SKUKey{Store: k.Store, BusinessDay: k.BusinessDay, SKU: l.SKU, Currency: v.Currency}
		if _, ok := c.sku.m[sk]; !ok {
			c.sku.m[sk] = entry[projection.SKUSales]{}
		}
		hk := projection.StockKey{Store: k.Store, SKU: l.SKU}
		if _, ok := c.onHand.m[hk]; !ok {
			c.onHand.m[hk] = entry[int64]{}
		}
	}
}

func (c *cache) scanSKU(rows pgx.Rows) error {
	var k projection.SKUKey
	var v projection.SKUSales
	var t string
	return scanEach(rows, func() { c.sku.put(k, v) }, &t, &k.Store, &k.BusinessDay, &k.SKU, &k.Currency,
		&v.QtySold, &v.QtyReturned, &v.QtyVoided, &v.Gross, &v.Discounts, &v.Returns, &v.Voids, &v.Net)
}

func (c *cache) scanOnHand(rows pgx.Rows) error {
	var k projection.StockKey
	var v int64
	var t string
	return scanEach(rows, func() { c.onHand.put(k, v) }, &t, &k.Store, &k.SKU, &v)
}

// scanEach scans every row into dst and calls fn after each; fn is a
// func() or a func() error.
func scanEach(rows pgx.Rows, fn any, dst ...any) error {
	_, err := pgx.ForEachRow(rows, dst, func() error {
		switch f := fn.(type) {
		case func():
			f()
			return nil
		case func() error:
			return f()
		}
		panic("pgview: scanEach callback is not a func() or a func() error")
	})
	return err
}

func deref[T any](p *T) T {
	var z T
	if p == nil {
		return z
	}
	return *p
}
