package pos_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/protocol/pos"
)

// A till day's totals from its sales, returns and voids, and the Z report
// that matches them.
func TestTillTotals(t *testing.T) {
	sums := pos.TillTotals{}
	ret := strings.Replace(strings.Replace(sale, `"txn":"t1-1"`, `"txn":"t1-2","original_txn":"t1-1"`, 1),
		`"tenders":[{"type":"card","amount":500},{"type":"cash","amount":400}],"change":37`, `"tenders":[{"type":"card","amount":863}]`, 1)
	void := `{"store":"s1","terminal":"t1","business_day":"2026-11-22","txn":"v-1","voided_txn":"t1-1","currency":"EUR","total":863,"tenders":[{"type":"card","amount":500},{"type":"cash","amount":363}]}`
	// Change with no cash tender is cash paid out of the drawer.
	cardOnly := strings.Replace(strings.Replace(sale, `"txn":"t1-1"`, `"txn":"t1-3"`, 1),
		`"tenders":[{"type":"card","amount":500},{"type":"cash","amount":400}],"change":37`, `"tenders":[{"type":"card","amount":900}],"change":37`, 1)
	for _, ev := range []struct {
		typ, body string
		counts    bool
	}{
		{pos.TypeSaleCompleted, sale, true},     // card 500, cash 400 − 37
		{pos.TypeSaleCompleted, sale, true},     // twice
		{pos.TypeReturnCompleted, ret, true},    // card −863
		{pos.TypeSaleVoided, void, true},        // card −500, cash −363
		{pos.TypeSaleCompleted, cardOnly, true}, // card 900, cash −37
		{pos.TypeInventoryAdjusted, `{"store":"s1","sku":"a","qty_delta":-2000,"reason":"damaged"}`, false},
		{pos.TypeSaleCompleted, `{"store":"s1"}`, false},
	} {
		if got := sums.Add(ev.typ, body(t, ev.body)); got != ev.counts {
			t.Fatalf("Add(%s, %.40s…) = %v, want %v", ev.typ, ev.body, got, ev.counts)
		}
	}
	z := pos.TillClosed{Store: "s1", Terminal: "t1", BusinessDay: "2026-11-22", Currency: "EUR",
		Sales: pos.Tally{Count: 3, Total: 3 * 863}, Returns: pos.Tally{Count: 1, Total: 863}, Voids: pos.Tally{Count: 1, Total: 863},
		Net: 863, Tenders: []pos.TenderTally{{Type: "card", Amount: 500 + 500 - 863 - 500 + 900}, {Type: "cash", Amount: 363 + 363 - 363 - 37}}}
	held := sums.Of(&z)
	if d := pos.Reconcile(&z, held); d != nil {
		t.Fatalf("a matching Z report differs: %v (held %+v)", d, held)
	}
	// The ledger's net is derived as a Z's is (sales − returns − voids), so
	// that what is served as the ledger's net of an open till is not 0.
	if held.Net != z.Net {
		t.Fatalf("held net %d, want sales − returns − voids = %d", held.Net, z.Net)
	}
	if len(sums) != 1 {
		t.Fatalf("%d till days, want 1: %+v", len(sums), sums)
	}

	// What a wrong Z report is told, and a till day with no events.
	bad := z
	bad.Sales.Count = 2
	bad.Tenders = []pos.TenderTally{{Type: "card", Amount: 1}}
	want := []string{
		"sales: the Z report says 2 for 2589, the ledger holds 3 for 2589",
		"tender card: the Z report says 1, the ledger adds up to 537",
		"tender cash: the ledger adds up to 326, which the Z report leaves out",
	}
	if d := pos.Reconcile(&bad, held); !reflect.DeepEqual(d, want) {
		t.Fatalf("differences\n%q\nwant\n%q", d, want)
	}
	other := z
	other.Terminal = "t2"
	if got := sums.Of(&other); got.Sales.Count != 0 || got.Terminal != "t2" || len(got.Tenders) != 0 {
		t.Fatalf("totals of a till day with no events: %+v", got)
	}
}
