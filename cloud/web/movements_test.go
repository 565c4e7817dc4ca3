package web_test

import (
	"context"
	"html"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// TestMovementsAndRestatementsPages: after the shops, edge-1 commits a
// delivery of 5 × sku-1 and a late sale L of 1 × sku-1 on till T1's
// day 1, which had matched its Z. The Inventory page links sku-1 to its
// movements, which page with the API's cursor, end at its on hand, and
// download as the API's CSV; the Reconciliation page lists the late sale
// in the restatement log; t2 sees none of it.
func TestMovementsAndRestatementsPages(t *testing.T) {
	sh := mustShops(t, 2)
	ctx := context.Background()
	late := projectiontest.Txn(day1, "L", "USD", false, 0, "cash", 0, projectiontest.Line("sku-1", 1000, 500, 0, 40))
	at := time.Date(2026, 2, 10, 20, 0, 0, 0, time.UTC)
	s := sh.Edge1
	first := s.Last() + 1
	s.AddEvent("till-1", protocol.Event{ID: "delivery", Type: pos.TypeInventoryAdjusted, TS: at,
		Body: projectiontest.MustBody(t, pos.InventoryAdjusted{Store: "s1", SKU: "sku-1", QtyDelta: 5000, Reason: "received"})})
	s.AddEvent("till-1", protocol.Event{ID: "late-l", Type: pos.TypeSaleCompleted, TS: at.Add(time.Minute), Body: projectiontest.MustBody(t, late)})
	out, err := sh.Ledger.Commit(ctx, []ledger.Input{{TopicEdge: "edge-1", Segment: s.Segment(first, s.Last())}})
	if err != nil || out[0].Kind != ledger.KindCommitted {
		t.Fatalf("commit: %v %+v", err, out)
	}

	b := sh.browser(t)
	b.login(sh.A)
	inv := b.get("/inventory?store=s1")
	m := regexp.MustCompile(`class="movements" href="([^"]+)"><code>sku-1</code>`).FindStringSubmatch(inv.Body)
	if m == nil {
		t.Fatalf("the Inventory page has no movements link for sku-1:\n%s", inv.Body)
	}
	link := html.UnescapeString(m[1])
	if link != "/inventory/movements?sku=sku-1&store=s1" {
		t.Errorf("movements link %q", link)
	}
	// sku-1: sale A (-2), the delivery (+5), the late sale (-1): 2 on hand,
	// in three movements, two a page.
	p1 := b.get(link)
	wantAll(t, p1, "movements page 1", "Movements of sku-1", `id="on-hand">2<`, "sale", "received", "-2", "3")
	if n := strings.Count(p1.Body, `class="movement"`); n != 2 {
		t.Errorf("page 1 has %d movements, want 2:\n%s", n, p1.Body)
	}
	m = regexp.MustCompile(`id="next" href="([^"]+)"`).FindStringSubmatch(p1.Body)
	if m == nil {
		t.Fatalf("no next page of movements:\n%s", p1.Body)
	}
	p2 := b.get(html.UnescapeString(m[1]))
	wantAll(t, p2, "movements page 2", "First page")
	rows := regexp.MustCompile(`<tr class="movement">.*?</tr>`).FindAllString(strings.ReplaceAll(p2.Body, "\n", ""), -1)
	if len(rows) != 1 || !strings.Contains(rows[0], ">sale<") || !strings.Contains(rows[0], ">-1<") || !strings.Contains(rows[0], ">2<") {
		t.Errorf("page 2: %q", rows)
	}
	if strings.Contains(p2.Body, `id="next"`) {
		t.Errorf("page 2 of 2 has a next page:\n%s", p2.Body)
	}

	// The page's CSV is the API's CSV of the same filter.
	m = regexp.MustCompile(`id="movements-csv" href="([^"]+)"`).FindStringSubmatch(p1.Body)
	if m == nil {
		t.Fatalf("no CSV link:\n%s", p1.Body)
	}
	c := b.get(html.UnescapeString(m[1]))
	req, _ := http.NewRequest(http.MethodGet, sh.Server.URL+"/v1/reports/inventory/movements?sku=sku-1&store=s1&limit=1000", nil)
	req.Header.Set("Authorization", "Bearer "+sh.A)
	req.Header.Set("Accept", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	apiCSV, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if c.Status != 200 || c.Body != string(apiCSV) || strings.Count(c.Body, "\n") != 4 {
		t.Errorf("movements CSV (%d):\n%s\nAPI's:\n%s", c.Status, c.Body, apiCSV)
	}
	if p := b.get("/inventory/movements?store=s1"); p.Status != 400 || !strings.Contains(p.Body, "Parameter sku is missing") {
		t.Errorf("movements without a SKU: %d\n%s", p.Status, p.Body)
	}

	// The restatement log on the Reconciliation page.
	rc := b.get("/reconciliation")
	lr := regexp.MustCompile(`<tr class="restatement">.*?</tr>`).FindAllString(strings.ReplaceAll(rc.Body, "\n", ""), -1)
	if len(lr) != 1 || !strings.Contains(lr[0], "late-l") || !strings.Contains(lr[0], "T1") || !strings.Contains(lr[0], day1) ||
		!strings.Contains(lr[0], "mismatch") {
		t.Errorf("restatements on the Reconciliation page: %q\n%s", lr, rc.Body)
	}
	wantAll(t, rc, "Reconciliation", `href="/reports/restatements.csv"`)
	if p := b.get("/reports/restatements.csv"); p.Status != 200 || !strings.Contains(p.Body, "late-l") {
		t.Errorf("restatements CSV: %d\n%s", p.Status, p.Body)
	}

	// Tenant t2 sees none of t1's movements or restatements.
	b2 := sh.browser(t)
	b2.login(sh.B)
	p := b2.get(link)
	wantAll(t, p, "t2's movements of s1/sku-1", "No movements of this SKU in this store.")
	if strings.Contains(p.Body, `class="movement"`) || strings.Contains(p.Body, `id="on-hand"`) {
		t.Errorf("t2 sees t1's movements:\n%s", p.Body)
	}
	if rc := b2.get("/reconciliation"); strings.Contains(rc.Body, "late-l") {
		t.Errorf("t2 sees t1's restatement:\n%s", rc.Body)
	}
}
