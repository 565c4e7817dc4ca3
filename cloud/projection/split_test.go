package projection_test

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// randomLedger commits n random events of two stores (and one unknown),
// two terminals, three business days and two currencies: sales with and
// without change, tax included or not, returns, voids (of counted, voided
// and unknown sales), duplicates under new event ids, Z reports (whole,
// partial, reprinted, superseded, early), stock movements, telemetry with
// fractional values, and a body that breaks its schema.
func randomLedger(tb testing.TB, seed uint64, n int) *ledger {
	rng := rand.New(rand.NewPCG(seed, 1))
	l := newLedger(tb)
	days := []string{"2026-11-23", "2026-11-29", day}
	var sales []pos.Transaction
	byTill := map[pos.TillKey][]any{} // bodies sent per till day, for Z reports
	typeOf := func(v any) string {
		switch b := v.(type) {
		case pos.Void:
			return pos.TypeSaleVoided
		case pos.Transaction:
			if b.OriginalTxn != "" {
				return pos.TypeReturnCompleted
			}
		}
		return pos.TypeSaleCompleted
	}
	send := func(edge string, v any) {
		typ := typeOf(v)
		l.add(edge, fmt.Sprintf("ev%d", l.pos+1), typ, v)
		var k pos.TillKey
		switch b := v.(type) {
		case pos.Void:
			k = pos.TillKey{Store: b.Store, Terminal: b.Terminal, BusinessDay: b.BusinessDay, Currency: b.Currency}
		case pos.Transaction:
			k = pos.TillKey{Store: b.Store, Terminal: b.Terminal, BusinessDay: b.BusinessDay, Currency: b.Currency}
		}
		byTill[k] = append(byTill[k], v)
	}
	for i := 0; i < n; i++ {
		l.at = l.at.Add(time.Duration(rng.IntN(40*60)) * time.Second)
		edge := []string{"e1", "e2"}[rng.IntN(2)]
		switch p := rng.IntN(100); {
		case p < 35 || len(sales) == 0:
			var lines []pos.Line
			for j := rng.IntN(3); j >= 0; j-- {
				price := int64(50 + rng.IntN(900))
				lines = append(lines, line([]string{"apple", "pear", "tea"}[rng.IntN(3)], int64(500+rng.IntN(3000)), price, int64(rng.IntN(10)), int64(rng.IntN(30))))
			}
			tender := []string{"cash", "card", "mobile"}[rng.IntN(3)]
			var change int64
			if rng.IntN(3) == 0 {
				change = int64(rng.IntN(500))
			}
			t := txn(days[rng.IntN(len(days))], fmt.Sprintf("T%d", i), []string{"EUR", "USD"}[rng.IntN(2)], rng.IntN(2) == 0, 0, tender, change, lines...)
			t.Store = []string{"s1", "s2", "s1", "nowhere"}[rng.IntN(4)]
			t.Terminal = []string{"T1", "T2"}[rng.IntN(2)]
			sales = append(sales, t)
			send(edge, t)
		case p < 43:
			send(edge, sales[rng.IntN(len(sales))]) // a duplicate under a new event id
		case p < 50:
			s := sales[rng.IntN(len(sales))]
			v := voidOf(s, fmt.Sprintf("V%d", i))
			if rng.IntN(5) == 0 {
				v.VoidedTxn = "never-sold"
			}
			send(edge, v)
		case p < 57:
			s := sales[rng.IntN(len(sales))]
			send(edge, returnOf(s, fmt.Sprintf("R%d", i), rng.IntN(len(s.Lines))))
		case p < 70:
			var keys []pos.TillKey
			for k := range byTill {
				keys = append(keys, k)
			}
			if len(keys) == 0 {
				continue
			}
			// Sorted, for a deterministic pick.
			slices.SortFunc(keys, func(a, b pos.TillKey) int { return cmp.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
			k := keys[rng.IntN(len(keys))]
			sent := byTill[k]
			if rng.IntN(3) == 0 {
				sent = sent[:rng.IntN(len(sent)+1)] // a Z of part of the day, or before its sales
			}
			var recs []projection.Record
			for _, v := range sent {
				recs = append(recs, l.record(typeOf(v), v))
			}
			l.add(edge, fmt.Sprintf("z%d", i), pos.TypeTillClosed, zOf(tb, k, recs...))
		case p < 80:
			sku := []string{"apple", "pear", "tea"}[rng.IntN(3)]
			if rng.IntN(3) == 0 {
				l.add(edge, "cnt", pos.TypeInventoryCounted, pos.InventoryCounted{Store: "s1", SKU: sku, Qty: int64(rng.IntN(20000))})
			} else {
				l.add(edge, "adj", pos.TypeInventoryAdjusted, pos.InventoryAdjusted{Store: "s2", SKU: sku, QtyDelta: int64(rng.IntN(5000)) - 2000, Reason: "received"})
			}
		case p < 98:
			l.add(edge, "m", pos.TypeTelemetryReading, pos.TelemetryReading{Store: "s1", Sensor: "fridge", Metric: "temp", Value: rng.NormFloat64() * 3.7})
			l.at = l.at.Add(-time.Duration(rng.IntN(30*60)) * time.Second) // several readings a minute
		default:
			bad := sales[rng.IntN(len(sales))]
			bad.Total++
			l.add(edge, "bad", pos.TypeSaleCompleted, bad)
		}
	}
	return l
}

// TestSplitEqualsWhole is the rebuild-equals-incremental invariant in
// memory: folding a ledger in one batch (a rebuild) gives exactly the rows
// that folding it batch by batch, cut anywhere, gives (ingest).
func TestSplitEqualsWhole(t *testing.T) {
	stores := testStores(t)
	for seed := uint64(1); seed <= 20; seed++ {
		l := randomLedger(t, seed, 150)
		whole := projection.NewState()
		whole.Apply(projection.Fold(whole, stores, l.recs))
		checkInvariants(t, seed, whole)
		rng := rand.New(rand.NewPCG(seed, 2))
		for split := 0; split < 4; split++ {
			inc := projection.NewState()
			for rest := l.recs; len(rest) > 0; {
				n := rng.IntN(min(len(rest), []int{1, 3, 20, 200}[split%4]) + 1) // empty batches too
				inc.Apply(projection.Fold(inc, stores, rest[:n]))
				rest = rest[n:]
			}
			if !reflect.DeepEqual(whole, inc) {
				t.Fatalf("seed %d, split %d: folding in batches differs from folding at once\n%s", seed, split, firstDiff(whole, inc))
			}
		}
	}
}

// checkInvariants checks what must hold of any fold (checkFigures) and
// that the generator made duplicates.
func checkInvariants(t *testing.T, seed uint64, s *projection.State) {
	t.Helper()
	checkFigures(t, s)
	var kinds = map[string]int{}
	for _, a := range s.Anomalies {
		kinds[a.Kind]++
	}
	if kinds[projection.AnomalyDuplicate] == 0 {
		t.Fatalf("seed %d: the random ledger has no duplicate transaction; the generator is not exercising it", seed)
	}
}

// checkFigures checks that the tenders of a store day add up to its total
// collected, and that net sales are gross less discounts, returns and voids.
func checkFigures(t *testing.T, s *projection.State) {
	t.Helper()
	type dayKey struct{ store, day, currency string }
	tenders := map[dayKey]int64{}
	for k, v := range s.Tables.Tenders {
		tenders[dayKey{k.Store, k.BusinessDay, k.Currency}] += v.Net
	}
	for k, v := range s.Tables.Sales {
		if got := tenders[dayKey{k.Store, k.BusinessDay, k.Currency}]; got != v.TotalCollected {
			t.Fatalf("%+v: tenders add up to %d, total collected is %d", k, got, v.TotalCollected)
		}
		if v.NetSales != v.GrossSales-v.Discounts-v.ReturnsAmount-v.VoidsAmount || v.TotalCollected != v.NetSales+v.Tax {
			t.Fatalf("%+v: figures do not add up: %+v", k, v)
		}
	}
}

// firstDiff names the first table that differs, for the failure message.
func firstDiff(a, b *projection.State) string {
	va, vb := reflect.ValueOf(a.Tables), reflect.ValueOf(b.Tables)
	for i := 0; i < va.NumField(); i++ {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			return fmt.Sprintf("table %s:\n whole %+v\n split %+v", va.Type().Field(i).Name, va.Field(i).Interface(), vb.Field(i).Interface())
		}
	}
	la, lb := reflect.ValueOf(a.Logs), reflect.ValueOf(b.Logs)
	for i := 0; i < la.NumField(); i++ {
		if !reflect.DeepEqual(la.Field(i).Interface(), lb.Field(i).Interface()) {
			return fmt.Sprintf("log %s:\n whole %+v\n split %+v", la.Type().Field(i).Name, la.Field(i).Interface(), lb.Field(i).Interface())
		}
	}
	return fmt.Sprintf("last pos %d and %d", a.LastPos, b.LastPos)
}
