package projection_test

import (
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// The stores of the tests: s1 in New York, s2 in Berlin.
func testStores(tb testing.TB) projection.StoreMap {
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

// ledger builds committed records in pos order, on two streams.
type ledger struct {
	tb   testing.TB
	pos  int64
	seq  map[string]uint64
	recs []projection.Record
	at   time.Time // the edge time of the next record
}

func newLedger(tb testing.TB) *ledger {
	return &ledger{tb: tb, seq: map[string]uint64{}, at: time.Date(2026, 11, 30, 14, 30, 0, 0, time.UTC)}
}

// add commits one event on edge's stream and returns its record.
func (l *ledger) add(edge, id, typ string, body any) projection.Record {
	l.tb.Helper()
	b, err := protocol.NewBody(body)
	if err != nil {
		l.tb.Fatalf("encode %s: %v", typ, err)
	}
	l.pos++
	l.seq[edge]++
	r := projection.Record{Pos: l.pos, Record: protocol.Record{
		V: protocol.RecordVersion, Edge: edge, Epoch: protocol.Epoch{1}, Seq: l.seq[edge], Device: "till",
		ID: id, Type: typ, TS: l.at.UnixMilli(), EdgeTime: protocol.HLCFromTime(l.at), Body: []byte(b)}}
	l.recs = append(l.recs, r)
	return r
}

// line is a line item of qty thousandths at price, with its amount filled.
func line(sku string, qty, price, discount, tax int64) pos.Line {
	l := pos.Line{SKU: sku, Qty: qty, UnitPrice: price, Discount: discount, Tax: tax}
	ext, _ := l.Extended()
	l.Amount = ext - discount
	return l
}

// txn is a transaction of store s1, terminal T1, paid by one tender with
// the given change, its totals filled.
func txn(day, id, currency string, taxIncluded bool, discount int64, tender string, change int64, lines ...pos.Line) pos.Transaction {
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

// voidOf is the void of sale t.
func voidOf(t pos.Transaction, id string) pos.Void {
	net := append([]pos.Tender(nil), t.Tenders...)
	for i := range net {
		if net[i].Type == "cash" {
			net[i].Amount -= t.Change
		}
	}
	return pos.Void{Store: t.Store, Terminal: t.Terminal, BusinessDay: t.BusinessDay, Txn: id, VoidedTxn: t.Txn,
		Currency: t.Currency, Total: t.Total, Tenders: net}
}

// returnOf returns line i of sale t, refunded to its first tender.
func returnOf(t pos.Transaction, id string, i int) pos.Transaction {
	l := t.Lines[i]
	r := pos.Transaction{Store: t.Store, Terminal: t.Terminal, BusinessDay: t.BusinessDay, Txn: id, OriginalTxn: t.Txn,
		Currency: t.Currency, TaxIncluded: t.TaxIncluded, Lines: []pos.Line{l}, Subtotal: l.Amount, Tax: l.Tax, Total: l.Amount}
	if !r.TaxIncluded {
		r.Total += l.Tax
	}
	r.Tenders = []pos.Tender{{Type: t.Tenders[0].Type, Amount: r.Total}}
	return r
}

// zOf is the Z report a till prints for the events of one till day.
func zOf(tb testing.TB, k pos.TillKey, recs ...projection.Record) pos.TillClosed {
	tb.Helper()
	m := pos.TillTotals{}
	for _, r := range recs {
		m.Add(r.Type, r.Body)
	}
	z := m.Of(&pos.TillClosed{Store: k.Store, Terminal: k.Terminal, BusinessDay: k.BusinessDay, Currency: k.Currency})
	z.Net = z.Sales.Total - z.Returns.Total - z.Voids.Total
	if err := pos.Validate(pos.TypeTillClosed, mustBody(tb, z)); err != nil {
		tb.Fatalf("test Z report: %v", err)
	}
	return z
}

func mustBody(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := protocol.NewBody(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// fold folds recs into a new State, one batch.
func fold(tb testing.TB, recs ...projection.Record) *projection.State {
	tb.Helper()
	s := projection.NewState()
	s.Apply(projection.Fold(s, testStores(tb), recs))
	return s
}

// record is the record body would have, without committing it (for a Z
// report of events that arrive after it).
func (l *ledger) record(typ string, body any) projection.Record {
	l.tb.Helper()
	return projection.Record{Record: protocol.Record{Type: typ, Body: mustBody(l.tb, body)}}
}
