package projection_test

import (
	pt "github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

const day = "2026-11-30"

// shop commits the tests' standard day: two EUR sales (discounts, cash
// with change), a return of part of the first, a void of the second, and
// a USD sale, all on till T1 of store s1.
func shop(tb testing.TB) (*pt.Ledger, pos.Transaction) {
	l := pt.New(tb)
	return l, shopInto(l)
}

func shopInto(l *pt.Ledger) pos.Transaction {
	a := pt.Txn(day, "T100", "EUR", false, 20, "cash", 195,
		pt.Line("apple", 2000, 150, 0, 30), pt.Line("pear", 1000, 500, 50, 45))
	b := pt.Txn(day, "T101", "EUR", false, 0, "card", 0, pt.Line("apple", 1000, 150, 0, 15))
	l.Add("e1", "a", pos.TypeSaleCompleted, a)
	l.Add("e1", "b", pos.TypeSaleCompleted, b)
	l.Add("e1", "r", pos.TypeReturnCompleted, pt.ReturnOf(a, "R1", 0))
	l.Add("e1", "v", pos.TypeSaleVoided, pt.VoidOf(b, "V1"))
	l.Add("e1", "u", pos.TypeSaleCompleted, pt.Txn(day, "T102", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 200, 0, 20)))
	return a
}

func TestSalesSummary(t *testing.T) {
	l, _ := shop(t)
	s := pt.Fold(t, l.Recs...)
	want := map[projection.SalesKey]projection.Sales{
		{Tenant: "t1", Store: "s1", BusinessDay: day, Currency: "EUR"}: {
			Transactions: 2, Items: 4000, GrossSales: 950, Discounts: 70,
			ReturnsCount: 1, ReturnsAmount: 300, VoidsCount: 1, VoidsAmount: 150,
			Tax: 45, NetSales: 430, TotalCollected: 475},
		{Tenant: "t1", Store: "s1", BusinessDay: day, Currency: "USD"}: {
			Transactions: 1, Items: 1000, GrossSales: 200, Tax: 20, NetSales: 200, TotalCollected: 220},
	}
	if !reflect.DeepEqual(s.Tables.Sales, want) {
		t.Fatalf("sales summary:\n got %+v\nwant %+v", s.Tables.Sales, want)
	}
	if len(s.Anomalies) != 0 {
		t.Fatalf("anomalies: %+v", s.Anomalies)
	}
}

