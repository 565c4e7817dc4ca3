package api

import (
	"context"
	"encoding/csv"
	"errors"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// The report endpoints: GET /v1/reports/..., each one ledger report
// function (cloud/ledger/reports.go), as JSON or, with Accept: text/csv,
// as CSV.

// Report query parameters.
var (
	dayParams     = []string{"store", "from", "to", "currency", "after", "limit"}
	reconStatuses = []string{"open", "match", "pending", "mismatch", "restated"}
	anomalyKinds  = []string{"duplicate_transaction", "unknown_store", "foreign_store", "undecodable", "void_of_unknown_sale",
		"void_of_voided_sale", "z_superseded", "shed"}
)

// reportEndpoints are the report routes, for endpoints().
func (s *server) reportEndpoints() []endpoint {
	with := func(extra ...string) []string { return append(slices.Clone(dayParams), extra...) }
	return []endpoint{
		{"GET /v1/reports/sales", reader, reportHandler(s, (*ledger.Ledger).SalesReport, salesCSV), dayParams, false},
		{"GET /v1/reports/sales/by-sku", reader, reportHandler(s, (*ledger.Ledger).SKUReport, skuCSV), with("sku"), false},
		{"GET /v1/reports/sales/by-hour", reader, reportHandler(s, (*ledger.Ledger).HourReport, hourCSV), dayParams, false},
		{"GET /v1/reports/tenders", reader, reportHandler(s, (*ledger.Ledger).TendersReport, tenderCSV), dayParams, false},
		{"GET /v1/reports/inventory", reader, reportHandler(s, (*ledger.Ledger).InventoryReport, inventoryCSV),
			[]string{"store", "sku", "after", "limit"}, false},
		{"GET /v1/reports/inventory/movements", reader, reportHandler(s, (*ledger.Ledger).MovementsReport, movementCSV),
			[]string{"store", "sku", "from_pos", "to_pos", "after", "limit"}, false},
		{"GET /v1/reports/restatements", reader, reportHandler(s, (*ledger.Ledger).RestatementsReport, restatementCSV),
			[]string{"store", "from", "to", "terminal", "after", "limit"}, false},
		{"GET /v1/reports/telemetry", reader, reportHandler(s, (*ledger.Ledger).TelemetryReport, telemetryCSV),
			[]string{"store", "from", "to", "after", "limit"}, false},
		{"GET /v1/reports/reconciliation", reader, reportHandler(s, (*ledger.Ledger).ReconciliationReport, reconciliationCSV),
			with("terminal", "status"), false},
		{"GET /v1/reports/anomalies", reader, reportHandler(s, (*ledger.Ledger).AnomaliesReport, anomalyCSV),
			[]string{"store", "status", "after", "limit"}, false},
		{"GET /v1/reports/completeness", reader, reportHandler(s, (*ledger.Ledger).CompletenessReport, completenessCSV),
			[]string{"store", "to", "after", "limit"}, false},
	}
}

// csvForm is how a report's rows are written as CSV.
type csvForm[T any] struct {
	header []string
	row    func(T) []string
}

func reportHandler[T any](s *server, run func(*ledger.Ledger, context.Context, ledger.ReportFilter) (ledger.Report[T], error),
	form csvForm[T]) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		f, err := parseReportFilter(r)
		if err != nil {
			return err
		}
		rep, err := run(s.led(r), r.Context(), f)
		if errors.Is(err, ledger.ErrBadCursor) {
			return badRequest("parameter after must be the next cursor of a previous page of this report, as given")
		}
		if err != nil {
			return err
		}
		if wantsCSV(r) {
			writeReportCSV(w, rep, form)
			return nil
		}
		writeJSON(w, http.StatusOK, rep)
		return nil
	}
}

// parseReportFilter reads the report parameters the endpoint takes
// (onlyParams has refused the others).
func parseReportFilter(r *http.Request) (ledger.ReportFilter, error) {
	q := r.URL.Query()
	f := ledger.ReportFilter{Tenant: scope(r), Store: q.Get("store"), Currency: q.Get("currency"), SKU: q.Get("sku"),
		Terminal: q.Get("terminal"), Status: q.Get("status"), After: q.Get("after")}
	if f.Store != "" {
		if err := protocol.ValidateName("store", f.Store); err != nil {
			return f, badRequest("parameter store: %v", err)
		}
	}
	for _, p := range []struct {
		name string
		dst  *string
	}{{"from", &f.From}, {"to", &f.To}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		if _, err := time.Parse(ledger.DayLayout, v); err != nil {
			return f, badRequest("parameter %s must be a business day as YYYY-MM-DD, such as 2026-03-01, got %q", p.name, v)
		}
		*p.dst = v
	}
	if f.From != "" && f.To != "" && f.From > f.To {
		return f, badRequest("parameter to (%s) is before from (%s); both are inclusive", f.To, f.From)
	}
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"from_pos", &f.FromPos}, {"to_pos", &f.ToPos}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return f, badRequest("parameter %s must be a ledger position, a whole number from 1, got %q", p.name, v)
		}
		*p.dst = n
	}
	if f.FromPos != 0 && f.ToPos != 0 && f.FromPos > f.ToPos {
		return f, badRequest("parameter to_pos (%d) is before from_pos (%d); both are inclusive", f.ToPos, f.FromPos)
	}
	if f.Currency != "" && !pos.ValidCurrency(f.Currency) {
		return f, badRequest("parameter currency must be an ISO 4217 code such as EUR, got %q", f.Currency)
	}
	for name, v := range map[string]string{"sku": f.SKU, "terminal": f.Terminal} {
		if len(v) > 128 {
			return f, badRequest("parameter %s is %d bytes; the limit is 128", name, len(v))
		}
		if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return f, badRequest("parameter %s must be UTF-8 text without NUL bytes", name)
		}
	}
	if f.Status != "" {
		set := reconStatuses
		if strings.HasSuffix(r.URL.Path, "/anomalies") {
			set = anomalyKinds
		}
		if !slices.Contains(set, f.Status) {
			return f, badRequest("parameter status must be one of %v, got %q", set, f.Status)
		}
	}
	if len(f.After) > 2048 {
		return f, badRequest("parameter after must be the next cursor of a previous page of this report, as given")
	}
	var err error
	if f.Limit, err = parseLimit(r); err != nil {
		return f, err
	}
	return f, nil
}

