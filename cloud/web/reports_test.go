package web_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/api"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/cloud/projection/pgview"
	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/cloud/web"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

const day1 = "2026-02-10"

// shops is two tenants, each with a store and an edge whose sales were
// committed through the real commit and its projections:
//
//	t1/s1 (New York, USD): sale A (2 × sku-1 at 5.00, tax 0.80, cash),
//	    sale B (sku-2 at 2.50, 0.50 off, card), the Z of A and B, and a
//	    duplicate of B under another event id, all on 2026-02-10; a till T2
//	    whose Z claims a sale the ledger does not have (pending)
//	t2/s2 (Paris, EUR): sale X (sku-9 at 9.00)
type shops struct {
	*env
	A, B  string               // reader tokens of t1 and t2
	Edge1 *protocoltest.Stream // edge-1's stream
}

func mustShops(t *testing.T, pageSize int) *shops {
	t.Helper()
	ctx := context.Background()
	pool := ledgertest.Pool(t, pgtest.New(t))
	if err := ledger.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	led := ledger.New(pool, ledger.Options{Logger: log, Projections: []ledger.Projection{pgview.New(nil)}})
	cloud := protocoltest.NewSigner(t)
	a := api.New(api.Options{Ledger: led, Signer: cloud, Logger: log})
	// Now is 13:00 in New York on day1 (and 19:00 in Paris).
	now := func() time.Time { return time.Date(2026, 2, 10, 18, 0, 0, 0, time.UTC) }
	e := &env{Ledger: led, Cloud: cloud, Server: httptest.NewServer(web.New(web.Options{API: a, Ledger: led, Logger: log, Now: now, PageSize: pageSize}))}
	t.Cleanup(e.Server.Close)
	sh := &shops{env: e}
	for _, tn := range []struct{ tenant, store, zone, cur, edge string }{
		{"t1", "s1", "America/New_York", "USD", "edge-1"}, {"t2", "s2", "Europe/Paris", "EUR", "edge-2"},
	} {
		if _, err := led.AddTenant(ctx, tn.tenant, "Tenant "+tn.tenant); err != nil {
			t.Fatal(err)
		}
		if _, err := led.AddStore(ctx, ledger.Store{Tenant: tn.tenant, ID: tn.store, Name: "Shop " + tn.store, TimeZone: tn.zone, Currency: tn.cur}); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if e.Admin, err = led.CreateAPIToken(ctx, "root", api.RoleAdmin, ""); err != nil {
		t.Fatal(err)
	}
	if sh.A, err = led.CreateAPIToken(ctx, "a-reader", api.RoleReader, "t1"); err != nil {
		t.Fatal(err)
	}
	if sh.B, err = led.CreateAPIToken(ctx, "b-reader", api.RoleReader, "t2"); err != nil {
		t.Fatal(err)
	}

	saleA := projectiontest.Txn(day1, "A", "USD", false, 0, "cash", 20, projectiontest.Line("sku-1", 2000, 500, 0, 80))
	saleB := projectiontest.Txn(day1, "B", "USD", false, 0, "card", 0, projectiontest.Line("sku-2", 1000, 250, 50, 20))
	rec := func(typ string, body any) projection.Record {
		return projection.Record{Record: protocol.Record{Type: typ, Body: projectiontest.MustBody(t, body)}}
	}
	z := projectiontest.ZOf(t, pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: day1, Currency: "USD"},
		rec(pos.TypeSaleCompleted, saleA), rec(pos.TypeSaleCompleted, saleB))
	ghost := projectiontest.Txn(day1, "G", "USD", false, 0, "cash", 0, projectiontest.Line("sku-1", 1000, 500, 0, 0))
	ghost.Terminal = "T2"
	z2 := projectiontest.ZOf(t, pos.TillKey{Store: "s1", Terminal: "T2", BusinessDay: day1, Currency: "USD"}, rec(pos.TypeSaleCompleted, ghost))
	at := time.Date(2026, 2, 10, 15, 0, 0, 0, time.UTC) // 10:00 in New York
	sh.Edge1 = e.commitEvents(t, "edge-1", "t1", "s1", []protocol.Event{
		{ID: "a", Type: pos.TypeSaleCompleted, TS: at, Body: projectiontest.MustBody(t, saleA)},
		{ID: "b", Type: pos.TypeSaleCompleted, TS: at.Add(time.Hour), Body: projectiontest.MustBody(t, saleB)},
		{ID: "b-retry", Type: pos.TypeSaleCompleted, TS: at.Add(time.Hour), Body: projectiontest.MustBody(t, saleB)},
		{ID: "z", Type: pos.TypeTillClosed, TS: at.Add(2 * time.Hour), Body: projectiontest.MustBody(t, z)},
		{ID: "z2", Type: pos.TypeTillClosed, TS: at.Add(2 * time.Hour), Body: projectiontest.MustBody(t, z2)},
	})
	saleX := projectiontest.Txn(day1, "X", "EUR", false, 0, "card", 0, projectiontest.Line("sku-9", 1000, 900, 0, 0))
	saleX.Store = "s2"
	e.commitEvents(t, "edge-2", "t2", "s2", []protocol.Event{{ID: "x", Type: pos.TypeSaleCompleted, TS: at, Body: projectiontest.MustBody(t, saleX)}})
	return sh
}