func TestSalesTaxIncluded(t *testing.T) {
	l := pt.New(t)
	l.Add("e1", "a", pos.TypeSaleCompleted, pt.Txn(day, "T1", "EUR", true, 10, "card", 0, pt.Line("tea", 2000, 119, 0, 38)))
	got := pt.Fold(t, l.Recs...).Tables.Sales[projection.SalesKey{Tenant: "t1", Store: "s1", BusinessDay: day, Currency: "EUR"}]
	// 2 × 1.19 = 2.38 with 0.38 tax inside: gross 200, discount 10, net
	// 190, and the customer paid 228.
	want := projection.Sales{Transactions: 1, Items: 2000, GrossSales: 200, Discounts: 10, Tax: 38, NetSales: 190, TotalCollected: 228}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestBySKU(t *testing.T) {
	l, _ := shop(t)
	s := pt.Fold(t, l.Recs...)
	want := map[projection.SKUKey]projection.SKUSales{
		{Store: "s1", BusinessDay: day, SKU: "apple", Currency: "EUR"}: {
			QtySold: 3000, QtyReturned: 2000, QtyVoided: 1000, Gross: 450, Returns: 300, Voids: 150, Net: 0},
		{Store: "s1", BusinessDay: day, SKU: "pear", Currency: "EUR"}:  {QtySold: 1000, Gross: 500, Discounts: 50, Net: 450},
		{Store: "s1", BusinessDay: day, SKU: "apple", Currency: "USD"}: {QtySold: 1000, Gross: 200, Net: 200},
	}
	if !reflect.DeepEqual(s.Tables.SKU, want) {
		t.Fatalf("by SKU:\n got %+v\nwant %+v", s.Tables.SKU, want)
	}
}

func TestByHour(t *testing.T) {
	l, _ := shop(t)
	// A late sale for last week's business day, edge time now: it lands in
	// its own day, at the hour the edge saw it.
	late := pt.Txn("2026-11-23", "T9", "EUR", false, 0, "card", 0, pt.Line("pear", 1000, 500, 0, 50))
	l.Add("e1", "late", pos.TypeSaleCompleted, late)
	// Store s2 is in Berlin: 14:30 UTC is 15:30 there.
	s2 := late
	s2.Store, s2.BusinessDay, s2.Txn = "s2", day, "B1"
	l.Add("e2", "s2", pos.TypeSaleCompleted, s2)
	s := pt.Fold(t, l.Recs...)
	want := map[projection.HourKey]projection.HourSales{
		{Store: "s1", BusinessDay: day, Hour: 9, Currency: "EUR"}:          {Count: 2, Net: 430},
		{Store: "s1", BusinessDay: day, Hour: 9, Currency: "USD"}:          {Count: 1, Net: 200},
		{Store: "s1", BusinessDay: "2026-11-23", Hour: 9, Currency: "EUR"}: {Count: 1, Net: 500},
		{Store: "s2", BusinessDay: day, Hour: 15, Currency: "EUR"}:         {Count: 1, Net: 500},
	}
	if !reflect.DeepEqual(s.Tables.Hour, want) {
		t.Fatalf("by hour:\n got %+v\nwant %+v", s.Tables.Hour, want)
	}
	if got := s.Tables.Sales[projection.SalesKey{Tenant: "t1", Store: "s1", BusinessDay: "2026-11-23", Currency: "EUR"}]; got.NetSales != 500 {
		t.Fatalf("the late sale's day: %+v", got)
	}
	if got := s.Tables.Sales[projection.SalesKey{Tenant: "t2", Store: "s2", BusinessDay: day, Currency: "EUR"}]; got.Transactions != 1 {
		t.Fatalf("store s2 under its tenant: %+v", got)
	}
}

func TestTenders(t *testing.T) {
	l, _ := shop(t)
	s := pt.Fold(t, l.Recs...)
	want := map[projection.TenderKey]projection.Tenders{
		{Store: "s1", BusinessDay: day, Type: "cash", Currency: "EUR"}: {Count: 1, Amount: 1000, Change: 195, Refunds: 330, Net: 475},
		{Store: "s1", BusinessDay: day, Type: "card", Currency: "EUR"}: {Count: 1, Amount: 165, Refunds: 165, Net: 0},
		{Store: "s1", BusinessDay: day, Type: "card", Currency: "USD"}: {Count: 1, Amount: 220, Net: 220},
	}
	if !reflect.DeepEqual(s.Tables.Tenders, want) {
		t.Fatalf("tenders:\n got %+v\nwant %+v", s.Tables.Tenders, want)
	}
}

func TestInventory(t *testing.T) {
	l := pt.New(t)
	l.Add("e1", "rcv", pos.TypeInventoryAdjusted, pos.InventoryAdjusted{Store: "s1", SKU: "apple", QtyDelta: 10000, Reason: "received"})
	sale := pt.Txn(day, "T1", "EUR", false, 0, "card", 0, pt.Line("apple", 3000, 100, 0, 0))
	l.Add("e1", "a", pos.TypeSaleCompleted, sale)
	l.Add("e1", "cnt", pos.TypeInventoryCounted, pos.InventoryCounted{Store: "s1", SKU: "apple", Qty: 6500})
	l.Add("e1", "v", pos.TypeSaleVoided, pt.VoidOf(sale, "V1"))
	l.Add("e1", "dmg", pos.TypeInventoryAdjusted, pos.InventoryAdjusted{Store: "s1", SKU: "apple", QtyDelta: -500, Reason: "damaged"})
	s := pt.Fold(t, l.Recs...)
	if got := s.Tables.OnHand[projection.StockKey{Store: "s1", SKU: "apple"}]; got != 9000 {
		t.Fatalf("on hand %d, want 6500 counted + 3000 voided − 500 damaged = 9000", got)
	}
	want := []projection.Movement{
		{Pos: 1, Store: "s1", SKU: "apple", Reason: "received", Delta: 10000, Qty: 10000},
		{Pos: 2, Store: "s1", SKU: "apple", Reason: "sale", Delta: -3000, Qty: 7000},
		{Pos: 3, Store: "s1", SKU: "apple", Reason: "count", Qty: 6500},
		{Pos: 4, Store: "s1", SKU: "apple", Reason: "void", Delta: 3000, Qty: 9500},
		{Pos: 5, Store: "s1", SKU: "apple", Reason: "damaged", Delta: -500, Qty: 9000},
	}
	if !reflect.DeepEqual(s.Movements, want) {
		t.Fatalf("movements:\n got %+v\nwant %+v", s.Movements, want)
	}
}

func TestTelemetryPerMinute(t *testing.T) {
	l := pt.New(t)
	for _, v := range []float64{4.5, 3.25, 6} {
		l.Add("e1", "m", pos.TypeTelemetryReading, pos.TelemetryReading{Store: "s1", Sensor: "fridge", Metric: "temp", Value: v})
		l.At = l.At.Add(10 * time.Second)
	}
	l.At = l.At.Add(time.Minute)
	l.Add("e1", "m", pos.TypeTelemetryReading, pos.TelemetryReading{Store: "s1", Sensor: "fridge", Metric: "temp", Value: -1})
	s := pt.Fold(t, l.Recs...)
	min := time.Date(2026, 11, 30, 14, 30, 0, 0, time.UTC)
	want := map[projection.TelemetryKey]projection.Telemetry{
		{Tenant: "t1", Store: "s1", Sensor: "fridge", Metric: "temp", Minute: min}:                  {Count: 3, Min: 3.25, Max: 6, Sum: 13.75},
		{Tenant: "t1", Store: "s1", Sensor: "fridge", Metric: "temp", Minute: min.Add(time.Minute)}: {Count: 1, Min: -1, Max: -1, Sum: -1},
	}
	if !reflect.DeepEqual(s.Tables.Telemetry, want) {
		t.Fatalf("telemetry:\n got %+v\nwant %+v", s.Tables.Telemetry, want)
	}
}

func TestDuplicateTransaction(t *testing.T) {
	l := pt.New(t)
	a := pt.Txn(day, "T100", "EUR", false, 0, "card", 0, pt.Line("apple", 1000, 100, 0, 10))
	first := l.Add("e1", "evt-1", pos.TypeSaleCompleted, a)
	// The till retried with a new event id (the Odoo failure).
	again := l.Add("e1", "evt-2", pos.TypeSaleCompleted, a)
	k := pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: day, Currency: "EUR"}
	l.Add("e1", "z", pos.TypeTillClosed, pt.ZOf(t, k, first))
	s := pt.Fold(t, l.Recs...)
	if got := s.Tables.Sales[projection.SalesKey{Tenant: "t1", Store: "s1", BusinessDay: day, Currency: "EUR"}]; got.Transactions != 1 || got.TotalCollected != 110 {
		t.Fatalf("sales counted the duplicate: %+v", got)
	}
	if got := s.Tables.OnHand[projection.StockKey{Store: "s1", SKU: "apple"}]; got != -1000 {
		t.Fatalf("on hand %d, want -1000", got)
	}
	if len(s.Anomalies) != 1 {
		t.Fatalf("anomalies: %+v", s.Anomalies)
	}
	an := s.Anomalies[0]
	if an.Kind != projection.AnomalyDuplicate || an.Pos != again.Pos || an.ID != "evt-2" || an.Other != first.Pos || an.OtherID != "evt-1" {
		t.Fatalf("anomaly: %+v", an)
	}
	if got := s.Tills[k]; got.Status != projection.StatusMatch {
		t.Fatalf("till: %+v", got)
	}
}