// wantsCSV reports whether the request's Accept header asks for CSV
// (text/csv), and not for JSON first.
func wantsCSV(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "text/csv":
			return true
		case "application/json":
			return false
		}
	}
	return false
}

// writeReportCSV writes a report as CSV: a header row, then a row per
// report row. What the JSON has beside the rows travels in headers:
// X-Outpost-As-Of, X-Outpost-Next (absent on the last page) and
// X-Outpost-Complete (per store: store=complete_through;complete|incomplete).
func writeReportCSV[T any](w http.ResponseWriter, rep ledger.Report[T], form csvForm[T]) {
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Outpost-As-Of", strconv.FormatInt(rep.AsOf, 10))
	if rep.Next != "" {
		h.Set("X-Outpost-Next", rep.Next)
	}
	var comp []string
	for _, st := range rep.Stores {
		state := "incomplete"
		if st.Complete {
			state = "complete"
		}
		comp = append(comp, st.Store+"="+st.CompleteThrough+";"+state)
	}
	if len(comp) > 0 {
		h.Set("X-Outpost-Complete", strings.Join(comp, ","))
	}
	w.WriteHeader(http.StatusOK)
	cw := csv.NewWriter(w)
	_ = cw.Write(form.header)
	for _, row := range rep.Rows {
		_ = cw.Write(form.row(row))
	}
	cw.Flush()
}

// cell makes outside text safe for a spreadsheet: a cell that starts with
// = + - @ or a control character would be read as a formula, so it gets a
// leading apostrophe (OWASP's advice on CSV injection).
func cell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r\n", rune(s[0])) {
		return "'" + s
	}
	return s
}

func i64(n int64) string { return strconv.FormatInt(n, 10) }

// money is a Money's two CSV cells: minor units, then the decimal.
func money(m ledger.Money) []string { return []string{i64(m.Minor), m.Decimal} }

func moneyHeader(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, n+"_minor", n)
	}
	return out
}

