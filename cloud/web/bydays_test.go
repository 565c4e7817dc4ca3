package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/cloud/web"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// dayBar is one bar of the Store-and-day page's by-day chart as drawn.
type dayBar struct {
	Link, Label, Text string
	Width             int
	Current           bool
}

var dayBarRE = regexp.MustCompile(`<a href="([^"]*)"><text [^>]*class="label">([^<]*)</text>` +
	`<rect [^>]*width="(\d+)" [^>]*class="(bar(?: current)?)"><title>[^<]*: ([^<]*)</title></rect>`)

func dayBars(t *testing.T, body string) []dayBar {
	t.Helper()
	i := strings.Index(body, `<div id="days">`)
	if i < 0 {
		t.Fatalf("no by-day chart:\n%s", body)
	}
	svg := body[i:]
	svg = svg[:strings.Index(svg, "</svg>")]
	var out []dayBar
	for _, m := range dayBarRE.FindAllStringSubmatch(svg, -1) {
		var w int
		fmt.Sscan(m[3], &w)
		out = append(out, dayBar{Link: m[1], Label: m[2], Width: w, Current: m[4] == "bar current", Text: m[5]})
	}
	return out
}

// TestStoreDayByDay: the Store-and-day page draws the store's net sales
// of the 14 business days up to the day shown, oldest first, one bar a
// day (an empty one, saying so, for a day without sales), each linking to
// its day's page, with the values of GET /v1/reports/sales for that range
// as the token sees it; a sale outside the range and another tenant's
// sales are not in it.
func TestStoreDayByDay(t *testing.T) {
	sh := mustShops(t, 0)
	// Another edge of s1 sold on day1 − 3 (15.00), on day1 − 13 (the
	// chart's first day, 1.00) and on day1 − 14 (outside the chart).
	at := time.Date(2026, 2, 7, 15, 0, 0, 0, time.UTC)
	var evs []protocol.Event
	for i, s := range []struct {
		day   string
		qty   int64
		price int64
	}{{"2026-02-07", 3000, 500}, {"2026-01-28", 1000, 100}, {"2026-01-27", 1000, 700}} {
		txn := projectiontest.Txn(s.day, fmt.Sprintf("E3-%d", i), "USD", false, 0, "card", 0, projectiontest.Line("sku-3", s.qty, s.price, 0, 0))
		txn.Terminal = "T3"
		evs = append(evs, protocol.Event{ID: fmt.Sprintf("e3-%d", i), Type: pos.TypeSaleCompleted, TS: at, Body: projectiontest.MustBody(t, txn)})
	}
	sh.commitEvents(t, "edge-3", "t1", "s1", evs)

	b := sh.browser(t)
	b.login(sh.A)
	p := b.get("/stores/s1/" + day1)
	wantAll(t, p, "Store and day", `id="days"`, "By day", "2026-01-28 to 2026-02-10")
	bars := dayBars(t, p.Body)
	if len(bars) != web.DayChartDays {
		t.Fatalf("%d day bars, want %d:\n%s", len(bars), web.DayChartDays, p.Body)
	}

	var rep ledger.Report[ledger.SalesRow]
	req, _ := http.NewRequest(http.MethodGet, sh.Server.URL+"/v1/reports/sales?store=s1&from=2026-01-28&to="+day1, nil)
	req.Header.Set("Authorization", "Bearer "+sh.A)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("API's sales report: %d %v", resp.StatusCode, err)
	}
	api := map[string]ledger.SalesRow{}
	for _, r := range rep.Rows {
		api[r.BusinessDay] = r
	}
	if len(api) != 3 || api[day1].NetSales.Decimal != "12.00" || api["2026-02-07"].NetSales.Decimal != "15.00" || api["2026-01-28"].NetSales.Decimal != "1.00" {
		t.Fatalf("the API's report is not the one sent: %+v", rep.Rows)
	}

	start := time.Date(2026, 1, 28, 0, 0, 0, 0, time.UTC)
	for i, bar := range bars {
		d := start.AddDate(0, 0, i)
		day := d.Format(ledger.DayLayout)
		if bar.Link != "/stores/s1/"+day || bar.Label != d.Format("Mon ")+day+" USD" || bar.Current != (day == day1) {
			t.Errorf("bar %d: %+v, want day %s linking to its page", i, bar, day)
		}
		row, ok := api[day]
		switch {
		case !ok && (bar.Text != "no sales" || bar.Width != 0):
			t.Errorf("%s had no sales, its bar is %+v", day, bar)
		case ok && (bar.Text != fmt.Sprintf("%s USD, %d sale%s", row.NetSales.Decimal, row.Transactions, map[bool]string{true: "s"}[row.Transactions != 1]) || bar.Width == 0):
			t.Errorf("%s: bar %+v, the API's net %s USD from %d sales", day, bar, row.NetSales.Decimal, row.Transactions)
		}
	}
	// The largest day (15.00) is the full width; 12.00 is 4/5 of it.
	if bars[10].Width != 360 || bars[13].Width != 288 {
		t.Errorf("bar widths %d and %d, want 360 and 288", bars[10].Width, bars[13].Width)
	}
	// The day's own figures are still its own, not the range's.
	wantAll(t, p, "the day's summary", `<a class="drill" href="/events?business_day=2026-02-10&amp;store=s1" title="the ledger events behind this figure">12.00</a>`)
	if strings.Contains(p.Body, `title="the ledger events behind this figure">15.00<`) {
		t.Error("the day's summary shows another day's sales")
	}
	// A bar's link is that day's page.
	wantAll(t, b.get(bars[10].Link), "day 2026-02-07", `title="the ledger events behind this figure">15.00</a>`, "sku-3")

	// Tenant t2's store shows its own currency only.
	o := sh.browser(t)
	o.login(sh.B)
	p2 := o.get("/stores/s2/" + day1)
	bars2 := dayBars(t, p2.Body)
	if len(bars2) != web.DayChartDays || bars2[13].Text != "9.00 EUR, 1 sale" || strings.Contains(p2.Body, "USD") {
		t.Fatalf("t2's by-day bars: %+v", bars2)
	}
}