func TestRejectedRecords(t *testing.T) {
	l := pt.New(t)
	a := pt.Txn(day, "T1", "EUR", false, 0, "card", 0, pt.Line("apple", 1000, 100, 0, 10))
	a.Store = "nowhere"
	l.Add("e1", "a", pos.TypeSaleCompleted, a)
	bad := pt.Txn(day, "T2", "EUR", false, 0, "card", 0, pt.Line("apple", 1000, 100, 0, 10))
	bad.Total++
	l.Add("e1", "b", pos.TypeSaleCompleted, bad)
	l.Add("e1", "c", "scale.weighed", map[string]any{"grams": 12})
	s := pt.Fold(t, l.Recs...)
	if len(s.Tables.Sales) != 0 || len(s.Tills) != 0 {
		t.Fatalf("counted: %+v %+v", s.Tables.Sales, s.Tills)
	}
	if len(s.Anomalies) != 2 || s.Anomalies[0].Kind != projection.AnomalyUnknownStore || s.Anomalies[1].Kind != projection.AnomalyUndecodable {
		t.Fatalf("anomalies: %+v", s.Anomalies)
	}
	if !strings.Contains(s.Anomalies[1].Detail, "total") {
		t.Fatalf("the undecodable anomaly does not name the field: %s", s.Anomalies[1].Detail)
	}
	if s.LastPos != 3 {
		t.Fatalf("last pos %d, want 3", s.LastPos)
	}
}

