package ledger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// The report queries: one function per report of the back office, taking
// a ReportFilter and returning typed rows, read from the projection tables
// (migration 0007) that the commit folds. The API serves them as JSON and
// CSV, and the web pages render the same rows. Run them through ReadAs so
// that row-level security scopes them as well as the filter's Tenant.
// docs/REPORTS.md defines every figure.

// ReportFilter selects report rows. Zero fields do not filter; a filter a
// report has no column for is refused by the API, and ignored here.
type ReportFilter struct {
	Tenant   string // the scope: a tenant, or AllTenants (or "": the read transaction's scope alone)
	Store    string
	From, To string // business days, YYYY-MM-DD, both inclusive
	Currency string
	SKU      string
	Terminal string
	Status   string // reconciliation status, or anomaly kind
	// FromPos and ToPos bound the ledger position of a log's rows (the
	// inventory movements), both inclusive; 0 does not bound.
	FromPos, ToPos int64
	After          string // the cursor: Next of the previous page
	Limit          int    // default DefaultLimit, at most MaxLimit
}

// DayLayout is how business days are written.
const DayLayout = "2006-01-02"

// Money is an amount in minor units with its currency, and the same as a
// decimal string for people. Never a float.
type Money struct {
	Minor    int64  `json:"minor"`
	Currency string `json:"currency"`
	Decimal  string `json:"decimal"`
}

// NewMoney returns minor units of currency as a Money.
func NewMoney(minor int64, currency string) Money {
	return Money{Minor: minor, Currency: currency, Decimal: pos.FormatMinor(minor, currency)}
}

// StoreCompleteness says how far a store's data is complete: every stream
// of every edge serving the store has committed everything its edge had
// accepted and signed by the end of CompleteThrough (in the store's time
// zone). Complete is whether that reaches Requested.
type StoreCompleteness struct {
	Store           string `json:"store"`
	Requested       string `json:"requested"`                  // the day asked about
	CompleteThrough string `json:"complete_through,omitempty"` // absent: nothing is known complete
	Complete        bool   `json:"complete"`
}

// Report is one page of a report.
type Report[T any] struct {
	// AsOf is the ledger position the rows reflect: every record at or
	// below it is folded in (the lowest last_pos of the live projections,
	// not of a rebuild's shadow).
	AsOf   int64               `json:"as_of"`
	Rows   []T                 `json:"rows"`
	Next   string              `json:"next,omitempty"` // the cursor of the next page; absent on the last
	Stores []StoreCompleteness `json:"stores"`
}

// ErrBadCursor: a cursor that is not the Next of a page of this report.
var ErrBadCursor = errors.New("cursor is not one this report gave")

// keyCol is a column of a report's key, with the type its cursor value is
// cast to.
type keyCol struct{ name, cast string }

// reportSpec is how a report is read from its table.
type reportSpec struct {
	name    string
	table   string
	key     []keyCol
	cols    string            // the value columns, after the key
	filters map[string]string // ReportFilter field -> column
	days    string            // the business-day column ("" for none)
	pos     string            // the ledger-position column FromPos and ToPos bound ("" for none)
}

