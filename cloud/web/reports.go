package web

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
)

// The report pages read the API's report endpoints (GET /v1/reports/...),
// which are the ledger's report functions over the projections, scoped to
// the token's tenant. Their CSV downloads are the API's own CSV of the
// same filter (Accept: text/csv).

// OfflineAfter is how long without contact before the Today page calls a
// store's edge offline.
const OfflineAfter = 5 * time.Minute

func (s *server) stores(r *http.Request, sess *session) ([]ledger.Store, error) {
	var b struct {
		Stores []ledger.Store `json:"stores"`
	}
	if err := s.getJSON(r, sess, "/v1/stores", nil, &b); err != nil {
		return nil, err
	}
	sort.Slice(b.Stores, func(i, j int) bool { return b.Stores[i].ID < b.Stores[j].ID })
	return b.Stores, nil
}

// report reads every page of a report (up to MaxCSVRows rows) for q.
func report[T any](s *server, r *http.Request, sess *session, path string, q url.Values) (ledger.Report[T], error) {
	var all ledger.Report[T]
	q = cloneValues(q)
	q.Set("limit", strconv.Itoa(ledger.MaxLimit))
	for {
		var p ledger.Report[T]
		if err := s.getJSON(r, sess, path, q, &p); err != nil {
			return all, err
		}
		if all.Rows == nil {
			all = p
		} else {
			all.Rows = append(all.Rows, p.Rows...)
			all.AsOf = min(all.AsOf, p.AsOf)
		}
		if p.Next == "" || len(all.Rows) >= MaxCSVRows {
			return all, nil
		}
		q.Set("after", p.Next)
	}
}

func cloneValues(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// zone loads a store's time zone; a zone the system does not know shows
// times in UTC rather than failing the page.
func zone(name string) *time.Location {
	if loc, err := time.LoadLocation(name); err == nil {
		return loc
	}
	return time.UTC
}

// todayStore is one store's line on the Today page.
type todayStore struct {
	Store       ledger.Store
	Day         string
	Sales       []ledger.SalesRow // one per currency
	Tenders     []ledger.TenderRow
	Complete    ledger.StoreCompleteness
	Pending     uint64
	LastContact time.Time
	Offline     bool
	Edges       int
	Link        string
}

type todayData struct {
	Stores []todayStore
	AsOf   int64
	Chart  chart
	CSV    string
}

// today shows, per store, the current business day (the date now in the
// store's time zone): sales, net and tenders per currency, and how
// complete the day's data is.
func (s *server) today(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	d, err := s.todayData(r, sess)
	if err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "today", sess, "Today", d)
	return nil
}

func (s *server) todayData(r *http.Request, sess *session) (todayData, error) {
	var d todayData
	stores, err := s.stores(r, sess)
	if err != nil {
		return d, err
	}
	if len(stores) == 0 {
		return d, nil
	}
	now := s.opts.Now()
	from, to := "", ""
	for _, st := range stores {
		day := now.In(zone(st.TimeZone)).Format(ledger.DayLayout)
		if from == "" || day < from {
			from = day
		}
		to = max(to, day)
		d.Stores = append(d.Stores, todayStore{Store: st, Day: day, Link: "/stores/" + url.PathEscape(st.ID) + "/" + day})
	}
	q := url.Values{"from": {from}, "to": {to}}
	sales, err := report[ledger.SalesRow](s, r, sess, "/v1/reports/sales", q)
	if err != nil {
		return d, err
	}
	tenders, err := report[ledger.TenderRow](s, r, sess, "/v1/reports/tenders", q)
	if err != nil {
		return d, err
	}
	comp, err := report[ledger.CompletenessRow](s, r, sess, "/v1/reports/completeness", url.Values{"to": {to}})
	if err != nil {
		return d, err
	}
	d.AsOf = sales.AsOf
	d.CSV = "/reports/sales.csv?" + q.Encode()
	var bars []chartBar
	for i := range d.Stores {
		ts := &d.Stores[i]
		for _, row := range sales.Rows {
			if row.Store == ts.Store.ID && row.BusinessDay == ts.Day {
				ts.Sales = append(ts.Sales, row)
				bars = append(bars, chartBar{Label: ts.Store.ID + " " + row.Currency, Value: row.NetSales.Minor, Text: row.NetSales.Decimal + " " + row.Currency})
			}
		}
		for _, row := range tenders.Rows {
			if row.Store == ts.Store.ID && row.BusinessDay == ts.Day {
				ts.Tenders = append(ts.Tenders, row)
			}
		}
		for _, c := range sales.Stores {
			if c.Store == ts.Store.ID {
				ts.Complete = c
			}
		}
		for _, c := range comp.Rows {
			if c.Store != ts.Store.ID || c.Ended {
				continue
			}
			ts.Edges++
			ts.Pending += c.Pending
			if c.LastContact.After(ts.LastContact) {
				ts.LastContact = c.LastContact
			}
		}
		ts.Offline = ts.Edges > 0 && now.Sub(ts.LastContact) > OfflineAfter
	}
	d.Chart = hbars(bars, "net sales")
	return d, nil
}

