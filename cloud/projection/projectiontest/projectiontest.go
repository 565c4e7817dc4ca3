// Package projectiontest builds ledgers of POS records for tests of the
// read models: a ledger of committed records in pos order on two streams,
// the bodies of sales, returns, voids and Z reports with their totals
// filled, and a random ledger with every case the folds handle.
package projectiontest

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// Day is the business day of the ledger's clock at its start.
const Day = "2026-11-30"

// Stores are the stores of the tests: s1 in New York, s2 in Berlin.
func Stores(tb testing.TB) projection.StoreMap {
	tb.Helper()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		tb.Fatalf("load zone: %v", err)
	}
	be, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		tb.Fatalf("load zone: %v", err)
	}
	return projection.StoreMap{
		"s1": {Tenant: "t1", Location: ny},
		"s2": {Tenant: "t2", Location: be},
	}
}

// Ledger builds committed records in pos order, on two streams.
type Ledger struct {
	TB   testing.TB
	Pos  int64
	seq  map[string]uint64
	Recs []projection.Record
	At   time.Time // the edge time of the next record
}

func New(tb testing.TB) *Ledger {
	return &Ledger{TB: tb, seq: map[string]uint64{}, At: time.Date(2026, 11, 30, 14, 30, 0, 0, time.UTC)}
}

// Add commits one event on edge's stream and returns its record.
func (l *Ledger) Add(edge, id, typ string, body any) projection.Record {
	l.TB.Helper()
	b, err := protocol.NewBody(body)
	if err != nil {
		l.TB.Fatalf("encode %s: %v", typ, err)
	}
	l.Pos++
	l.seq[edge]++
	r := projection.Record{Pos: l.Pos, Record: protocol.Record{
		V: protocol.RecordVersion, Edge: edge, Epoch: protocol.Epoch{1}, Seq: l.seq[edge], Device: "till",
		ID: id, Type: typ, TS: l.At.UnixMilli(), EdgeTime: protocol.HLCFromTime(l.At), Body: []byte(b)}}
	l.Recs = append(l.Recs, r)
	return r
}

// Line is a line item of qty thousandths at price, with its amount filled.
func Line(sku string, qty, price, discount, tax int64) pos.Line {
	l := pos.Line{SKU: sku, Qty: qty, UnitPrice: price, Discount: discount, Tax: tax}
	ext, _ := l.Extended()
	l.Amount = ext - discount
	return l
}

// Txn is a transaction of store s1, terminal T1, paid by one tender with
// the given change, its totals filled.
func Txn(day, id, currency string, taxIncluded bool, discount int64, tender string, change int64, lines ...pos.Line) pos.Transaction {
	t := pos.Transaction{Store: "s1", Terminal: "T1", BusinessDay: day, Txn: id, Currency: currency,
		TaxIncluded: taxIncluded, Lines: lines, Discount: discount, Change: change}
	for _, l := range lines {
		t.Subtotal += l.Amount
		t.Tax += l.Tax
	}
	t.Total = t.Subtotal - t.Discount
	if !taxIncluded {
		t.Total += t.Tax
	}
	t.Tenders = []pos.Tender{{Type: tender, Amount: t.Total + change}}
	return t
}

// VoidOf is the void of sale t.
func VoidOf(t pos.Transaction, id string) pos.Void {
	net := append([]pos.Tender(nil), t.Tenders...)
	for i := range net {
		if net[i].Type == "cash" {
			net[i].Amount -= t.Change
		}
	}
	return pos.Void{Store: t.Store, Terminal: t.Terminal, BusinessDay: t.BusinessDay, Txn: id, VoidedTxn: t.Txn,
		Currency: t.Currency, Total: t.Total, Tenders: net}
}

// ReturnOf returns line i of sale t, refunded to its first tender.
func ReturnOf(t pos.Transaction, id string, i int) pos.Transaction {
	l := t.Lines[i]
	r := pos.Transaction{Store: t.Store, Terminal: t.Terminal, BusinessDay: t.BusinessDay, Txn: id, OriginalTxn: t.Txn,
		Currency: t.Currency, TaxIncluded: t.TaxIncluded, Lines: []pos.Line{l}, Subtotal: l.Amount, Tax: l.Tax, Total: l.Amount}
	if !r.TaxIncluded {
		r.Total += l.Tax
	}
	r.Tenders = []pos.Tender{{Type: t.Tenders[0].Type, Amount: r.Total}}
	return r
}

