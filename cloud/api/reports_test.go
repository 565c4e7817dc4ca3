package api_test

import (
	"context"
	"encoding/base64"
	"encoding/csv"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/cloud/projection/pgview"
	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// shop is a store s1 (New York, USD) of tenant t1 whose edge committed,
// through the real commit and its projection (pgview):
//
//	2026-02-10 sale A: 2 × sku-1 at 5.00, tax 0.80, cash 11.00 with 0.20 change
//	2026-02-10 sale B: 1 × sku-2 at 2.50, 0.50 off, tax 0.20, card 2.20
//	2026-02-10 the Z report of A and B
//	2026-02-11 sale C: 1 × sku-1 at 5.00, tax 0.40, cash 5.40
type shop struct {
	*env
	Token  string // a reader of t1
	Last   int64  // the ledger position of the last record
	Stream *testStream
}

const (
	day1 = "2026-02-10"
	day2 = "2026-02-11"
)

func mustShop(t *testing.T) *shop {
	t.Helper()
	ctx := context.Background()
	e := MustEnv(t, envOptions{Projections: []ledger.Projection{pgview.New(nil)}})
	if _, err := e.Ledger.AddTenant(ctx, "t1", "Tenant one"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Ledger.AddStore(ctx, ledger.Store{Tenant: "t1", ID: "s1", Name: "Shop one", TimeZone: "America/New_York", Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
	s := e.MustStream(t, "edge-1")
	if err := e.Ledger.SetEdgeTenant(ctx, "edge-1", "t1", "s1"); err != nil {
		t.Fatal(err)
	}
	saleA := projectiontest.Txn(day1, "A", "USD", false, 0, "cash", 20, projectiontest.Line("sku-1", 2000, 500, 0, 80))
	saleB := projectiontest.Txn(day1, "B", "USD", false, 0, "card", 0, projectiontest.Line("sku-2", 1000, 250, 50, 20))
	saleC := projectiontest.Txn(day2, "C", "USD", false, 0, "cash", 0, projectiontest.Line("sku-1", 1000, 500, 0, 40))
	rec := func(typ string, body any) projection.Record {
		return projection.Record{Record: protocol.Record{Type: typ, Body: projectiontest.MustBody(t, body)}}
	}
	z := projectiontest.ZOf(t, pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: day1, Currency: "USD"},
		rec(pos.TypeSaleCompleted, saleA), rec(pos.TypeSaleCompleted, saleB))
	at := time.Date(2026, 2, 10, 15, 0, 0, 0, time.UTC)
	for i, ev := range []struct {
		typ  string
		body any
		at   time.Time
	}{
		{pos.TypeSaleCompleted, saleA, at},
		{pos.TypeSaleCompleted, saleB, at.Add(time.Hour)},
		{pos.TypeTillClosed, z, at.Add(8 * time.Hour)},
		{pos.TypeSaleCompleted, saleC, at.Add(24 * time.Hour)}, // 10:00 in New York on day 2
	} {
		s.AddEvent("till-1", protocol.Event{ID: fmt.Sprintf("ev-%d", i), Type: ev.typ, TS: ev.at, Body: projectiontest.MustBody(t, ev.body)})
	}
	e.MustCommit(t, s, 1, 2)
	e.MustCommit(t, s, 3, 4)
	tok, err := e.Ledger.CreateAPIToken(ctx, "t1-reader", "reader", "t1")
	if err != nil {
		t.Fatal(err)
	}
	sh := &shop{env: e, Token: tok, Stream: s}
	if err := e.Conn.QueryRow(ctx, `SELECT max(pos) FROM ledger`).Scan(&sh.Last); err != nil {
		t.Fatal(err)
	}
	return sh
}

type money struct {
	Minor    int64  `json:"minor"`
	Currency string `json:"currency"`
	Decimal  string `json:"decimal"`
}

type storeComplete struct {
	Store           string `json:"store"`
	Requested       string `json:"requested"`
	CompleteThrough string `json:"complete_through"`
	Complete        bool   `json:"complete"`
}

type salesPage struct {
	AsOf int64 `json:"as_of"`
	Rows []struct {
		Tenant         string `json:"tenant"`
		Store          string `json:"store"`
		BusinessDay    string `json:"business_day"`
		Currency       string `json:"currency"`
		Transactions   int64  `json:"transactions"`
		Items          int64  `json:"items"`
		GrossSales     money  `json:"gross_sales"`
		Discounts      money  `json:"discounts"`
		Tax            money  `json:"tax"`
		NetSales       money  `json:"net_sales"`
		TotalCollected money  `json:"total_collected"`
	} `json:"rows"`
	Next   string          `json:"next"`
	Stores []storeComplete `json:"stores"`
}

// The sales summary of the shop, as the commit folded it, through the
// API: the figures, money as minor units with a decimal string, as_of,
// completeness, filters and keyset pagination.
func TestSalesReport(t *testing.T) {
	sh := mustShop(t)
	var p salesPage
	sh.MustDo(t, 200, "GET", "/v1/reports/sales", sh.Token, nil, &p)
	if p.AsOf != sh.Last {
		t.Errorf("as_of %d, want %d (the last committed position)", p.AsOf, sh.Last)
	}
	if len(p.Rows) != 2 || p.Next != "" {
		t.Fatalf("rows %+v next %q", p.Rows, p.Next)
	}
	d1 := p.Rows[0]
	want := money{Minor: 1300, Currency: "USD", Decimal: "13.00"}
	if d1.Transactions != 2 || d1.Items != 3000 || d1.GrossSales.Minor != 1250 || d1.Discounts.Minor != 50 ||
		d1.Tax.Minor != 100 || d1.NetSales.Minor != 1200 || d1.TotalCollected != want {
		t.Errorf("day 1: %+v", d1)
	}
	if d2 := p.Rows[1]; d2.Transactions != 1 || d2.TotalCollected.Decimal != "5.40" || d2.NetSales.Decimal != "5.00" {
		t.Errorf("day 2: %+v", d2)
	}
	// The edge's last committed record is at 10:00 in New York on day 2:
	// day 1 is complete, day 2 is not.
	if len(p.Stores) != 1 || p.Stores[0] != (storeComplete{Store: "s1", Requested: day2, CompleteThrough: day1}) {
		t.Errorf("stores %+v", p.Stores)
	}
	sh.MustDo(t, 200, "GET", "/v1/reports/sales?to="+day1, sh.Token, nil, &p)
	if len(p.Rows) != 1 || p.Rows[0].Transactions != 2 || !p.Stores[0].Complete {
		t.Errorf("to day 1: %+v", p)
	}
	sh.MustDo(t, 200, "GET", "/v1/reports/sales?currency=EUR", sh.Token, nil, &p)
	if len(p.Rows) != 0 {
		t.Errorf("currency EUR: %+v", p.Rows)
	}
	// Keyset pagination, one row a page.
	var days []string
	next := ""
	for range 3 {
		var pg salesPage
		sh.MustDo(t, 200, "GET", "/v1/reports/sales?limit=1&after="+url.QueryEscape(next), sh.Token, nil, &pg)
		for _, r := range pg.Rows {
			days = append(days, r.BusinessDay)
		}
		if next = pg.Next; next == "" {
			break
		}
	}
	if strings.Join(days, ",") != day1+","+day2 {
		t.Errorf("pages: %v", days)
	}
	wantError(t, sh.Do(t, "GET", "/v1/reports/sales?after=bogus", sh.Token, nil), 400, "cursor")
	// A cursor of the right shape with values of the wrong type (a forged
	// one): 400, not a database error.
	for _, vals := range []string{`["t1","s1","not a day","USD"]`, `["t1","s1\u0000","2026-02-10","USD"]`} {
		forged := base64.RawURLEncoding.EncodeToString([]byte(vals))
		wantError(t, sh.Do(t, "GET", "/v1/reports/sales?after="+forged, sh.Token, nil), 400, "cursor")
	}
	wantError(t, sh.Do(t, "GET", "/v1/reports/anomalies?after="+base64.RawURLEncoding.EncodeToString([]byte(`["99999999999999999999","1"]`)),
		sh.Token, nil), 400, "cursor")
	wantError(t, sh.Do(t, "GET", "/v1/reports/sales?from=2026-02-11&to=2026-02-10", sh.Token, nil), 400, "before from")
	wantError(t, sh.Do(t, "GET", "/v1/reports/sales?from=yesterday", sh.Token, nil), 400, "YYYY-MM-DD")
	wantError(t, sh.Do(t, "GET", "/v1/reports/sales?currency=usd", sh.Token, nil), 400, "ISO 4217")
	wantError(t, sh.Do(t, "GET", "/v1/reports/sales?sku=x", sh.Token, nil), 400, "parameter sku is not known here")
	wantError(t, sh.Do(t, "GET", "/v1/reports/reconciliation?status=fine", sh.Token, nil), 400, "status must be one of")
	wantError(t, sh.Do(t, "GET", "/v1/reports/sales/by-sku?sku=a%00b", sh.Token, nil), 400, "NUL")
	wantError(t, sh.Do(t, "GET", "/v1/reports/reconciliation?terminal=%ff", sh.Token, nil), 400, "UTF-8")
}

// The other reports of the shop: by SKU, tenders, reconciliation,
// inventory, by hour, completeness.
func TestReports(t *testing.T) {
	sh := mustShop(t)
	var sku struct {
		Rows []struct {
			BusinessDay string `json:"business_day"`
			SKU         string `json:"sku"`
			QtySold     int64  `json:"qty_sold"`
			Discounts   money  `json:"discounts"`
			Net         money  `json:"net"`
		} `json:"rows"`
	}
	sh.MustDo(t, 200, "GET", "/v1/reports/sales/by-sku?from="+day1+"&to="+day1+"&sku=sku-2", sh.Token, nil, &sku)
	if len(sku.Rows) != 1 || sku.Rows[0].QtySold != 1000 || sku.Rows[0].Discounts.Minor != 50 || sku.Rows[0].Net.Decimal != "2.00" {
		t.Errorf("by sku: %+v", sku.Rows)
	}
	var tenders struct {
		Rows []struct {
			Type   string `json:"type"`
			Count  int64  `json:"count"`
			Amount money  `json:"amount"`
			Change money  `json:"change"`
			Net    money  `json:"net"`
		} `json:"rows"`
	}
	sh.MustDo(t, 200, "GET", "/v1/reports/tenders?to="+day1, sh.Token, nil, &tenders)
	got := map[string]string{}
	for _, r := range tenders.Rows {
		got[r.Type] = fmt.Sprintf("%d %s %s %s", r.Count, r.Amount.Decimal, r.Change.Decimal, r.Net.Decimal)
	}
	if got["cash"] != "1 11.00 0.20 10.80" || got["card"] != "1 2.20 0.00 2.20" {
		t.Errorf("tenders: %v", got)
	}
	var recon struct {
		Rows []struct {
			BusinessDay string   `json:"business_day"`
			Terminal    string   `json:"terminal"`
			Status      string   `json:"status"`
			Reason      []string `json:"reason"`
			ZCount      int64    `json:"z_count"`
		} `json:"rows"`
	}
	sh.MustDo(t, 200, "GET", "/v1/reports/reconciliation", sh.Token, nil, &recon)
	status := map[string]string{}
	for _, r := range recon.Rows {
		status[r.BusinessDay] = r.Status
	}
	if status[day1] != "match" || status[day2] != "open" {
		t.Errorf("reconciliation: %+v", recon.Rows)
	}
	sh.MustDo(t, 200, "GET", "/v1/reports/reconciliation?status=match&terminal=T1", sh.Token, nil, &recon)
	if len(recon.Rows) != 1 || recon.Rows[0].BusinessDay != day1 || recon.Rows[0].ZCount != 1 {
		t.Errorf("reconciliation status=match: %+v", recon.Rows)
	}
	var inv struct {
		Rows []struct {
			SKU    string `json:"sku"`
			OnHand int64  `json:"on_hand"`
		} `json:"rows"`
		Stores []storeComplete `json:"stores"`
	}
	sh.MustDo(t, 200, "GET", "/v1/reports/inventory", sh.Token, nil, &inv)
	if len(inv.Rows) != 2 || inv.Rows[0].SKU != "sku-1" || inv.Rows[0].OnHand != -3000 || inv.Rows[1].OnHand != -1000 {
		t.Errorf("inventory: %+v", inv.Rows)
	}
	var hours struct {
		Rows []struct {
			BusinessDay string `json:"business_day"`
			Hour        int    `json:"hour"`
			Count       int64  `json:"count"`
		} `json:"rows"`
	}
	sh.MustDo(t, 200, "GET", "/v1/reports/sales/by-hour?to="+day1, sh.Token, nil, &hours)
	if len(hours.Rows) != 2 || hours.Rows[0].Hour != 10 || hours.Rows[1].Hour != 11 { // 15:00 and 16:00 UTC in New York
		t.Errorf("by hour: %+v", hours.Rows)
	}
	var comp struct {
		Rows []struct {
			Edge      string `json:"edge"`
			Committed uint64 `json:"committed_seq"`
			Pending   uint64 `json:"pending"`
		} `json:"rows"`
		Stores []storeComplete `json:"stores"`
	}
	sh.MustDo(t, 200, "GET", "/v1/reports/completeness?to="+day1, sh.Token, nil, &comp)
	if len(comp.Rows) != 1 || comp.Rows[0].Edge != "edge-1" || comp.Rows[0].Committed != 4 || comp.Rows[0].Pending != 0 ||
		len(comp.Stores) != 1 || !comp.Stores[0].Complete {
		t.Errorf("completeness: %+v", comp)
	}
}

// Every report answers CSV for Accept: text/csv: a header row, one row a
// report row, money as minor units and decimal, as_of in a header.
func TestReportsCSV(t *testing.T) {
	sh := mustShop(t)
	r := sh.get(t, "/v1/reports/sales", sh.Token, "text/csv")
	if r.Status != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("status %d, %s: %s", r.Status, r.Header.Get("Content-Type"), r.Body)
	}
	if r.Header.Get("X-Outpost-As-Of") != fmt.Sprint(sh.Last) || r.Header.Get("X-Outpost-Complete") != "s1="+day1+";incomplete" {
		t.Errorf("headers %v", r.Header)
	}
	recs, err := csv.NewReader(strings.NewReader(string(r.Body))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("csv: %q", recs)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	if recs[1][col["business_day"]] != day1 || recs[1][col["total_collected_minor"]] != "1300" || recs[1][col["total_collected"]] != "13.00" {
		t.Errorf("csv row %q (header %q)", recs[1], recs[0])
	}
	for _, path := range []string{"/v1/reports/sales/by-sku", "/v1/reports/sales/by-hour", "/v1/reports/tenders", "/v1/reports/inventory",
		"/v1/reports/telemetry", "/v1/reports/reconciliation", "/v1/reports/anomalies", "/v1/reports/completeness"} {
		r := sh.get(t, path, sh.Token, "text/csv")
		recs, err := csv.NewReader(strings.NewReader(string(r.Body))).ReadAll()
		if r.Status != 200 || err != nil || len(recs) < 1 || recs[0][0] != "tenant" {
			t.Errorf("%s: status %d, %v: %q", path, r.Status, err, r.Body)
		}
	}
}