// live is the Today page's live tail: GET /v1/events/stream (SSE) as the
// session's token, streamed through as it comes. The page's script
// reloads its figures when an event arrives; without scripts the page is
// complete as served.
func (s *server) live(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r, "after"); err != nil {
		return err
	}
	req := r.Clone(r.Context())
	req.URL = &url.URL{Path: "/v1/events/stream"}
	if a := r.URL.Query().Get("after"); a != "" {
		req.URL.RawQuery = url.Values{"after": {a}}.Encode()
	}
	req.RequestURI = ""
	req.Header = http.Header{}
	req.Header.Set("Authorization", "Bearer "+sess.token)
	req.Header.Set("Accept", "text/event-stream")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		req.Header.Set("Last-Event-ID", id)
	}
	s.opts.API.ServeHTTP(w, req)
	return nil
}

type storeDayData struct {
	Store          ledger.Store
	Day, Prev, Nxt string
	Sales          []ledger.SalesRow
	Days           chart  // net sales of the DayChartDays days up to Day
	DaysFrom       string // the first of them
	DaysQuery      string // store=..&from=DaysFrom&to=Day, for their CSV
	Hours          chart
	SKUs           []ledger.SKURow
	Tenders        []ledger.TenderRow
	Tills          []ledger.ReconciliationRow
	Complete       ledger.StoreCompleteness
	Edges          []string
	AsOf           int64
	Query          string // store=..&from=..&to=.. for the CSV links
	Events         string // the events list of this store's day (its POS transactions)
}

// DayChartDays is how many business days, up to the one shown, the Store
// and day page draws the net sales of.
const DayChartDays = 14

// storeDay shows one store's business day: the sales summary, net sales
// by day over the DayChartDays days up to it and by hour (SVGs of bars), the top SKUs, tenders, and each till's Z
// reconciliation, with links to the ledger events behind them.
func (s *server) storeDay(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r); err != nil {
		return err
	}
	id, day := r.PathValue("store"), r.PathValue("day")
	t, err := time.Parse(ledger.DayLayout, day)
	if err != nil {
		return badRequest("The day in the path must be a business day as YYYY-MM-DD, got %q.", day)
	}
	stores, err := s.stores(r, sess)
	if err != nil {
		return err
	}
	d := storeDayData{Day: day, Prev: t.AddDate(0, 0, -1).Format(ledger.DayLayout), Nxt: t.AddDate(0, 0, 1).Format(ledger.DayLayout)}
	found := false
	for _, st := range stores {
		if st.ID == id {
			d.Store, found = st, true
		}
	}
	if !found {
		return notFound("No store %q (or not one this token may see).", id)
	}
	q := url.Values{"store": {id}, "from": {day}, "to": {day}}
	d.Query = q.Encode()
	d.Events = "/events?" + url.Values{"store": {id}, "business_day": {day}}.Encode()
	// One sales report for the chart's days serves the day's summary too:
	// its completeness is of its last day (to), this one.
	d.DaysFrom = t.AddDate(0, 0, -(DayChartDays - 1)).Format(ledger.DayLayout)
	dq := url.Values{"store": {id}, "from": {d.DaysFrom}, "to": {day}}
	d.DaysQuery = dq.Encode()
	sales, err := report[ledger.SalesRow](s, r, sess, "/v1/reports/sales", dq)
	if err != nil {
		return err
	}
	for _, row := range sales.Rows {
		if row.BusinessDay == day {
			d.Sales = append(d.Sales, row)
		}
	}
	d.Days = dayBars(d.Store, d.DaysFrom, day, sales.Rows)
	hours, err := report[ledger.HourRow](s, r, sess, "/v1/reports/sales/by-hour", q)
	if err != nil {
		return err
	}
	skus, err := report[ledger.SKURow](s, r, sess, "/v1/reports/sales/by-sku", q)
	if err != nil {
		return err
	}
	tenders, err := report[ledger.TenderRow](s, r, sess, "/v1/reports/tenders", q)
	if err != nil {
		return err
	}
	tills, err := report[ledger.ReconciliationRow](s, r, sess, "/v1/reports/reconciliation", q)
	if err != nil {
		return err
	}
	comp, err := report[ledger.CompletenessRow](s, r, sess, "/v1/reports/completeness", url.Values{"store": {id}, "to": {day}})
	if err != nil {
		return err
	}
	d.Tenders, d.Tills, d.AsOf = tenders.Rows, tills.Rows, sales.AsOf
	for _, c := range sales.Stores {
		if c.Store == id {
			d.Complete = c
		}
	}
	for _, c := range comp.Rows {
		if !strings.Contains(strings.Join(d.Edges, " "), c.Edge) {
			d.Edges = append(d.Edges, c.Edge)
		}
	}
	sort.Slice(skus.Rows, func(i, j int) bool { return skus.Rows[i].Net.Minor > skus.Rows[j].Net.Minor })
	d.SKUs = skus.Rows[:min(len(skus.Rows), 10)]
	d.Hours = hourBars(hours.Rows)
	s.render(w, r, http.StatusOK, "store_day", sess, fmt.Sprintf("%s, %s", d.Store.Name, day), d)
	return nil
}

