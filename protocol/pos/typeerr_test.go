package pos_test

import (
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/protocol/pos"
)

// A value of the wrong type inside lines or tenders is named exactly, with
// the value seen, and nothing of the decoder's internals.
func TestTypeErrorsNameTheExactField(t *testing.T) {
	cases := []struct {
		name, typ, from, to, want string
	}{
		{"price with cents as a float", pos.TypeSaleCompleted, `"unit_price":1290`, `"unit_price":12.9`, `lines[1].unit_price: must be an integer in minor units, got 12.9`},
		{"qty as a string", pos.TypeSaleCompleted, `"qty":3000`, `"qty":"3"`, `lines[0].qty: must be an integer in thousandths, got "3"`},
		{"tender amount as a string", pos.TypeSaleCompleted, `"type":"cash","amount":400`, `"type":"cash","amount":"4.00"`, `tenders[1].amount: must be an integer in minor units, got "4.00"`},
		{"tender type as a number", pos.TypeSaleCompleted, `"type":"card"`, `"type":1`, `tenders[0].type: must be a string, got 1`},
		{"a line not a map", pos.TypeSaleCompleted, `{"sku":"a","qty":3000,"unit_price":199,"tax":57,"amount":597}`, `"a"`, `lines[0]: must be a map, got "a"`},
		{"lines not an array", pos.TypeSaleCompleted, "LINES", `"lines":{"x":1}`, `lines: must be an array, got a map`},
		{"total as a float", pos.TypeSaleCompleted, `"total":863`, `"total":8.63`, `total: must be an integer in minor units, got 8.63`},
		{"tax_included not a boolean", pos.TypeSaleCompleted, `"currency":"EUR"`, `"currency":"EUR","tax_included":"yes"`, `tax_included: must be a boolean, got "yes"`},
		{"integer beyond int64", pos.TypeSaleCompleted, `"amount":597`, `"amount":9223372036854775808`, `lines[0].amount: must be an integer in minor units from -9223372036854775808 to 9223372036854775807, got 9223372036854775808`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := strings.Replace(sale, c.from, c.to, 1)
			if c.from == "LINES" { // the whole lines array
				i, k := strings.Index(sale, `"lines":`), strings.Index(sale, `"discount":100`)
				j = sale[:i] + c.to + "," + sale[k:]
			}
			if j == sale {
				t.Fatal("test did not change the sale")
			}
			err := pos.Validate(c.typ, body(t, j))
			if err == nil || err.Error() != c.want {
				t.Fatalf("got  %v\nwant %s", err, c.want)
			}
			for _, bad := range []string{"CBOR", "pos.", "cbor:", "primitives"} {
				if strings.Contains(err.Error(), bad) {
					t.Fatalf("%q leaks %q", err, bad)
				}
			}
		})
	}
}