func (sp reportSpec) query(f ReportFilter) (string, []any, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	// A plain equality, not ($1 = '*' OR tenant = $1): the planner can
	// use the tables' keys, which lead with tenant, only for that.
	if f.Tenant != "" && f.Tenant != AllTenants {
		add("tenant = $?", f.Tenant)
	}
	for field, v := range map[string]string{"store": f.Store, "currency": f.Currency, "sku": f.SKU,
		"terminal": f.Terminal, "status": f.Status} {
		if col, ok := sp.filters[field]; ok && v != "" {
			add(col+" = $?", v)
		}
	}
	if sp.days != "" && f.From != "" {
		add(sp.days+" >= $?::date", f.From)
	}
	if sp.days != "" && f.To != "" {
		add(sp.days+" <= $?::date", f.To)
	}
	if sp.pos != "" && f.FromPos > 0 {
		add(sp.pos+" >= $?", f.FromPos)
	}
	if sp.pos != "" && f.ToPos > 0 {
		add(sp.pos+" <= $?", f.ToPos)
	}
	names := make([]string, len(sp.key))
	for i, k := range sp.key {
		names[i] = k.name
	}
	if f.After != "" {
		vals, err := decodeCursor(f.After, len(sp.key))
		if err != nil {
			return "", nil, fmt.Errorf("%s report: %w", sp.name, err)
		}
		ps := make([]string, len(sp.key))
		for i, k := range sp.key {
			args = append(args, vals[i])
			ps[i] = "$" + strconv.Itoa(len(args))
			if k.cast != "" {
				ps[i] += "::" + k.cast
			}
		}
		where = append(where, "("+strings.Join(names, ", ")+") > ("+strings.Join(ps, ", ")+")")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	args = append(args, min(limit, MaxLimit)+1) // one more, to know whether there is a next page
	if len(where) == 0 {
		where = append(where, "true")
	}
	q := fmt.Sprintf(`SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT $%d`,
		sp.cols, sp.table, strings.Join(where, " AND "), strings.Join(names, ", "), len(args))
	return q, args, nil
}

// badCursor turns a data exception (SQLSTATE class 22: a value that is
// not a date, a number out of range, a NUL byte) into ErrBadCursor when the
// filter has a cursor: only the cursor's values reach the query unchecked
// by type.
func badCursor(f ReportFilter, err error) error {
	if f.After != "" && strings.HasPrefix(sqlState(err), "22") {
		return ErrBadCursor
	}
	return err
}

func encodeCursor(vals []string) string {
	b, _ := json.Marshal(vals) // strings always encode
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string, n int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	var vals []string
	if err == nil {
		err = json.Unmarshal(b, &vals)
	}
	if err != nil || len(vals) != n {
		return nil, ErrBadCursor
	}
	return vals, nil
}

// runReport reads one page of a report: the rows, the cursor after them,
// and as_of, in the caller's snapshot when l is ReadAs's.
func runReport[T any](ctx context.Context, l *Ledger, sp reportSpec, f ReportFilter,
	scan func(pgx.Row) (T, error), key func(T) []string, store func(T) (string, string)) (Report[T], error) {
	out := Report[T]{Rows: []T{}, Stores: []StoreCompleteness{}}
	err := l.readSnapshot(ctx, func(tx pgx.Tx) error {
		// The live projections' checkpoints: a rebuild's shadow
		// (pgview's "<name>_rebuild") is not what the rows reflect.
		if err := tx.QueryRow(ctx, `SELECT coalesce(min(last_pos), 0) FROM projection_checkpoints
			WHERE name NOT LIKE '%\_rebuild'`).Scan(&out.AsOf); err != nil {
			return err
		}
		q, args, err := sp.query(f)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return badCursor(f, err)
		}
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out.Rows = append(out.Rows, v)
		}
		if err := rows.Err(); err != nil {
			return badCursor(f, err)
		}
		limit := min(max(f.Limit, 0), MaxLimit)
		if limit == 0 {
			limit = DefaultLimit
		}
		if len(out.Rows) > limit {
			out.Rows = out.Rows[:limit]
			out.Next = encodeCursor(key(out.Rows[limit-1]))
		}
		latest := map[string]string{}
		if f.Store != "" {
			latest[f.Store] = ""
		}
		for _, r := range out.Rows {
			s, d := store(r)
			if cur, ok := latest[s]; s != "" && (!ok || d > cur) {
				latest[s] = d
			}
		}
		out.Stores, err = storesComplete(ctx, tx, latest, f.To, l.opts.Now(), out.AsOf)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrBadCursor) {
			return out, err
		}
		return out, fmt.Errorf("%s report: %w", sp.name, err)
	}
	return out, nil
}