func (e *env) commitEvents(t *testing.T, edge, tenant, store string, evs []protocol.Event) *protocoltest.Stream {
	t.Helper()
	ctx := context.Background()
	s := protocoltest.NewStream(t, edge, protocoltest.NewSigner(t))
	if _, err := e.Ledger.AddEdge(ctx, edge, s.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	if err := e.Ledger.SetEdgeTenant(ctx, edge, tenant, store); err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		s.AddEvent("till-1", ev)
	}
	out, err := e.Ledger.Commit(ctx, []ledger.Input{{TopicEdge: edge, Segment: s.Segment(1, s.Last())}})
	if err != nil || out[0].Kind != ledger.KindCommitted {
		t.Fatalf("commit: %v %+v", err, out)
	}
	return s
}

func wantAll(t *testing.T, p page, what string, parts ...string) {
	t.Helper()
	if p.Status != 200 {
		t.Fatalf("%s: status %d\n%s", what, p.Status, p.Body)
	}
	for _, s := range parts {
		if !strings.Contains(p.Body, s) {
			t.Errorf("%s does not show %q:\n%s", what, s, p.Body)
		}
	}
}

func TestReportPages(t *testing.T) {
	sh := mustShops(t, 1)
	b := sh.browser(t)
	b.login(sh.A)

	wantAll(t, b.get("/today"), "Today", `data-store="s1"`, "Shop s1", day1, "America/New_York",
		`<td class="num txns"><div>2</div></td>`, // A and B: B's duplicate is not counted twice
		"12.00 USD",                              // net: A 10.00 + B 2.00, tax apart
		"cash:", "card:", `href="/stores/s1/2026-02-10"`, "sales.csv")

	sd := b.get("/stores/s1/" + day1)
	wantAll(t, sd, "Store and day", `id="hours"`, "10:00 USD", "11:00 USD", "sku-1", "sku-2",
		`class="till match"`, `class="till pending"`, "Z at ", `href="/events?edge=edge-1"`)

	rc := b.get("/reconciliation")
	wantAll(t, rc, "Reconciliation", `class="till pending"`, "T2", "b-retry")
	if strings.Contains(rc.Body, `class="till match"`) {
		t.Error("the reconciliation page lists a till day that matches")
	}
	// Inventory pages (1 row a page here) with the API's cursor.
	inv := b.get("/inventory?store=s1")
	wantAll(t, inv, "Inventory", "sku-1", "-2") // two of sku-1 sold from nothing
	m := regexp.MustCompile(`id="next" href="([^"]+)"`).FindStringSubmatch(inv.Body)
	if m == nil || strings.Contains(inv.Body, "sku-2") {
		t.Fatalf("inventory page 1 of 2:\n%s", inv.Body)
	}
	wantAll(t, b.get(html.UnescapeString(m[1])), "Inventory page 2", "sku-2")

	// The store day's CSV link is the API's CSV of the same filter.
	m = regexp.MustCompile(`href="(/reports/sales\.csv[^"]*)"`).FindStringSubmatch(sd.Body)
	if m == nil {
		t.Fatal("no sales CSV link on the store's day")
	}
	c := b.get(html.UnescapeString(m[1]))
	req, _ := http.NewRequest(http.MethodGet, sh.Server.URL+"/v1/reports/sales?store=s1&from="+day1+"&to="+day1+"&limit=1000", nil)
	req.Header.Set("Authorization", "Bearer "+sh.A)
	req.Header.Set("Accept", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	apiCSV, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rows, err := csv.NewReader(strings.NewReader(c.Body)).ReadAll()
	if err != nil || len(rows) != 2 || c.Body != string(apiCSV) {
		t.Fatalf("sales CSV %v:\n%s\nAPI's:\n%s", err, c.Body, apiCSV)
	}
	if p := b.get("/reports/nope.csv"); p.Status != 404 {
		t.Fatalf("unknown report: %d", p.Status)
	}
	if p := b.get("/stores/s1/2026-13-01"); p.Status != 400 {
		t.Fatalf("bad day: %d", p.Status)
	}
}

// TestTenantSeesNothingOfAnother: tenant t2's reader sees its own store
// and none of t1's, on every page; t1's store's day is a 404 for it.
func TestTenantSeesNothingOfAnother(t *testing.T) {
	sh := mustShops(t, 0)
	b := sh.browser(t)
	b.login(sh.B)
	for _, path := range []string{"/today", "/reconciliation", "/inventory", "/fleet", "/events", "/quarantine",
		"/reports/sales.csv", "/reports/inventory.csv", "/events.csv", "/fleet/edges.csv", "/fleet/streams.csv"} {
		p := b.get(path)
		if p.Status != 200 {
			t.Fatalf("%s: %d\n%s", path, p.Status, p.Body)
		}
		for _, leak := range []string{"s1", "edge-1", "sku-1", "USD"} {
			if strings.Contains(p.Body, leak) {
				t.Errorf("%s shows tenant t1's %q", path, leak)
			}
		}
	}
	wantAll(t, b.get("/today"), "t2's Today", `data-store="s2"`, "9.00 EUR")
	if p := b.get("/stores/s1/" + day1); p.Status != 404 {
		t.Fatalf("t1's store day for t2: %d", p.Status)
	}
	if p := b.get(fmt.Sprintf("/events/%d", 1)); p.Status != 404 {
		t.Fatalf("t1's first event for t2: %d\n%s", p.Status, p.Body)
	}
	if p := b.get(fmt.Sprintf("/proof/edge-1/%s/1", sh.Edge1.Stream.Epoch)); p.Status != 404 {
		t.Fatalf("t1's proof for t2: %d\n%s", p.Status, p.Body)
	}
	if p := b.get("/today/live?after=x"); p.Status != 400 {
		t.Fatalf("live tail with a bad cursor: %d", p.Status)
	}
}