// TestDuplicateVoid: a void retried under a new event id is a duplicate,
// not a second void of its sale.
func TestDuplicateVoid(t *testing.T) {
	l := pt.New(t)
	a := pt.Txn(day, "T100", "EUR", false, 0, "card", 0, pt.Line("apple", 1000, 100, 0, 10))
	l.Add("e1", "a", pos.TypeSaleCompleted, a)
	v := pt.VoidOf(a, "V1")
	first := l.Add("e1", "v-1", pos.TypeSaleVoided, v)
	l.Add("e1", "v-2", pos.TypeSaleVoided, v)
	s := pt.Fold(t, l.Recs...)
	if got := s.Tables.Sales[projection.SalesKey{Tenant: "t1", Store: "s1", BusinessDay: day, Currency: "EUR"}]; got.VoidsCount != 1 || got.TotalCollected != 0 {
		t.Fatalf("sales: %+v", got)
	}
	if len(s.Anomalies) != 1 || s.Anomalies[0].Kind != projection.AnomalyDuplicate || s.Anomalies[0].Other != first.Pos {
		t.Fatalf("anomalies: %+v", s.Anomalies)
	}
}

// TestShedRecord: a tombstone (the edge shed the body) is listed, not
// counted, and its till day stays pending.
func TestShedRecord(t *testing.T) {
	l := pt.New(t)
	a := l.Add("e1", "a", pos.TypeSaleCompleted, pt.Txn(day, "T1", "EUR", false, 0, "card", 0, pt.Line("apple", 1000, 100, 0, 10)))
	b := l.Add("e1", "b", pos.TypeSaleCompleted, pt.Txn(day, "T2", "EUR", false, 0, "card", 0, pt.Line("apple", 1000, 100, 0, 10)))
	l.Add("e1", "z", pos.TypeTillClosed, pt.ZOf(t, tillEUR, a, b))
	var h protocol.Hash
	l.Recs[1].Body, l.Recs[1].Shed = nil, &h
	s := pt.Fold(t, l.Recs...)
	if len(s.Anomalies) != 1 || s.Anomalies[0].Kind != projection.AnomalyShed || s.Anomalies[0].Pos != b.Pos {
		t.Fatalf("anomalies: %+v", s.Anomalies)
	}
	if got := s.Tills[tillEUR].Status; got != projection.StatusPending {
		t.Fatalf("status %s, want pending", got)
	}
}