// dayBars draws a store's net sales per business day from first to last
// (inclusive), one bar per day per currency, oldest first, each linking
// to that day's page. A day without a row (no sales) is an empty bar that
// says so. The currencies are those the rows have, or the store's own
// when none has.
func dayBars(st ledger.Store, first, last string, rows []ledger.SalesRow) chart {
	byKey := map[[2]string]ledger.SalesRow{}
	var curs []string
	for _, row := range rows {
		if row.Store != st.ID {
			continue
		}
		byKey[[2]string{row.BusinessDay, row.Currency}] = row
		if !slices.Contains(curs, row.Currency) {
			curs = append(curs, row.Currency)
		}
	}
	if len(curs) == 0 {
		curs = []string{st.Currency}
	}
	sort.Strings(curs)
	start, err1 := time.Parse(ledger.DayLayout, first)
	end, err2 := time.Parse(ledger.DayLayout, last)
	if err1 != nil || err2 != nil {
		return chart{Empty: true}
	}
	var bars []chartBar
	for _, cur := range curs {
		for t := start; !t.After(end); t = t.AddDate(0, 0, 1) {
			day := t.Format(ledger.DayLayout)
			b := chartBar{Label: t.Format("Mon ") + day + " " + cur, Link: "/stores/" + url.PathEscape(st.ID) + "/" + day,
				Current: day == last, Text: "no sales"}
			if row, ok := byKey[[2]string{day, cur}]; ok {
				b.Value = row.NetSales.Minor
				b.Text = fmt.Sprintf("%s %s, %s", row.NetSales.Decimal, cur, salesCount(row.Transactions))
			}
			bars = append(bars, b)
		}
	}
	return hbars(bars, "net sales by business day")
}

func salesCount(n int64) string {
	if n == 1 {
		return "1 sale"
	}
	return fmt.Sprintf("%d sales", n)
}

// hourBars draws the day's net sales per local hour, one bar per hour
// that had sales, per currency.
func hourBars(rows []ledger.HourRow) chart {
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Currency != rows[j].Currency {
			return rows[i].Currency < rows[j].Currency
		}
		return rows[i].Hour < rows[j].Hour
	})
	var bars []chartBar
	for _, h := range rows {
		bars = append(bars, chartBar{Label: fmt.Sprintf("%02d:00 %s", h.Hour, h.Currency), Value: h.Net.Minor,
			Text: fmt.Sprintf("%s %s, %d sales", h.Net.Decimal, h.Currency, h.Count)})
	}
	return hbars(bars, "net sales")
}

type reconData struct {
	Store, Status, From, To string
	Rows                    []ledger.ReconciliationRow
	Page, Pages             int // this page of Rows (1-based) and how many
	PrevPage, NextPage      string
	Restatements            []ledger.RestatementRow // the restatement log of the filter's store and days
	Duplicates              []ledger.AnomalyRow
	Statuses                []string
	Query                   string
	RestatementsQuery       string // the restatements' filter, for their CSV
	AsOf                    int64
}