// storesComplete says, for each store of latest (store -> the latest
// business day of its rows), how far its data is complete. The day asked
// about is to when given, else the store's latest day in the rows, else
// (a report without days) the store's yesterday. A stream is counted only
// as far as the rows reflect it: when its last committed record lies
// beyond asOf (a projection folded behind the commits has not reached
// it), it counts through its last record at or below asOf instead.
func storesComplete(ctx context.Context, tx pgx.Tx, latest map[string]string, to string, now time.Time, asOf int64) ([]StoreCompleteness, error) {
	out := []StoreCompleteness{}
	if len(latest) == 0 {
		return out, nil
	}
	ids := make([]string, 0, len(latest))
	for s := range latest {
		ids = append(ids, s)
	}
	rows, err := tx.Query(ctx,
		`SELECT s.id, s.time_zone, CASE WHEN h.pos > $2 THEN coalesce(f.seq, 0) ELSE st.hwm END, st.edge_seq, st.edge_seq_time,
			CASE WHEN h.pos > $2 THEN f.edge_time ELSE h.edge_time END
		 FROM stores s
		 LEFT JOIN edges e ON e.store = s.id
		 LEFT JOIN streams st ON st.edge = e.id AND st.ended_at IS NULL
		 LEFT JOIN LATERAL (SELECT l.edge_time, l.pos FROM ledger l
			WHERE l.edge = st.edge AND l.epoch = st.epoch AND l.seq = st.hwm LIMIT 1) h ON true
		 LEFT JOIN LATERAL (SELECT l.seq, l.edge_time FROM ledger l
			WHERE h.pos > $2 AND l.edge = st.edge AND l.epoch = st.epoch AND l.pos <= $2 ORDER BY l.seq DESC LIMIT 1) f ON true
		 WHERE s.id = ANY($1)
		 ORDER BY s.id`, ids, asOf)
	if err != nil {
		return nil, err
	}
	type acc struct {
		loc     *time.Location
		through time.Time // the earliest attested time over the store's streams
		any     bool      // the store has a stream
	}
	byStore := map[string]*acc{}
	var order []string
	var id, zone string
	var hwm, edgeSeq, seqTime *int64
	var lastTime *time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &zone, &hwm, &edgeSeq, &seqTime, &lastTime}, func() error {
		a := byStore[id]
		if a == nil {
			loc, err := time.LoadLocation(zone)
			if err != nil {
				loc = time.UTC
			}
			a = &acc{loc: loc}
			byStore[id] = a
			order = append(order, id)
		}
		if hwm == nil {
			return nil
		}
		// Attested: the time up to which the edge's accepted events are
		// all committed. Everything up to the last committed record's edge
		// time, and, when the cloud holds the whole head the edge last
		// signed, everything up to when it signed it.
		var at time.Time
		if lastTime != nil {
			at = *lastTime
		}
		if seqTime != nil && edgeSeq != nil && *hwm >= *edgeSeq {
			if t := protocol.HLCTime(*seqTime).Time(); t.After(at) {
				at = t
			}
		}
		if !a.any || at.Before(a.through) {
			a.through = at
		}
		a.any = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, s := range order {
		a := byStore[s]
		c := StoreCompleteness{Store: s, Requested: to}
		if c.Requested == "" {
			c.Requested = latest[s]
		}
		if c.Requested == "" {
			c.Requested = now.In(a.loc).AddDate(0, 0, -1).Format(DayLayout)
		}
		if a.any && !a.through.IsZero() {
			// The last day that ended before the attested time.
			c.CompleteThrough = a.through.In(a.loc).AddDate(0, 0, -1).Format(DayLayout)
			c.Complete = c.CompleteThrough >= c.Requested
		}
		out = append(out, c)
	}
	return out, nil
}

func day(t time.Time) string { return t.Format(DayLayout) }

var salesSpec = reportSpec{
	name: "sales", table: "sales_summary",
	key: []keyCol{{"tenant", ""}, {"store", ""}, {"business_day", "date"}, {"currency", ""}},
	cols: `tenant, store, business_day, currency, transactions, items, gross_sales, discounts, returns_count, returns_amount,
		voids_count, voids_amount, tax, net_sales, total_collected`,
	filters: map[string]string{"store": "store", "currency": "currency"},
	days:    "business_day",
}