// TestFoldLeavesPriorAlone: Fold reads the prior rows and never changes
// them, and its Delta holds only the keys the batch touched.
func TestFoldLeavesPriorAlone(t *testing.T) {
	l, a := shop(t)
	l.Add("e1", "z", pos.TypeTillClosed, pt.ZOf(t, tillEUR, l.Recs[:4]...))
	prior, again := pt.Fold(t, l.Recs...), pt.Fold(t, l.Recs...)
	late := pt.New(t)
	late.Pos = l.Pos
	late.Add("e1", "late", pos.TypeReturnCompleted, pt.ReturnOf(a, "R9", 1))
	d := projection.Fold(prior, pt.Stores(t), late.Recs)
	if !reflect.DeepEqual(prior, again) {
		t.Fatalf("Fold changed its prior view: %s", firstDiff(prior, again))
	}
	if len(d.Tables.Sales) != 1 || len(d.Tables.SKU) != 1 || len(d.Tables.Hour) != 1 || len(d.Tables.Tenders) != 1 ||
		len(d.Tables.OnHand) != 1 || len(d.Tills) != 1 || len(d.Txns) != 1 || len(d.Tables.Telemetry) != 0 {
		t.Fatalf("the delta of one return holds more than the keys it touched: %+v", d.Tables)
	}
	if got := d.Tills[tillEUR]; got.Status != projection.StatusRestated || len(d.Restatements) != 1 {
		t.Fatalf("till %+v, restatements %+v", got, d.Restatements)
	}
}

// TestVoidOfWhatCannotBeVoided: a void of a voided sale, of a return, or of
// a sale in another currency is listed and not counted.
func TestVoidOfWhatCannotBeVoided(t *testing.T) {
	l := pt.New(t)
	a := pt.Txn(day, "T100", "EUR", false, 0, "card", 0, pt.Line("apple", 1000, 100, 0, 10))
	l.Add("e1", "a", pos.TypeSaleCompleted, a)
	l.Add("e1", "v1", pos.TypeSaleVoided, pt.VoidOf(a, "V1"))
	l.Add("e1", "v2", pos.TypeSaleVoided, pt.VoidOf(a, "V2"))
	r := pt.ReturnOf(a, "R1", 0)
	l.Add("e1", "r", pos.TypeReturnCompleted, r)
	vr := pt.VoidOf(r, "V3")
	l.Add("e1", "v3", pos.TypeSaleVoided, vr)
	b := pt.Txn(day, "T101", "USD", false, 0, "card", 0, pt.Line("apple", 1000, 100, 0, 10))
	l.Add("e1", "b", pos.TypeSaleCompleted, b)
	vb := pt.VoidOf(b, "V4")
	vb.Currency = "EUR"
	l.Add("e1", "v4", pos.TypeSaleVoided, vb)
	s := pt.Fold(t, l.Recs...)
	var got []string
	for _, an := range s.Anomalies {
		got = append(got, an.ID+": "+an.Detail)
	}
	if len(got) != 3 || !strings.Contains(got[0], "already voided") || !strings.Contains(got[1], "not a sale") || !strings.Contains(got[2], "in USD, not EUR") {
		t.Fatalf("anomalies:\n%s", strings.Join(got, "\n"))
	}
	if eur := s.Tables.Sales[projection.SalesKey{Tenant: "t1", Store: "s1", BusinessDay: day, Currency: "EUR"}]; eur.VoidsCount != 1 {
		t.Fatalf("EUR voids counted: %+v", eur)
	}
}

