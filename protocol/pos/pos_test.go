package pos_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

func body(t *testing.T, j string) []byte {
	t.Helper()
	b, err := protocol.NewBody(json.RawMessage(j))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const sale = `{"store":"s1","terminal":"t1","business_day":"2026-11-22","txn":"t1-1","currency":"EUR",
 "lines":[{"sku":"a","qty":3000,"unit_price":199,"tax":57,"amount":597},{"sku":"b","qty":250,"unit_price":1290,"discount":20,"tax":6,"amount":303}],
 "discount":100,"subtotal":900,"tax":63,"total":863,"tenders":[{"type":"card","amount":500},{"type":"cash","amount":400}],"change":37}`

func TestValid(t *testing.T) {
	for typ, j := range map[string]string{
		pos.TypeSaleCompleted:     sale,
		pos.TypeReturnCompleted:   strings.Replace(sale, `"txn":"t1-1"`, `"txn":"t1-2","original_txn":"t1-1"`, 1),
		pos.TypeSaleVoided:        `{"store":"s1","terminal":"t1","business_day":"2026-11-22","txn":"v-1","voided_txn":"t1-1","currency":"JPY","total":863,"tenders":[{"type":"card","amount":863}]}`,
		pos.TypeInventoryAdjusted: `{"store":"s1","sku":"a","qty_delta":-2000,"reason":"damaged"}`,
		pos.TypeInventoryCounted:  `{"store":"s1","sku":"a","qty":0}`,
		pos.TypeTelemetryReading:  `{"sensor":"f1","metric":"temp_c","value":3.25,"unit":"C"}`,
		pos.TypeTillClosed:        `{"store":"s1","terminal":"t1","business_day":"2026-11-22","currency":"EUR","sales":{"count":10,"total":10000},"returns":{"count":1,"total":500},"voids":{"count":1,"total":863},"net":8637,"tenders":[{"type":"cash","count":4,"amount":3637},{"type":"card","count":6,"amount":5000}]}`,
		"door.opened":             `{"anything":["goes"]}`,
	} {
		if err := pos.Validate(typ, body(t, j)); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
}

// Each arithmetic error names the field and the numbers.
func TestArithmeticErrors(t *testing.T) {
	cases := []struct {
		name, typ, from, to, field, numbers string
	}{
		{"line amount", pos.TypeSaleCompleted, `"amount":597`, `"amount":598`, "lines[0].amount", "is 598; want round(3000 × 199 / 1000) − 0 = 597"},
		{"subtotal", pos.TypeSaleCompleted, `"subtotal":900`, `"subtotal":901`, "subtotal", "is 901; the line amounts add up to 900"},
		{"tax", pos.TypeSaleCompleted, `"tax":63`, `"tax":64`, "tax", "is 64; the line taxes add up to 63"},
		{"total", pos.TypeSaleCompleted, `"total":863`, `"total":864`, "total", "is 864; want subtotal 900 − discount 100 + tax 63 = 863"},
		{"tenders", pos.TypeSaleCompleted, `"change":37`, `"change":36`, "tenders", "add up to 900; want total 863 + change 36 = 899"},
		{"currency", pos.TypeSaleCompleted, `"EUR"`, `"EURO"`, "currency", `"EURO" is not an ISO 4217 code`},
		{"qty", pos.TypeSaleCompleted, `"qty":3000`, `"qty":0`, "lines[0].qty", "is 0"},
		{"type mismatch", pos.TypeSaleCompleted, `"qty":3000`, `"qty":"3"`, "lines[0].qty", "must be an integer in thousandths"},
		{"day", pos.TypeSaleCompleted, `"2026-11-22"`, `"22/11/2026"`, "business_day", "not a date"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := strings.Replace(sale, c.from, c.to, 1)
			err := pos.Validate(c.typ, body(t, j))
			pe, ok := err.(*pos.Error)
			if !ok {
				t.Fatalf("want *pos.Error, got %v", err)
			}
			if pe.Field != c.field || !strings.Contains(pe.Msg, c.numbers) {
				t.Fatalf("got %q, want field %q with %q", err, c.field, c.numbers)
			}
		})
	}
	z := `{"store":"s1","terminal":"t1","business_day":"2026-11-22","currency":"EUR","sales":{"count":1,"total":100},"returns":{"count":0,"total":0},"voids":{"count":0,"total":0},"net":100,"tenders":[{"type":"cash","count":1,"amount":90}]}`
	if err := pos.Validate(pos.TypeTillClosed, body(t, z)); err == nil || !strings.Contains(err.Error(), "tenders: add up to 90; want net 100") {
		t.Fatalf("Z report tender mismatch: %v", err)
	}
	if err := pos.Validate(pos.TypeSaleCompleted, nil); err == nil {
		t.Fatal("sale without body accepted")
	}
}

func TestExtendedRounding(t *testing.T) {
	for _, c := range []struct{ qty, price, want int64 }{
		{1000, 199, 199}, {1450, 199, 289}, {1, 499, 0}, {1, 500, 1}, {333, 3, 1}, {9_000_000_000, 1_000_000_000, 9_000_000_000_000_000},
	} {
		l := pos.Line{Qty: c.qty, UnitPrice: c.price}
		if got, ok := l.Extended(); !ok || got != c.want {
			t.Errorf("%d × %d / 1000 = %d (%v), want %d", c.qty, c.price, got, ok, c.want)
		}
	}
	l := pos.Line{Qty: 1 << 62, UnitPrice: 1 << 20}
	if _, ok := l.Extended(); ok {
		t.Error("overflow not reported")
	}
}

// A NUL in any text value is refused, naming the value: no Postgres text
// column can hold one (see checkNoNUL).
func TestNULRefused(t *testing.T) {
	for _, c := range []struct{ typ, j, field string }{
		{pos.TypeSaleCompleted, strings.Replace(sale, `"sku":"b"`, `"sku":"b\u0000"`, 1), "lines[1].sku"},
		{pos.TypeSaleCompleted, strings.Replace(sale, `"terminal":"t1"`, `"terminal":"\u0000t1"`, 1), "terminal"},
		{pos.TypeSaleCompleted, strings.Replace(sale, `"type":"card"`, `"type":"ca\u0000rd"`, 1), "tenders[0].type"},
		{pos.TypeTelemetryReading, `{"sensor":"f1","metric":"temp_c","value":3.25,"unit":"\u0000"}`, "unit"},
		{pos.TypeInventoryAdjusted, `{"store":"s1","sku":"a","qty_delta":-2000,"reason":"dam\u0000aged"}`, "reason"},
	} {
		err := pos.Validate(c.typ, body(t, c.j))
		if err == nil || !strings.Contains(err.Error(), c.field) || !strings.Contains(err.Error(), "NUL") {
			t.Errorf("%s with a NUL in %s: %v", c.typ, c.field, err)
		}
	}
}