// SalesRow is one row of the sales summary.
type SalesRow struct {
	Tenant         string `json:"tenant"`
	Store          string `json:"store"`
	BusinessDay    string `json:"business_day"`
	Currency       string `json:"currency"`
	Transactions   int64  `json:"transactions"`
	Items          int64  `json:"items"` // thousandths
	GrossSales     Money  `json:"gross_sales"`
	Discounts      Money  `json:"discounts"`
	ReturnsCount   int64  `json:"returns_count"`
	ReturnsAmount  Money  `json:"returns_amount"`
	VoidsCount     int64  `json:"voids_count"`
	VoidsAmount    Money  `json:"voids_amount"`
	Tax            Money  `json:"tax"`
	NetSales       Money  `json:"net_sales"`
	TotalCollected Money  `json:"total_collected"`
}

// SalesReport reads the sales summary per (store, business day, currency).
func (l *Ledger) SalesReport(ctx context.Context, f ReportFilter) (Report[SalesRow], error) {
	return runReport(ctx, l, salesSpec, f, func(r pgx.Row) (SalesRow, error) {
		var v SalesRow
		var d time.Time
		var gross, disc, ret, void, tax, net, total int64
		err := r.Scan(&v.Tenant, &v.Store, &d, &v.Currency, &v.Transactions, &v.Items, &gross, &disc,
			&v.ReturnsCount, &ret, &v.VoidsCount, &void, &tax, &net, &total)
		v.BusinessDay = day(d)
		c := v.Currency
		v.GrossSales, v.Discounts, v.ReturnsAmount, v.VoidsAmount = NewMoney(gross, c), NewMoney(disc, c), NewMoney(ret, c), NewMoney(void, c)
		v.Tax, v.NetSales, v.TotalCollected = NewMoney(tax, c), NewMoney(net, c), NewMoney(total, c)
		return v, err
	}, func(v SalesRow) []string { return []string{v.Tenant, v.Store, v.BusinessDay, v.Currency} }, func(v SalesRow) (string, string) { return v.Store, v.BusinessDay })
}

var skuSpec = reportSpec{
	name: "sales by sku", table: "sales_by_sku",
	key:     []keyCol{{"tenant", ""}, {"store", ""}, {"business_day", "date"}, {"sku", ""}, {"currency", ""}},
	cols:    `tenant, store, business_day, sku, currency, qty_sold, qty_returned, qty_voided, gross, discounts, returns, voids, net`,
	filters: map[string]string{"store": "store", "currency": "currency", "sku": "sku"},
	days:    "business_day",
}

// SKURow is one row of sales by SKU. Quantities are thousandths.
type SKURow struct {
	Tenant      string `json:"tenant"`
	Store       string `json:"store"`
	BusinessDay string `json:"business_day"`
	SKU         string `json:"sku"`
	Currency    string `json:"currency"`
	QtySold     int64  `json:"qty_sold"`
	QtyReturned int64  `json:"qty_returned"`
	QtyVoided   int64  `json:"qty_voided"`
	Gross       Money  `json:"gross"`
	Discounts   Money  `json:"discounts"`
	Returns     Money  `json:"returns"`
	Voids       Money  `json:"voids"`
	Net         Money  `json:"net"`
}

// SKUReport reads sales by SKU per (store, business day, sku, currency).
func (l *Ledger) SKUReport(ctx context.Context, f ReportFilter) (Report[SKURow], error) {
	return runReport(ctx, l, skuSpec, f, func(r pgx.Row) (SKURow, error) {
		var v SKURow
		var d time.Time
		var gross, disc, ret, void, net int64
		err := r.Scan(&v.Tenant, &v.Store, &d, &v.SKU, &v.Currency, &v.QtySold, &v.QtyReturned, &v.QtyVoided,
			&gross, &disc, &ret, &void, &net)
		v.BusinessDay = day(d)
		c := v.Currency
		v.Gross, v.Discounts, v.Returns, v.Voids, v.Net = NewMoney(gross, c), NewMoney(disc, c), NewMoney(ret, c), NewMoney(void, c), NewMoney(net, c)
		return v, err
	}, func(v SKURow) []string { return []string{v.Tenant, v.Store, v.BusinessDay, v.SKU, v.Currency} }, func(v SKURow) (string, string) { return v.Store, v.BusinessDay })
}