// TestForeignStore: a body naming a store of another tenant than its
// edge's is counted nowhere and listed under the edge's tenant; the same
// body from an edge of the store's tenant counts.
func TestForeignStore(t *testing.T) {
	l := pt.New(t)
	a := pt.Txn(day, "T1", "EUR", false, 0, "card", 0, pt.Line("apple", 1000, 100, 0, 10))
	a.Store = "s2" // of tenant t2
	l.Add("e1", "a", pos.TypeSaleCompleted, a)
	l.Add("e1", "m", pos.TypeTelemetryReading, pos.TelemetryReading{Store: "s2", Sensor: "fridge", Metric: "temp", Value: 4})
	l.Add("e1", "n", pos.TypeTelemetryReading, pos.TelemetryReading{Store: "nowhere", Sensor: "fridge", Metric: "temp", Value: 4})
	l.Add("e1", "o", pos.TypeTelemetryReading, pos.TelemetryReading{Sensor: "uplink", Metric: "rssi", Value: -60})
	l.Add("e2", "b", pos.TypeSaleCompleted, a)
	dir := &projection.Directory{Stores: pt.Stores(t), Edges: map[string]string{"e1": "t1", "e2": "t2"}}
	s := projection.NewState()
	s.Apply(projection.Fold(s, dir, l.Recs))
	if len(s.Anomalies) != 3 {
		t.Fatalf("anomalies: %+v", s.Anomalies)
	}
	for i, want := range []string{projection.AnomalyForeignStore, projection.AnomalyForeignStore, projection.AnomalyUnknownStore} {
		if a := s.Anomalies[i]; a.Kind != want || a.Tenant != "t1" {
			t.Errorf("anomaly %d: %+v, want %s under t1", i, a, want)
		}
	}
	own := projection.TelemetryKey{Tenant: "t1", Sensor: "uplink", Metric: "rssi", Minute: time.Date(2026, 11, 30, 14, 30, 0, 0, time.UTC)}
	if len(s.Tables.Telemetry) != 1 || s.Tables.Telemetry[own].Count != 1 {
		t.Errorf("telemetry: %+v; want only the edge's own sensor, under the edge's tenant", s.Tables.Telemetry)
	}
	if got := s.Tables.Sales[projection.SalesKey{Tenant: "t2", Store: "s2", BusinessDay: day, Currency: "EUR"}]; got.Transactions != 1 {
		t.Errorf("the sale from t2's own edge: %+v, want 1 transaction", got)
	}
}

// TestFoldMemoFollowsTheBody: Fold keeps decoded bodies in the slice it
// folds; a copy of a folded record given another body or type is decoded
// anew, not taken for the old one.
func TestFoldMemoFollowsTheBody(t *testing.T) {
	l, a := shop(t)
	first := pt.Fold(t, l.Recs...)
	again := projection.NewState()
	again.Apply(projection.Fold(again, pt.Stores(t), l.Recs))
	if !reflect.DeepEqual(first, again) {
		t.Fatalf("folding the same slice again differs: %s", firstDiff(first, again))
	}
	r := l.Recs[0] // folded, so it carries the decoded sale a
	other := a
	other.Txn = "T999"
	other.BusinessDay = "2026-11-29"
	r.Body = pt.MustBody(t, other)
	s := projection.NewState()
	s.Apply(projection.Fold(s, pt.Stores(t), []projection.Record{r}))
	if _, ok := s.Tables.Sales[projection.SalesKey{Tenant: "t1", Store: "s1", BusinessDay: "2026-11-29", Currency: "EUR"}]; !ok {
		t.Fatalf("the copy with another body was folded as the old one: %+v", s.Tables.Sales)
	}
	r.Type = pos.TypeSaleVoided
	s = projection.NewState()
	s.Apply(projection.Fold(s, pt.Stores(t), []projection.Record{r}))
	if len(s.Anomalies) != 1 || s.Anomalies[0].Kind != projection.AnomalyUndecodable {
		t.Fatalf("a sale body under the void type: %+v", s.Anomalies)
	}
}
