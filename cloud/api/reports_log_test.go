package api_test

import (
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

type movementsPage struct {
	AsOf int64 `json:"as_of"`
	Rows []struct {
		Tenant string `json:"tenant"`
		Pos    int64  `json:"pos"`
		Ord    int    `json:"ord"`
		Store  string `json:"store"`
		SKU    string `json:"sku"`
		Reason string `json:"reason"`
		Delta  int64  `json:"delta"`
		OnHand int64  `json:"on_hand"`
	} `json:"rows"`
	Next   string          `json:"next"`
	Stores []storeComplete `json:"stores"`
}

type restatementsPage struct {
	AsOf int64 `json:"as_of"`
	Rows []struct {
		Tenant      string   `json:"tenant"`
		Pos         int64    `json:"pos"`
		Ord         int      `json:"ord"`
		Store       string   `json:"store"`
		Terminal    string   `json:"terminal"`
		BusinessDay string   `json:"business_day"`
		Currency    string   `json:"currency"`
		EventID     string   `json:"event_id"`
		Type        string   `json:"type"`
		Status      string   `json:"status"`
		What        []string `json:"what"`
	} `json:"rows"`
	Next   string          `json:"next"`
	Stores []storeComplete `json:"stores"`
}

// mustShopLater is the shop (mustShop) and then, committed later through
// the real commit: a delivery of sku-1 (+10), a count of sku-2 at 4, a
// late sale D of 1 × sku-1 on day 1, after day 1 matched its Z (so a
// restatement), and a return of 1 × sku-1 of sale C.
func mustShopLater(t *testing.T) *shop {
	t.Helper()
	sh := mustShop(t)
	saleC := projectiontest.Txn(day2, "C", "USD", false, 0, "cash", 0, projectiontest.Line("sku-1", 1000, 500, 0, 40))
	saleD := projectiontest.Txn(day1, "D", "USD", false, 0, "cash", 0, projectiontest.Line("sku-1", 1000, 500, 0, 40))
	at := time.Date(2026, 2, 11, 18, 0, 0, 0, time.UTC)
	for i, ev := range []struct {
		typ  string
		body any
	}{
		{pos.TypeInventoryAdjusted, pos.InventoryAdjusted{Store: "s1", SKU: "sku-1", QtyDelta: 10000, Reason: "received"}},
		{pos.TypeInventoryCounted, pos.InventoryCounted{Store: "s1", SKU: "sku-2", Qty: 4000}},
		{pos.TypeSaleCompleted, saleD},
		{pos.TypeReturnCompleted, projectiontest.ReturnOf(saleC, "R", 0)},
	} {
		sh.Stream.AddEvent("till-1", protocol.Event{ID: fmt.Sprintf("late-%d", i), Type: ev.typ, TS: at.Add(time.Duration(i) * time.Minute),
			Body: projectiontest.MustBody(t, ev.body)})
	}
	sh.MustCommit(t, sh.Stream, 5, 6)
	sh.MustCommit(t, sh.Stream, 7, 8)
	if err := sh.Conn.QueryRow(context.Background(), `SELECT max(pos) FROM ledger`).Scan(&sh.Last); err != nil {
		t.Fatal(err)
	}
	return sh
}

// The inventory movements through the API, folded by the real commit:
// every SKU's on hand equals the sum of its movements since its last
// count (and the last movement's on_hand), filters by SKU and position,
// keyset pages by position, and CSV rows equal JSON rows.
func TestMovementsReport(t *testing.T) {
	sh := mustShopLater(t)
	var inv struct {
		Rows []struct {
			SKU    string `json:"sku"`
			OnHand int64  `json:"on_hand"`
		} `json:"rows"`
	}
	sh.MustDo(t, 200, "GET", "/v1/reports/inventory?store=s1", sh.Token, nil, &inv)
	var all movementsPage
	sh.MustDo(t, 200, "GET", "/v1/reports/inventory/movements?store=s1", sh.Token, nil, &all)
	if all.AsOf != sh.Last || len(all.Stores) != 1 || all.Stores[0].Store != "s1" {
		t.Errorf("as_of %d (want %d), stores %+v", all.AsOf, sh.Last, all.Stores)
	}
	// sku-1: -2 (A), -1 (C), +10 (received), -1 (D), +1 (return of C) = 7.
	// sku-2: -1 (B), then counted at 4.
	want := map[string]int64{"sku-1": 7000, "sku-2": 4000}
	if len(inv.Rows) != 2 {
		t.Fatalf("inventory: %+v", inv.Rows)
	}
	for _, row := range inv.Rows {
		if row.OnHand != want[row.SKU] {
			t.Errorf("%s on hand %d, want %d", row.SKU, row.OnHand, want[row.SKU])
		}
		var sum, last int64
		var n int
		var prev int64
		for _, m := range all.Rows {
			if m.SKU != row.SKU {
				continue
			}
			if m.Pos < prev {
				t.Errorf("movements out of ledger order: %+v", all.Rows)
			}
			prev = m.Pos
			n++
			if m.Reason == "count" {
				if m.Delta != 0 {
					t.Errorf("count with delta %d", m.Delta)
				}
				sum = m.OnHand
			} else {
				sum += m.Delta
			}
			if m.OnHand != sum {
				t.Errorf("%s movement at %d: on_hand %d, the movements sum to %d", row.SKU, m.Pos, m.OnHand, sum)
			}
			last = m.OnHand
		}
		if sum != row.OnHand || last != row.OnHand {
			t.Errorf("%s: on hand %d, movements (%d) sum to %d, last on_hand %d", row.SKU, row.OnHand, n, sum, last)
		}
	}
	reasons := map[string]int{}
	for _, m := range all.Rows {
		reasons[m.SKU+" "+m.Reason]++
	}
	for _, r := range []string{"sku-1 sale", "sku-1 received", "sku-1 return", "sku-2 sale", "sku-2 count"} {
		if reasons[r] == 0 {
			t.Errorf("no %s movement in %+v", r, all.Rows)
		}
	}

	// By SKU, and by position range.
	var one movementsPage
	sh.MustDo(t, 200, "GET", "/v1/reports/inventory/movements?store=s1&sku=sku-2", sh.Token, nil, &one)
	if len(one.Rows) != 2 || one.Rows[0].Reason != "sale" || one.Rows[1].Reason != "count" || one.Rows[1].OnHand != 4000 {
		t.Errorf("sku-2 movements: %+v", one.Rows)
	}
	from, to := all.Rows[1].Pos, all.Rows[len(all.Rows)-2].Pos
	var rng movementsPage
	sh.MustDo(t, 200, "GET", fmt.Sprintf("/v1/reports/inventory/movements?from_pos=%d&to_pos=%d", from, to), sh.Token, nil, &rng)
	wantN := 0
	for _, m := range all.Rows {
		if m.Pos >= from && m.Pos <= to {
			wantN++
		}
	}
	if len(rng.Rows) != wantN || wantN == 0 || rng.Rows[0].Pos < from || rng.Rows[len(rng.Rows)-1].Pos > to {
		t.Errorf("from_pos %d to_pos %d: %d rows, want %d: %+v", from, to, len(rng.Rows), wantN, rng.Rows)
	}

	// Keyset pages of one row walk the same rows.
	var walked []string
	next := ""
	for range len(all.Rows) + 1 {
		var pg movementsPage
		sh.MustDo(t, 200, "GET", "/v1/reports/inventory/movements?store=s1&limit=1&after="+url.QueryEscape(next), sh.Token, nil, &pg)
		for _, m := range pg.Rows {
			walked = append(walked, fmt.Sprintf("%d/%d", m.Pos, m.Ord))
		}
		if next = pg.Next; next == "" {
			break
		}
	}
	var whole []string
	for _, m := range all.Rows {
		whole = append(whole, fmt.Sprintf("%d/%d", m.Pos, m.Ord))
	}
	if strings.Join(walked, ",") != strings.Join(whole, ",") {
		t.Errorf("pages walked %v, want %v", walked, whole)
	}

	// CSV rows equal JSON rows.
	r := sh.get(t, "/v1/reports/inventory/movements?store=s1", sh.Token, "text/csv")
	recs, err := csv.NewReader(strings.NewReader(string(r.Body))).ReadAll()
	if r.Status != 200 || err != nil {
		t.Fatalf("csv: status %d, %v: %s", r.Status, err, r.Body)
	}
	if r.Header.Get("X-Outpost-As-Of") != fmt.Sprint(sh.Last) {
		t.Errorf("csv as_of header %q, want %d", r.Header.Get("X-Outpost-As-Of"), sh.Last)
	}
	var fromJSON [][]string
	for _, m := range all.Rows {
		fromJSON = append(fromJSON, []string{m.Tenant, fmt.Sprint(m.Pos), fmt.Sprint(m.Ord), m.Store, m.SKU, m.Reason,
			fmt.Sprint(m.Delta), fmt.Sprint(m.OnHand)})
	}
	if fmt.Sprint(recs[0]) != "[tenant pos ord store sku reason delta on_hand]" || fmt.Sprint(recs[1:]) != fmt.Sprint(fromJSON) {
		t.Errorf("csv %q\njson %q", recs, fromJSON)
	}

	for _, forged := range [][]string{{"x", "0"}, {"1", "99999999999"}, {"1"}} {
		b, _ := json.Marshal(forged)
		c := base64.RawURLEncoding.EncodeToString(b)
		wantError(t, sh.Do(t, "GET", "/v1/reports/inventory/movements?after="+c, sh.Token, nil), 400, "cursor")
		wantError(t, sh.Do(t, "GET", "/v1/reports/restatements?after="+c, sh.Token, nil), 400, "cursor")
	}
	wantError(t, sh.Do(t, "GET", "/v1/reports/inventory/movements?from_pos=0", sh.Token, nil), 400, "ledger position")
	wantError(t, sh.Do(t, "GET", "/v1/reports/inventory/movements?to_pos=x", sh.Token, nil), 400, "ledger position")
	wantError(t, sh.Do(t, "GET", "/v1/reports/inventory/movements?from_pos=5&to_pos=4", sh.Token, nil), 400, "before from_pos")
	wantError(t, sh.Do(t, "GET", "/v1/reports/inventory/movements?from="+day1, sh.Token, nil), 400, "parameter from is not known here")
}

// The restatement log through the API: the late sale on day 1, committed
// after day 1 matched its Z report, is served as a restatement of that
// till day, filtered by store, day and terminal; CSV rows equal JSON rows.
func TestRestatementsReport(t *testing.T) {
	sh := mustShopLater(t)
	var p restatementsPage
	sh.MustDo(t, 200, "GET", "/v1/reports/restatements", sh.Token, nil, &p)
	if p.AsOf != sh.Last || len(p.Rows) != 1 {
		t.Fatalf("as_of %d (want %d), rows %+v", p.AsOf, sh.Last, p.Rows)
	}
	row := p.Rows[0]
	var evPos int64
	if err := sh.Conn.QueryRow(context.Background(), `SELECT pos FROM ledger WHERE event_id = 'late-2'`).Scan(&evPos); err != nil {
		t.Fatal(err)
	}
	if row.Tenant != "t1" || row.Store != "s1" || row.Terminal != "T1" || row.BusinessDay != day1 || row.Currency != "USD" ||
		row.EventID != "late-2" || row.Pos != evPos || row.Type != pos.TypeSaleCompleted || row.Status != "mismatch" || len(row.What) == 0 {
		t.Errorf("restatement %+v (want the late sale late-2 at %d of T1 on %s)", row, evPos, day1)
	}
	if len(p.Stores) != 1 || p.Stores[0].Store != "s1" || p.Stores[0].Requested != day1 {
		t.Errorf("stores %+v", p.Stores)
	}
	// The reconciliation names the same position as restating the day.
	var recon struct {
		Rows []struct {
			Status   string  `json:"status"`
			Restated []int64 `json:"restated"`
		} `json:"rows"`
	}
	sh.MustDo(t, 200, "GET", "/v1/reports/reconciliation?from="+day1+"&to="+day1, sh.Token, nil, &recon)
	if len(recon.Rows) != 1 || len(recon.Rows[0].Restated) != 1 || recon.Rows[0].Restated[0] != evPos {
		t.Errorf("reconciliation of %s: %+v", day1, recon.Rows)
	}
	for q, n := range map[string]int{"from=" + day1 + "&to=" + day1: 1, "from=" + day2: 0, "terminal=T1&store=s1": 1, "terminal=T2": 0,
		"store=s2": 0} {
		var f restatementsPage
		sh.MustDo(t, 200, "GET", "/v1/reports/restatements?"+q, sh.Token, nil, &f)
		if len(f.Rows) != n {
			t.Errorf("?%s: %d rows, want %d", q, len(f.Rows), n)
		}
	}
	r := sh.get(t, "/v1/reports/restatements", sh.Token, "text/csv")
	recs, err := csv.NewReader(strings.NewReader(string(r.Body))).ReadAll()
	if r.Status != 200 || err != nil || len(recs) != 2 {
		t.Fatalf("csv: status %d, %v: %s", r.Status, err, r.Body)
	}
	wantCSV := []string{row.Tenant, fmt.Sprint(row.Pos), fmt.Sprint(row.Ord), row.Store, row.Terminal, row.BusinessDay, row.Currency,
		row.EventID, row.Type, row.Status, strings.Join(row.What, "; ")}
	if fmt.Sprint(recs[0]) != "[tenant pos ord store terminal business_day currency event_id type status what]" ||
		fmt.Sprint(recs[1]) != fmt.Sprint(wantCSV) {
		t.Errorf("csv %q, want the JSON row %q", recs, wantCSV)
	}
	wantError(t, sh.Do(t, "GET", "/v1/reports/restatements?sku=sku-1", sh.Token, nil), 400, "parameter sku is not known here")
}