// reconciliation lists every till day that is not "match", newest day
// first, with filters; the restatement log (the events that changed a day
// after it matched); and the duplicate transactions the projections kept
// out of the figures.
func (s *server) reconciliation(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r, "store", "status", "from", "to", "page"); err != nil {
		return err
	}
	d := reconData{Statuses: []string{"open", "pending", "mismatch", "restated", "match"}}
	q := url.Values{}
	for _, k := range []string{"store", "status", "from", "to"} {
		if v := r.URL.Query().Get(k); v != "" {
			q.Set(k, v)
		}
	}
	d.Store, d.Status, d.From, d.To, d.Query = q.Get("store"), q.Get("status"), q.Get("from"), q.Get("to"), q.Encode()
	rows, err := report[ledger.ReconciliationRow](s, r, sess, "/v1/reports/reconciliation", q)
	if err != nil {
		return err
	}
	d.AsOf = rows.AsOf
	for _, row := range rows.Rows {
		if row.Status != "match" || d.Status == "match" {
			d.Rows = append(d.Rows, row)
		}
	}
	newest := func(rs []ledger.ReconciliationRow) {
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].BusinessDay > rs[j].BusinessDay })
	}
	newest(d.Rows)
	// Newest first is not the API's order (its key's), so the page reads
	// them all (up to MaxCSVRows) and pages here.
	d.Page, d.Pages = 1, max(1, (len(d.Rows)+s.opts.PageSize-1)/s.opts.PageSize)
	if v := r.URL.Query().Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > d.Pages {
			return badRequest("Parameter page must be a page number from 1 to %d, got %q.", d.Pages, v)
		}
		d.Page = n
	}
	link := func(n int) string {
		pq := cloneValues(q)
		pq.Set("page", strconv.Itoa(n))
		return "/reconciliation?" + pq.Encode()
	}
	if d.Page > 1 {
		d.PrevPage = link(d.Page - 1)
	}
	if d.Page < d.Pages {
		d.NextPage = link(d.Page + 1)
	}
	d.Rows = d.Rows[(d.Page-1)*s.opts.PageSize : min(len(d.Rows), d.Page*s.opts.PageSize)]
	rq := url.Values{}
	for _, k := range []string{"store", "from", "to"} {
		if v := q.Get(k); v != "" {
			rq.Set(k, v)
		}
	}
	rs, err := report[ledger.RestatementRow](s, r, sess, "/v1/reports/restatements", rq)
	if err != nil {
		return err
	}
	d.Restatements = rs.Rows
	sort.SliceStable(d.Restatements, func(i, j int) bool { return d.Restatements[i].Pos > d.Restatements[j].Pos })
	d.RestatementsQuery = rq.Encode()
	aq := url.Values{"status": {"duplicate_transaction"}}
	if d.Store != "" {
		aq.Set("store", d.Store)
	}
	dups, err := report[ledger.AnomalyRow](s, r, sess, "/v1/reports/anomalies", aq)
	if err != nil {
		return err
	}
	d.Duplicates = dups.Rows
	s.render(w, r, http.StatusOK, "reconciliation", sess, "Reconciliation", d)
	return nil
}

type inventoryData struct {
	Store, SKU string
	Stores     []ledger.Store
	Rows       []ledger.InventoryRow
	Query      string // the filter, for the CSV and the pager
	After      string
	Next       string // the next page's cursor (the API's), "" on the last
	NextLink   string
	AsOf       int64
}

// inventory shows stock on hand per store and SKU, a page at a time with
// the API's cursor.
func (s *server) inventory(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r, "store", "sku", "after"); err != nil {
		return err
	}
	q := url.Values{}
	for _, k := range []string{"store", "sku"} {
		if v := r.URL.Query().Get(k); v != "" {
			q.Set(k, v)
		}
	}
	stores, err := s.stores(r, sess)
	if err != nil {
		return err
	}
	pq := cloneValues(q)
	pq.Set("limit", strconv.Itoa(s.opts.PageSize))
	after := r.URL.Query().Get("after")
	if after != "" {
		pq.Set("after", after)
	}
	var inv ledger.Report[ledger.InventoryRow]
	if err := s.getJSON(r, sess, "/v1/reports/inventory", pq, &inv); err != nil {
		return err
	}
	d := inventoryData{Store: q.Get("store"), SKU: q.Get("sku"), Stores: stores, Rows: inv.Rows, Query: q.Encode(),
		After: after, Next: inv.Next, AsOf: inv.AsOf}
	if inv.Next != "" {
		nq := cloneValues(q)
		nq.Set("after", inv.Next)
		d.NextLink = "/inventory?" + nq.Encode()
	}
	s.render(w, r, http.StatusOK, "inventory", sess, "Inventory", d)
	return nil
}