func join(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func optInt(p *int64) string {
	if p == nil {
		return ""
	}
	return i64(*p)
}

func optTime(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

var salesCSV = csvForm[ledger.SalesRow]{
	header: join([]string{"tenant", "store", "business_day", "currency", "transactions", "items"},
		moneyHeader("gross_sales", "discounts"), []string{"returns_count"}, moneyHeader("returns_amount"),
		[]string{"voids_count"}, moneyHeader("voids_amount", "tax", "net_sales", "total_collected")),
	row: func(v ledger.SalesRow) []string {
		return join([]string{cell(v.Tenant), cell(v.Store), v.BusinessDay, v.Currency, i64(v.Transactions), i64(v.Items)},
			money(v.GrossSales), money(v.Discounts), []string{i64(v.ReturnsCount)}, money(v.ReturnsAmount),
			[]string{i64(v.VoidsCount)}, money(v.VoidsAmount), money(v.Tax), money(v.NetSales), money(v.TotalCollected))
	},
}

var skuCSV = csvForm[ledger.SKURow]{
	header: join([]string{"tenant", "store", "business_day", "sku", "currency", "qty_sold", "qty_returned", "qty_voided"},
		moneyHeader("gross", "discounts", "returns", "voids", "net")),
	row: func(v ledger.SKURow) []string {
		return join([]string{cell(v.Tenant), cell(v.Store), v.BusinessDay, cell(v.SKU), v.Currency, i64(v.QtySold), i64(v.QtyReturned), i64(v.QtyVoided)},
			money(v.Gross), money(v.Discounts), money(v.Returns), money(v.Voids), money(v.Net))
	},
}

var hourCSV = csvForm[ledger.HourRow]{
	header: join([]string{"tenant", "store", "business_day", "hour", "currency", "count"}, moneyHeader("net")),
	row: func(v ledger.HourRow) []string {
		return join([]string{cell(v.Tenant), cell(v.Store), v.BusinessDay, strconv.Itoa(v.Hour), v.Currency, i64(v.Count)}, money(v.Net))
	},
}

var tenderCSV = csvForm[ledger.TenderRow]{
	header: join([]string{"tenant", "store", "business_day", "type", "currency", "count"}, moneyHeader("amount", "change", "refunds", "net")),
	row: func(v ledger.TenderRow) []string {
		return join([]string{cell(v.Tenant), cell(v.Store), v.BusinessDay, cell(v.Type), v.Currency, i64(v.Count)},
			money(v.Amount), money(v.Change), money(v.Refunds), money(v.Net))
	},
}

var inventoryCSV = csvForm[ledger.InventoryRow]{
	header: []string{"tenant", "store", "sku", "on_hand"},
	row: func(v ledger.InventoryRow) []string {
		return []string{cell(v.Tenant), cell(v.Store), cell(v.SKU), i64(v.OnHand)}
	},
}

var movementCSV = csvForm[ledger.MovementRow]{
	header: []string{"tenant", "pos", "ord", "store", "sku", "reason", "delta", "on_hand"},
	row: func(v ledger.MovementRow) []string {
		return []string{cell(v.Tenant), i64(v.Pos), strconv.Itoa(v.Ord), cell(v.Store), cell(v.SKU), cell(v.Reason), i64(v.Delta), i64(v.OnHand)}
	},
}

var restatementCSV = csvForm[ledger.RestatementRow]{
	header: []string{"tenant", "pos", "ord", "store", "terminal", "business_day", "currency", "event_id", "type", "status", "what"},
	row: func(v ledger.RestatementRow) []string {
		return []string{cell(v.Tenant), i64(v.Pos), strconv.Itoa(v.Ord), cell(v.Store), cell(v.Terminal), v.BusinessDay, v.Currency,
			cell(v.EventID), cell(v.Type), v.Status, cell(strings.Join(v.What, "; "))}
	},
}

var telemetryCSV = csvForm[ledger.TelemetryRow]{
	header: []string{"tenant", "store", "sensor", "metric", "minute", "count", "min", "max", "sum"},
	row: func(v ledger.TelemetryRow) []string {
		f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
		return []string{cell(v.Tenant), cell(v.Store), cell(v.Sensor), cell(v.Metric), v.Minute.Format(time.RFC3339),
			i64(v.Count), f(v.Min), f(v.Max), f(v.Sum)}
	},
}

var reconciliationCSV = csvForm[ledger.ReconciliationRow]{
	header: join([]string{"tenant", "store", "terminal", "business_day", "currency", "status", "reason", "sales_count"},
		moneyHeader("sales_total"), []string{"returns_count"}, moneyHeader("returns_total"), []string{"voids_count"},
		moneyHeader("voids_total", "net"), []string{"z_count", "z_pos", "z_event_id", "restated"}),
	row: func(v ledger.ReconciliationRow) []string {
		restated := make([]string, len(v.Restated))
		for i, p := range v.Restated {
			restated[i] = i64(p)
		}
		zid := ""
		if v.ZEventID != nil {
			zid = *v.ZEventID
		}
		return join([]string{cell(v.Tenant), cell(v.Store), cell(v.Terminal), v.BusinessDay, v.Currency, v.Status,
			cell(strings.Join(v.Reason, "; ")), i64(v.Ledger.SalesCount)}, money(v.Ledger.SalesTotal),
			[]string{i64(v.Ledger.ReturnsCount)}, money(v.Ledger.ReturnsTotal), []string{i64(v.Ledger.VoidsCount)},
			money(v.Ledger.VoidsTotal), money(v.Ledger.Net),
			[]string{i64(v.ZCount), optInt(v.ZPos), cell(zid), strings.Join(restated, " ")})
	},
}

var anomalyCSV = csvForm[ledger.AnomalyRow]{
	header: []string{"tenant", "pos", "ord", "kind", "event_id", "type", "store", "other_pos", "other_event_id", "detail"},
	row: func(v ledger.AnomalyRow) []string {
		other := ""
		if v.OtherEventID != nil {
			other = *v.OtherEventID
		}
		return []string{cell(v.Tenant), i64(v.Pos), strconv.Itoa(v.Ord), v.Kind, cell(v.EventID), cell(v.Type), cell(v.Store),
			optInt(v.OtherPos), cell(other), cell(v.Detail)}
	},
}

var completenessCSV = csvForm[ledger.CompletenessRow]{
	header: []string{"tenant", "store", "edge", "epoch", "committed_seq", "edge_head_seq", "edge_head_at", "pending",
		"last_commit", "last_contact", "ended_at"},
	row: func(v ledger.CompletenessRow) []string {
		return []string{cell(v.Tenant), cell(v.Store), cell(v.Edge), v.Epoch.String(), strconv.FormatUint(v.Committed, 10),
			strconv.FormatUint(v.EdgeHead, 10), optTime(v.EdgeHeadAt), strconv.FormatUint(v.Pending, 10),
			optTime(v.LastCommit), v.LastContact.Format(time.RFC3339Nano), optTime(v.EndedAt)}
	},
}