// ZOf is the Z report a till prints for the events of one till day.
func ZOf(tb testing.TB, k pos.TillKey, recs ...projection.Record) pos.TillClosed {
	tb.Helper()
	m := pos.TillTotals{}
	for _, r := range recs {
		m.Add(r.Type, r.Body)
	}
	z := m.Of(&pos.TillClosed{Store: k.Store, Terminal: k.Terminal, BusinessDay: k.BusinessDay, Currency: k.Currency})
	z.Net = z.Sales.Total - z.Returns.Total - z.Voids.Total
	if err := pos.Validate(pos.TypeTillClosed, MustBody(tb, z)); err != nil {
		tb.Fatalf("test Z report: %v", err)
	}
	return z
}

func MustBody(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := protocol.NewBody(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Fold folds recs into a new State, one batch.
func Fold(tb testing.TB, recs ...projection.Record) *projection.State {
	tb.Helper()
	s := projection.NewState()
	s.Apply(projection.Fold(s, Stores(tb), recs))
	return s
}

// Record is the record body would have, without committing it (for a Z
// report of events that arrive after it).
func (l *Ledger) Record(typ string, body any) projection.Record {
	l.TB.Helper()
	return projection.Record{Record: protocol.Record{Type: typ, Body: MustBody(l.TB, body)}}
}

// Random commits n random events of two stores (and one unknown),
// two terminals, three business days and two currencies: sales with and
// without change, tax included or not, returns, voids (of counted, voided
// and unknown sales), duplicates under new event ids, Z reports (whole,
// partial, reprinted, superseded, early), stock movements, telemetry with
// fractional values, and a body that breaks its schema.
func Random(tb testing.TB, seed uint64, n int) *Ledger {
	rng := rand.New(rand.NewPCG(seed, 1))
	l := New(tb)
	days := []string{"2026-11-23", "2026-11-29", Day}
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
		l.Add(edge, fmt.Sprintf("ev%d", l.Pos+1), typ, v)
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
		l.At = l.At.Add(time.Duration(rng.IntN(40*60)) * time.Second)
		edge := []string{"e1", "e2"}[rng.IntN(2)]
		switch p := rng.IntN(100); {
		case p < 35 || len(sales) == 0:
			var lines []pos.Line
			for j := rng.IntN(3); j >= 0; j-- {
				price := int64(50 + rng.IntN(900))
				lines = append(lines, Line([]string{"apple", "pear", "tea"}[rng.IntN(3)], int64(500+rng.IntN(3000)), price, int64(rng.IntN(10)), int64(rng.IntN(30))))
			}
			tender := []string{"cash", "card", "mobile"}[rng.IntN(3)]
			var change int64
			if rng.IntN(3) == 0 {
				change = int64(rng.IntN(500))
			}
			t := Txn(days[rng.IntN(len(days))], fmt.Sprintf("T%d", i), []string{"EUR", "USD"}[rng.IntN(2)], rng.IntN(2) == 0, 0, tender, change, lines...)
			t.Store = []string{"s1", "s2", "s1", "nowhere"}[rng.IntN(4)]
			t.Terminal = []string{"T1", "T2"}[rng.IntN(2)]
			sales = append(sales, t)
			send(edge, t)
		case p < 43:
			send(edge, sales[rng.IntN(len(sales))]) // a duplicate under a new event id
		case p < 50:
			s := sales[rng.IntN(len(sales))]
			v := VoidOf(s, fmt.Sprintf("V%d", i))
			if rng.IntN(5) == 0 {
				v.VoidedTxn = "never-sold"
			}
			send(edge, v)
		case p < 57:
			s := sales[rng.IntN(len(sales))]
			send(edge, ReturnOf(s, fmt.Sprintf("R%d", i), rng.IntN(len(s.Lines))))
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
				recs = append(recs, l.Record(typeOf(v), v))
			}
			l.Add(edge, fmt.Sprintf("z%d", i), pos.TypeTillClosed, ZOf(tb, k, recs...))
		case p < 80:
			sku := []string{"apple", "pear", "tea"}[rng.IntN(3)]
			if rng.IntN(3) == 0 {
				l.Add(edge, "cnt", pos.TypeInventoryCounted, pos.InventoryCounted{Store: "s1", SKU: sku, Qty: int64(rng.IntN(20000))})
			} else {
				l.Add(edge, "adj", pos.TypeInventoryAdjusted, pos.InventoryAdjusted{Store: "s2", SKU: sku, QtyDelta: int64(rng.IntN(5000)) - 2000, Reason: "received"})
			}
		case p < 98:
			l.Add(edge, "m", pos.TypeTelemetryReading, pos.TelemetryReading{Store: "s1", Sensor: "fridge", Metric: "temp", Value: rng.NormFloat64() * 3.7})
			l.At = l.At.Add(-time.Duration(rng.IntN(30*60)) * time.Second) // several readings a minute
		default:
			bad := sales[rng.IntN(len(sales))]
			bad.Total++
			l.Add(edge, "bad", pos.TypeSaleCompleted, bad)
		}
	}
	return l
}