type movementsData struct {
	Store, SKU string
	Rows       []ledger.MovementRow
	OnHand     *int64 // the SKU's on hand now, from the inventory report
	Query      string // the filter, for the CSV and the pager
	After      string
	NextLink   string
	AsOf       int64
}

// movements lists one SKU's stock movements in one store, in ledger
// order, a page at a time with the API's cursor: what explains its on
// hand.
func (s *server) movements(w http.ResponseWriter, r *http.Request, sess *session) error {
	if err := onlyParams(r, "store", "sku", "after"); err != nil {
		return err
	}
	q := url.Values{}
	for _, k := range []string{"store", "sku"} {
		v := r.URL.Query().Get(k)
		if v == "" {
			return badRequest("Parameter %s is missing: this page lists one SKU's movements in one store; follow a SKU's link on the Inventory page.", k)
		}
		q.Set(k, v)
	}
	pq := cloneValues(q)
	pq.Set("limit", strconv.Itoa(s.opts.PageSize))
	after := r.URL.Query().Get("after")
	if after != "" {
		pq.Set("after", after)
	}
	var mv ledger.Report[ledger.MovementRow]
	if err := s.getJSON(r, sess, "/v1/reports/inventory/movements", pq, &mv); err != nil {
		return err
	}
	var inv ledger.Report[ledger.InventoryRow]
	if err := s.getJSON(r, sess, "/v1/reports/inventory", q, &inv); err != nil {
		return err
	}
	d := movementsData{Store: q.Get("store"), SKU: q.Get("sku"), Rows: mv.Rows, Query: q.Encode(),
		After: after, AsOf: mv.AsOf}
	if len(inv.Rows) == 1 {
		d.OnHand = &inv.Rows[0].OnHand
	}
	if mv.Next != "" {
		nq := cloneValues(q)
		nq.Set("after", mv.Next)
		d.NextLink = "/inventory/movements?" + nq.Encode()
	}
	s.render(w, r, http.StatusOK, "movements", sess, "Movements of "+d.SKU, d)
	return nil
}

// reportCSV downloads a report as the API writes it in CSV, for the
// filter given: the same rows as its JSON.
func (s *server) reportCSV(w http.ResponseWriter, r *http.Request, sess *session) error {
	name := r.PathValue("name")
	path, ok := map[string]string{
		"sales": "/v1/reports/sales", "by-hour": "/v1/reports/sales/by-hour", "by-sku": "/v1/reports/sales/by-sku",
		"tenders": "/v1/reports/tenders", "reconciliation": "/v1/reports/reconciliation", "inventory": "/v1/reports/inventory",
		"movements": "/v1/reports/inventory/movements", "restatements": "/v1/reports/restatements",
		"anomalies": "/v1/reports/anomalies", "completeness": "/v1/reports/completeness",
	}[strings.TrimSuffix(name, ".csv")]
	if !ok || !strings.HasSuffix(name, ".csv") {
		return notFound("No report %q to download.", name)
	}
	q := cloneValues(r.URL.Query())
	if q.Get("limit") == "" {
		q.Set("limit", strconv.Itoa(ledger.MaxLimit))
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, path+"?"+q.Encode(), http.NoBody)
	if err != nil {
		return err
	}
	req.RemoteAddr, req.Host = r.RemoteAddr, r.Host
	req.Header.Set("Authorization", "Bearer "+sess.token)
	req.Header.Set("Accept", "text/csv")
	resp := &apiResponse{header: http.Header{}}
	s.opts.API.ServeHTTP(resp, req)
	if resp.status >= 300 {
		_, err := s.call(r, sess, http.MethodGet, path, q, nil) // the same request in JSON, for its error message
		if err != nil {
			return err
		}
		return fmt.Errorf("report %s: status %d", path, resp.status)
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	h.Set("Cache-Control", "no-store")
	for _, k := range []string{"X-Outpost-As-Of", "X-Outpost-Next", "X-Outpost-Complete"} {
		if v := resp.header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	_, err = w.Write(resp.body.Bytes())
	return err
}