var hourSpec = reportSpec{
	name: "sales by hour", table: "sales_by_hour",
	key:     []keyCol{{"tenant", ""}, {"store", ""}, {"business_day", "date"}, {"hour", "smallint"}, {"currency", ""}},
	cols:    `tenant, store, business_day, hour, currency, count, net`,
	filters: map[string]string{"store": "store", "currency": "currency"},
	days:    "business_day",
}

// HourRow is one row of sales by hour: Hour is 0 to 23 in the store's
// time zone.
type HourRow struct {
	Tenant      string `json:"tenant"`
	Store       string `json:"store"`
	BusinessDay string `json:"business_day"`
	Hour        int    `json:"hour"`
	Currency    string `json:"currency"`
	Count       int64  `json:"count"`
	Net         Money  `json:"net"`
}

// HourReport reads sales by hour per (store, business day, hour, currency).
func (l *Ledger) HourReport(ctx context.Context, f ReportFilter) (Report[HourRow], error) {
	return runReport(ctx, l, hourSpec, f, func(r pgx.Row) (HourRow, error) {
		var v HourRow
		var d time.Time
		var hour int16
		var net int64
		err := r.Scan(&v.Tenant, &v.Store, &d, &hour, &v.Currency, &v.Count, &net)
		v.BusinessDay, v.Hour, v.Net = day(d), int(hour), NewMoney(net, v.Currency)
		return v, err
	}, func(v HourRow) []string {
		return []string{v.Tenant, v.Store, v.BusinessDay, strconv.Itoa(v.Hour), v.Currency}
	}, func(v HourRow) (string, string) { return v.Store, v.BusinessDay })
}

var tendersSpec = reportSpec{
	name: "tenders", table: "tenders",
	key:     []keyCol{{"tenant", ""}, {"store", ""}, {"business_day", "date"}, {"type", ""}, {"currency", ""}},
	cols:    `tenant, store, business_day, type, currency, count, amount, change, refunds, net`,
	filters: map[string]string{"store": "store", "currency": "currency"},
	days:    "business_day",
}

// TenderRow is one row of the tenders report.
type TenderRow struct {
	Tenant      string `json:"tenant"`
	Store       string `json:"store"`
	BusinessDay string `json:"business_day"`
	Type        string `json:"type"`
	Currency    string `json:"currency"`
	Count       int64  `json:"count"`
	Amount      Money  `json:"amount"`
	Change      Money  `json:"change"`
	Refunds     Money  `json:"refunds"`
	Net         Money  `json:"net"`
}

// TendersReport reads tenders per (store, business day, type, currency).
func (l *Ledger) TendersReport(ctx context.Context, f ReportFilter) (Report[TenderRow], error) {
	return runReport(ctx, l, tendersSpec, f, func(r pgx.Row) (TenderRow, error) {
		var v TenderRow
		var d time.Time
		var amount, change, refunds, net int64
		err := r.Scan(&v.Tenant, &v.Store, &d, &v.Type, &v.Currency, &v.Count, &amount, &change, &refunds, &net)
		c := v.Currency
		v.BusinessDay = day(d)
		v.Amount, v.Change, v.Refunds, v.Net = NewMoney(amount, c), NewMoney(change, c), NewMoney(refunds, c), NewMoney(net, c)
		return v, err
	}, func(v TenderRow) []string { return []string{v.Tenant, v.Store, v.BusinessDay, v.Type, v.Currency} }, func(v TenderRow) (string, string) { return v.Store, v.BusinessDay })
}

