package verify_test

import (
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
	"github.com/outpost-edge/outpost/simulator/verify"
)

// reportsLedger is one till day of shop-1: two sales, the second sent
// again under a new event id, a void of the second, a return of half the
// first, a stock count and an adjustment, and the Z report.
func reportsLedger(t *testing.T) *verify.Ledger {
	t.Helper()
	const day = "2026-11-22"
	sale := func(txn, sku string, qty, price int64, tender string) pos.Transaction {
		l := pos.Line{SKU: sku, Qty: qty, UnitPrice: price}
		ext, _ := l.Extended()
		l.Amount = ext
		return pos.Transaction{Store: "shop-1", Terminal: "T1", BusinessDay: day, Txn: txn, Currency: "EUR",
			Lines: []pos.Line{l}, Subtotal: ext, Total: ext, Tenders: []pos.Tender{{Type: tender, Amount: ext}}}
	}
	s1 := sale("1", "sku-a", 2000, 300, "cash")
	s2 := sale("2", "sku-b", 1000, 1000, "card")
	v1 := pos.Void{Store: "shop-1", Terminal: "T1", BusinessDay: day, Txn: "3", VoidedTxn: "2", Currency: "EUR", Total: 1000,
		Tenders: []pos.Tender{{Type: "card", Amount: 1000}}}
	r1 := sale("4", "sku-a", 1000, 300, "cash")
	r1.OriginalTxn = "1"
	tills := pos.TillTotals{}
	body := func(v any) []byte {
		b, err := protocol.NewBody(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, e := range []struct {
		typ string
		v   any
	}{{pos.TypeSaleCompleted, s1}, {pos.TypeSaleCompleted, s2}, {pos.TypeSaleVoided, v1}, {pos.TypeReturnCompleted, r1}} {
		tills.Add(e.typ, body(e.v))
	}
	z := tills.Of(&pos.TillClosed{Store: "shop-1", Terminal: "T1", BusinessDay: day, Currency: "EUR"})
	z.Net = z.Sales.Total - z.Returns.Total - z.Voids.Total

	f := newFakeEdge(t, "shop-1")
	for i, e := range []struct {
		typ string
		v   any
	}{
		{pos.TypeSaleCompleted, s1}, {pos.TypeSaleCompleted, s2}, {pos.TypeSaleCompleted, s2}, {pos.TypeSaleVoided, v1},
		{pos.TypeReturnCompleted, r1},
		{pos.TypeInventoryCounted, pos.InventoryCounted{Store: "shop-1", SKU: "sku-c", Qty: 5000}},
		{pos.TypeInventoryAdjusted, pos.InventoryAdjusted{Store: "shop-1", SKU: "sku-c", QtyDelta: 1000, Reason: "received"}},
		{pos.TypeTillClosed, z},
	} {
		f.append("till-1", protocol.Event{ID: "ev-" + string(rune('a'+i)), Type: e.typ, TS: t0, Body: body(e.v)})
	}
	f.commit()
	return &verify.Ledger{Streams: []verify.Stream{f.stored(t0)}}
}

// goodReports are the reports the cloud must show for reportsLedger.
func goodReports() *verify.Reports {
	const day = "2026-11-22"
	r := &verify.Reports{
		Sales: []verify.SalesRow{{Store: "shop-1", BusinessDay: day, Currency: "EUR", Transactions: 2}},
		Hour:  []verify.HourRow{{Store: "shop-1", BusinessDay: day, Currency: "EUR", Count: 2}},
		SKU: []verify.SKURow{{Store: "shop-1", BusinessDay: day, SKU: "sku-a", Currency: "EUR", QtySold: 2000},
			{Store: "shop-1", BusinessDay: day, SKU: "sku-b", Currency: "EUR", QtySold: 1000}},
		Inventory: []verify.InventoryRow{{Store: "shop-1", SKU: "sku-a", OnHand: -1000}, {Store: "shop-1", SKU: "sku-b", OnHand: 0},
			{Store: "shop-1", SKU: "sku-c", OnHand: 6000},
			{Store: "shop-9", SKU: "sku-z", OnHand: 7}}, // another run's store: not this check's
		Reconciliation: []verify.ReconciliationRow{{Store: "shop-1", Terminal: "T1", BusinessDay: day, Currency: "EUR", Status: "match"}},
	}
	r.Sales[0].TotalCollected.Minor = 600 + 1000 - 300 - 1000 // sold, returned, voided
	r.Tenders = []verify.TenderRow{{Store: "shop-1", BusinessDay: day, Type: "cash", Currency: "EUR"},
		{Store: "shop-1", BusinessDay: day, Type: "card", Currency: "EUR"}}
	r.Tenders[0].Net.Minor = 600 - 300
	r.Tenders[1].Net.Minor = 1000 - 1000
	return r
}

// CheckReports holds the reports to what the ledger's events make them,
// and names each figure that differs.
func TestCheckReports(t *testing.T) {
	l := reportsLedger(t)
	v := verify.CheckReports(l, goodReports(), []string{"shop-1"}, verify.Options{})
	if !v.OK || v.Figures < 10 || v.Stores != 1 || v.StoreDays != 1 {
		t.Fatalf("good reports: %+v", v)
	}
	for _, tc := range []struct {
		name   string
		break_ func(*verify.Reports)
		want   string
	}{
		{"total collected", func(r *verify.Reports) { r.Sales[0].TotalCollected.Minor++ }, "total collected"},
		{"a duplicate counted", func(r *verify.Reports) { r.Sales[0].Transactions = 3 }, "transactions"},
		{"hours", func(r *verify.Reports) { r.Hour = nil }, "sales by hour"},
		{"tender", func(r *verify.Reports) { r.Tenders[1].Net.Minor = 1000 }, "tender shop-1 2026-11-22 card EUR net"},
		{"sku", func(r *verify.Reports) { r.SKU = r.SKU[:1] }, "sku-b"},
		{"count then adjust", func(r *verify.Reports) { r.Inventory[2].OnHand = 1000 }, "inventory shop-1 sku-c"},
		{"status", func(r *verify.Reports) { r.Reconciliation[0].Status = "pending" }, "status pending"},
		{"no row", func(r *verify.Reports) { r.Reconciliation = nil }, "(no row)"},
		{"extra row", func(r *verify.Reports) {
			r.Sales = append(r.Sales, verify.SalesRow{Store: "shop-1", BusinessDay: "2026-11-23", Currency: "EUR", Transactions: 1})
		}, "2026-11-23"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := goodReports()
			tc.break_(r)
			v := verify.CheckReports(l, r, []string{"shop-1"}, verify.Options{})
			if v.OK || v.Mismatches == 0 || !strings.Contains(strings.Join(v.Examples, "\n"), tc.want) {
				t.Fatalf("%+v, want a mismatch naming %q", v, tc.want)
			}
		})
	}
}