var inventorySpec = reportSpec{
	name: "inventory", table: "inventory_on_hand",
	key:     []keyCol{{"tenant", ""}, {"store", ""}, {"sku", ""}},
	cols:    `tenant, store, sku, on_hand`,
	filters: map[string]string{"store": "store", "sku": "sku"},
}

// InventoryRow is one item's stock on hand in one store, in thousandths.
type InventoryRow struct {
	Tenant string `json:"tenant"`
	Store  string `json:"store"`
	SKU    string `json:"sku"`
	OnHand int64  `json:"on_hand"`
}

// InventoryReport reads stock on hand per (store, sku).
func (l *Ledger) InventoryReport(ctx context.Context, f ReportFilter) (Report[InventoryRow], error) {
	return runReport(ctx, l, inventorySpec, f, func(r pgx.Row) (InventoryRow, error) {
		var v InventoryRow
		err := r.Scan(&v.Tenant, &v.Store, &v.SKU, &v.OnHand)
		return v, err
	}, func(v InventoryRow) []string { return []string{v.Tenant, v.Store, v.SKU} }, func(v InventoryRow) (string, string) { return v.Store, "" })
}

var telemetrySpec = reportSpec{
	name: "telemetry", table: "telemetry_per_minute",
	key:     []keyCol{{"tenant", ""}, {"store", ""}, {"sensor", ""}, {"metric", ""}, {"minute", "timestamptz"}},
	cols:    `tenant, store, sensor, metric, minute, count, min, max, sum`,
	filters: map[string]string{"store": "store"},
	days:    "(minute AT TIME ZONE 'UTC')::date",
}

// TelemetryRow is one minute (UTC, of the edge's clock) of one sensor's
// metric. Values are measurements, not money: floats.
type TelemetryRow struct {
	Tenant string    `json:"tenant"`
	Store  string    `json:"store"`
	Sensor string    `json:"sensor"`
	Metric string    `json:"metric"`
	Minute time.Time `json:"minute"`
	Count  int64     `json:"count"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Sum    float64   `json:"sum"`
}

// TelemetryReport reads telemetry per (store, sensor, metric, minute).
// The day range bounds the minute's UTC date.
func (l *Ledger) TelemetryReport(ctx context.Context, f ReportFilter) (Report[TelemetryRow], error) {
	return runReport(ctx, l, telemetrySpec, f, func(r pgx.Row) (TelemetryRow, error) {
		var v TelemetryRow
		err := r.Scan(&v.Tenant, &v.Store, &v.Sensor, &v.Metric, &v.Minute, &v.Count, &v.Min, &v.Max, &v.Sum)
		v.Minute = v.Minute.UTC()
		return v, err
	}, func(v TelemetryRow) []string {
		return []string{v.Tenant, v.Store, v.Sensor, v.Metric, v.Minute.Format(time.RFC3339Nano)}
	}, func(v TelemetryRow) (string, string) { return v.Store, v.Minute.Format(DayLayout) })
}

var reconciliationSpec = reportSpec{
	name: "reconciliation", table: "till_reconciliation",
	key: []keyCol{{"tenant", ""}, {"store", ""}, {"terminal", ""}, {"business_day", "date"}, {"currency", ""}},
	cols: `tenant, store, terminal, business_day, currency, status, reason, ledger_sales_count, ledger_sales_total,
		ledger_returns_count, ledger_returns_total, ledger_voids_count, ledger_voids_total, ledger_net, ledger_tenders,
		z, z_pos, z_event_id, z_count, restated`,
	filters: map[string]string{"store": "store", "currency": "currency", "terminal": "terminal", "status": "status"},
	days:    "business_day",
}

// TillTotals is one side of a till day's reconciliation: counts and
// totals of sales, returns and voids, and the net.
type TillTotals struct {
	SalesCount   int64 `json:"sales_count"`
	SalesTotal   Money `json:"sales_total"`
	ReturnsCount int64 `json:"returns_count"`
	ReturnsTotal Money `json:"returns_total"`
	VoidsCount   int64 `json:"voids_count"`
	VoidsTotal   Money `json:"voids_total"`
	Net          Money `json:"net"`
}

// ReconciliationRow is one till day reconciled against its Z report.
type ReconciliationRow struct {
	Tenant      string          `json:"tenant"`
	Store       string          `json:"store"`
	Terminal    string          `json:"terminal"`
	BusinessDay string          `json:"business_day"`
	Currency    string          `json:"currency"`
	Status      string          `json:"status"`
	Reason      []string        `json:"reason"`
	Ledger      TillTotals      `json:"ledger"`
	Tenders     json.RawMessage `json:"ledger_tenders"` // the ledger's tender split, as the fold stores it
	Z           json.RawMessage `json:"z,omitempty"`    // the till.closed body reconciled against
	ZPos        *int64          `json:"z_pos,omitempty"`
	ZEventID    *string         `json:"z_event_id,omitempty"`
	ZCount      int64           `json:"z_count"`
	Restated    []int64         `json:"restated"` // positions of the events that changed the day after it matched
}

// ReconciliationReport reads the till reconciliation per (store, terminal,
// business day, currency). Status filters by status.
func (l *Ledger) ReconciliationReport(ctx context.Context, f ReportFilter) (Report[ReconciliationRow], error) {
	return runReport(ctx, l, reconciliationSpec, f, func(r pgx.Row) (ReconciliationRow, error) {
		var v ReconciliationRow
		var d time.Time
		var st, rt, vt, net int64
		var tenders, z []byte
		err := r.Scan(&v.Tenant, &v.Store, &v.Terminal, &d, &v.Currency, &v.Status, &v.Reason,
			&v.Ledger.SalesCount, &st, &v.Ledger.ReturnsCount, &rt, &v.Ledger.VoidsCount, &vt, &net, &tenders,
			&z, &v.ZPos, &v.ZEventID, &v.ZCount, &v.Restated)
		c := v.Currency
		v.BusinessDay = day(d)
		v.Ledger.SalesTotal, v.Ledger.ReturnsTotal, v.Ledger.VoidsTotal, v.Ledger.Net = NewMoney(st, c), NewMoney(rt, c), NewMoney(vt, c), NewMoney(net, c)
		v.Tenders = json.RawMessage(tenders)
		if z != nil {
			v.Z = json.RawMessage(z)
		}
		if v.Reason == nil {
			v.Reason = []string{}
		}
		if v.Restated == nil {
			v.Restated = []int64{}
		}
		return v, err
	}, func(v ReconciliationRow) []string {
		return []string{v.Tenant, v.Store, v.Terminal, v.BusinessDay, v.Currency}
	}, func(v ReconciliationRow) (string, string) { return v.Store, v.BusinessDay })
}

var anomaliesSpec = reportSpec{
	name: "anomalies", table: "anomalies",
	key:     []keyCol{{"pos", "bigint"}, {"ord", "integer"}},
	cols:    `tenant, pos, ord, kind, event_id, type, store, other_pos, other_event_id, detail`,
	filters: map[string]string{"store": "store", "status": "kind"},
}

// AnomalyRow is a record the reports did not count as it stands, and why.
type AnomalyRow struct {
	Tenant       string  `json:"tenant"`
	Pos          int64   `json:"pos"`
	Ord          int     `json:"ord"`
	Kind         string  `json:"kind"`
	EventID      string  `json:"event_id"`
	Type         string  `json:"type"`
	Store        string  `json:"store"`
	OtherPos     *int64  `json:"other_pos,omitempty"`
	OtherEventID *string `json:"other_event_id,omitempty"`
	Detail       string  `json:"detail"`
}

// AnomaliesReport reads the anomalies in ledger order. Status filters by
// kind.
func (l *Ledger) AnomaliesReport(ctx context.Context, f ReportFilter) (Report[AnomalyRow], error) {
	return runReport(ctx, l, anomaliesSpec, f, func(r pgx.Row) (AnomalyRow, error) {
		var v AnomalyRow
		var ord int32
		err := r.Scan(&v.Tenant, &v.Pos, &ord, &v.Kind, &v.EventID, &v.Type, &v.Store, &v.OtherPos, &v.OtherEventID, &v.Detail)
		v.Ord = int(ord)
		return v, err
	}, func(v AnomalyRow) []string { return []string{strconv.FormatInt(v.Pos, 10), strconv.Itoa(v.Ord)} }, func(v AnomalyRow) (string, string) { return v.Store, "" })
}

// completenessTable is the streams of edges with their tenant and store,
// as a report table: one row per stream.
const completenessTable = `(SELECT e.tenant, coalesce(e.store, '') AS store, st.edge, st.epoch, encode(st.epoch, 'hex') AS epoch_hex,
	st.hwm, st.edge_seq, st.edge_seq_time, st.last_commit, st.last_seen, st.ended_at
	FROM streams st JOIN edges e ON e.id = st.edge) c`

var completenessSpec = reportSpec{
	name: "completeness", table: completenessTable,
	key:     []keyCol{{"store", ""}, {"edge", ""}, {"epoch_hex", ""}},
	cols:    `tenant, store, edge, epoch, hwm, edge_seq, edge_seq_time, last_commit, last_seen, ended_at`,
	filters: map[string]string{"store": "store"},
}

// CompletenessRow is one stream's completeness: committed through which
// seq, the edge's own head as it last signed it (its signed hello), the
// events pending at the edge, the last commit and the last contact.
type CompletenessRow struct {
	Tenant      string         `json:"tenant"`
	Store       string         `json:"store"` // the edge's store; "" when it serves none or several
	Edge        string         `json:"edge"`
	Epoch       protocol.Epoch `json:"epoch"`
	Committed   uint64         `json:"committed_seq"`
	EdgeHead    uint64         `json:"edge_head_seq"`
	EdgeHeadAt  *time.Time     `json:"edge_head_at,omitempty"` // the edge's clock when it signed that head
	Pending     uint64         `json:"pending"`
	LastCommit  *time.Time     `json:"last_commit,omitempty"`
	LastContact time.Time      `json:"last_contact"`
	Ended       bool           `json:"ended"` // a stream the edge has replaced with a new epoch
	EndedAt     *time.Time     `json:"ended_at,omitempty"`
}

// CompletenessReport reads every stream's completeness, by store, edge
// and epoch. Its Stores say how far each store is complete.
func (l *Ledger) CompletenessReport(ctx context.Context, f ReportFilter) (Report[CompletenessRow], error) {
	return runReport(ctx, l, completenessSpec, f, func(r pgx.Row) (CompletenessRow, error) {
		var v CompletenessRow
		var epoch []byte
		var hwm, edgeSeq int64
		var seqTime *int64
		var ended *time.Time
		err := r.Scan(&v.Tenant, &v.Store, &v.Edge, &epoch, &hwm, &edgeSeq, &seqTime, &v.LastCommit, &v.LastContact, &ended)
		copy(v.Epoch[:], epoch)
		v.Committed, v.EdgeHead = uint64(hwm), uint64(edgeSeq)
		if v.EdgeHead > v.Committed {
			v.Pending = v.EdgeHead - v.Committed
		}
		if seqTime != nil {
			t := protocol.HLCTime(*seqTime).Time()
			v.EdgeHeadAt = &t
		}
		if v.LastCommit != nil {
			t := v.LastCommit.UTC()
			v.LastCommit = &t
		}
		v.LastContact = v.LastContact.UTC()
		if ended != nil {
			t := ended.UTC()
			v.Ended, v.EndedAt = true, &t
		}
		return v, err
	}, func(v CompletenessRow) []string { return []string{v.Store, v.Edge, v.Epoch.String()} }, func(v CompletenessRow) (string, string) { return v.Store, "" })
}
