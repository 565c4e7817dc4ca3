// Package pos holds the schemas of the point-of-sale event bodies Outpost
// understands, named after ARTS POSLog terms (retail transaction, line item,
// tender, tax, discount, business day, workstation), and checks that their
// arithmetic adds up.
//
// Money is an int64 in the currency's minor units (cents) with an ISO 4217
// code; quantities are int64 thousandths (1500 is 1.5 kg or 1.5 units). No
// floats for money anywhere. A mismatch is an *Error naming the field and the
// numbers, so a till developer can see what their till got wrong.
//
// TillTotals folds sales, returns and voids into the per-till totals a Z
// report (till.closed) must match, and Reconcile says how a report differs:
// the one arithmetic the end-to-end verifier and the cloud's reconciliation
// share.
//
// Event types outside this package are valid with an opaque body: the ledger
// is extensible, and projections ignore what they do not know.
package pos

import (
	"fmt"
	"math/bits"
	"reflect"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Event types with a schema here.
const (
	TypeSaleCompleted     = "sale.completed"
	TypeSaleVoided        = "sale.voided"
	TypeReturnCompleted   = "return.completed"
	TypeInventoryAdjusted = "inventory.adjusted"
	TypeInventoryCounted  = "inventory.counted"
	TypeTelemetryReading  = "telemetry.reading"
	TypeTillClosed        = "till.closed"
)

// Error is a body that breaks its schema: Field is a path inside the body
// ("lines[1].amount"), Msg the rule and the numbers.
type Error struct {
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func errf(field, format string, args ...any) *Error {
	return &Error{Field: field, Msg: fmt.Sprintf(format, args...)}
}

var dec cbor.DecMode

func init() {
	var err error
	dec, err = cbor.DecOptions{
		DupMapKey:   cbor.DupMapKeyEnforcedAPF,
		IndefLength: cbor.IndefLengthForbidden,
		TagsMd:      cbor.TagsForbidden,
		// Unknown fields are kept in the ledger and ignored here, so tills
		// can send more than this schema names.
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Validate checks body (canonical CBOR, or empty) against the schema of typ.
// Types without a schema here are valid with any body.
func Validate(typ string, body []byte) error {
	var v interface{ validate() error }
	switch typ {
	case TypeSaleCompleted, TypeReturnCompleted:
		v = new(Transaction)
	case TypeSaleVoided:
		v = new(Void)
	case TypeInventoryAdjusted:
		v = new(InventoryAdjusted)
	case TypeInventoryCounted:
		v = new(InventoryCounted)
	case TypeTelemetryReading:
		v = new(TelemetryReading)
	case TypeTillClosed:
		v = new(TillClosed)
	default:
		return nil
	}
	if len(body) == 0 {
		return errf("", "a %s event needs a body", typ)
	}
	if err := dec.Unmarshal(body, v); err != nil {
		return decodeError(err, body, v)
	}
	if err := checkNoNUL("", reflect.ValueOf(v).Elem()); err != nil {
		return err
	}
	return v.validate()
}

// Decode decodes a body of a known type into its struct (one of the types in
// this package) and validates it.
func Decode(typ string, body []byte, v any) error {
	if err := dec.Unmarshal(body, v); err != nil {
		return decodeError(err, body, v)
	}
	if err := checkNoNUL("", reflect.ValueOf(v).Elem()); err != nil {
		return err
	}
	if vv, ok := v.(interface{ validate() error }); ok {
		return vv.validate()
	}
	return nil
}

// decodeError names the exact field a failed decode of body into v was
// about (typeError), or failing that the outermost one.
func decodeError(err error, body []byte, v any) error {
	if e := typeError(body, v); e != nil {
		return e
	}
	if te, ok := err.(*cbor.UnmarshalTypeError); ok {
		// StructFieldName is "pos.Type.field": keep the field.
		f := te.StructFieldName
		if i := strings.Index(f, "."); i >= 0 {
			if j := strings.Index(f[i+1:], "."); j >= 0 {
				f = f[i+1+j+1:]
			}
		}
		return errf(f, "must be %s", goKind(te.GoType))
	}
	return errf("", "%s", strings.TrimPrefix(err.Error(), "cbor: "))
}

func goKind(t string) string {
	switch t {
	case "int64":
		return "an integer"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "float64":
		return "a number"
	}
	if strings.HasPrefix(t, "[]") {
		return "an array"
	}
	return "a map"
}

// Line is one sale or return line item.
type Line struct {
	SKU         string `cbor:"sku" json:"sku"`
	Description string `cbor:"description,omitempty" json:"description,omitempty"`
	Qty         int64  `cbor:"qty" json:"qty"`                               // thousandths of a unit
	UnitPrice   int64  `cbor:"unit_price" json:"unit_price"`                 // minor units per whole unit
	Discount    int64  `cbor:"discount,omitempty" json:"discount,omitempty"` // minor units off this line
	Tax         int64  `cbor:"tax" json:"tax"`                               // minor units of tax on this line
	Amount      int64  `cbor:"amount" json:"amount"`                         // extended price less discount
}

// Extended returns qty × unit_price / 1000, rounded half away from zero, and
// false on overflow.
func (l *Line) Extended() (int64, bool) { return mulDivRound(l.Qty, l.UnitPrice, 1000) }

// Tender is one means of payment (or refund) and its amount.
type Tender struct {
	Type   string `cbor:"type" json:"type"` // cash, card, voucher, mobile, other
	Amount int64  `cbor:"amount" json:"amount"`
}

// TenderTypes are the tender types a till may use.
var TenderTypes = []string{"cash", "card", "voucher", "mobile", "other"}

// Transaction is the body of sale.completed and of return.completed (ARTS:
// a RetailTransaction with Sale or Return line items).
//
//	lines[i].amount = round(qty × unit_price / 1000) − lines[i].discount
//	subtotal        = Σ lines[i].amount
//	tax             = Σ lines[i].tax
//	total           = subtotal − discount + tax   (tax is already inside
//	                                               the prices when tax_included)
//	Σ tenders       = total + change
type Transaction struct {
	Store       string   `cbor:"store" json:"store"`
	Terminal    string   `cbor:"terminal" json:"terminal"`         // ARTS WorkstationID
	BusinessDay string   `cbor:"business_day" json:"business_day"` // YYYY-MM-DD
	Txn         string   `cbor:"txn" json:"txn"`                   // ARTS TransactionID
	OriginalTxn string   `cbor:"original_txn,omitempty" json:"original_txn,omitempty"`
	Operator    string   `cbor:"operator,omitempty" json:"operator,omitempty"`
	Currency    string   `cbor:"currency" json:"currency"`
	TaxIncluded bool     `cbor:"tax_included,omitempty" json:"tax_included,omitempty"`
	Lines       []Line   `cbor:"lines" json:"lines"`
	Discount    int64    `cbor:"discount,omitempty" json:"discount,omitempty"` // transaction-level
	Subtotal    int64    `cbor:"subtotal" json:"subtotal"`
	Tax         int64    `cbor:"tax" json:"tax"`
	Total       int64    `cbor:"total" json:"total"`
	Tenders     []Tender `cbor:"tenders" json:"tenders"`
	Change      int64    `cbor:"change,omitempty" json:"change,omitempty"`
}

func (t *Transaction) validate() error {
	if err := checkHeader(t.Store, t.Terminal, t.BusinessDay, t.Currency); err != nil {
		return err
	}
	if err := checkText("txn", t.Txn, true); err != nil {
		return err
	}
	if len(t.Lines) == 0 {
		return errf("lines", "is empty; a transaction has at least one line")
	}
	var sub, tax int64
	for i := range t.Lines {
		l := &t.Lines[i]
		p := fmt.Sprintf("lines[%d]", i)
		if err := checkText(p+".sku", l.SKU, true); err != nil {
			return err
		}
		if l.Qty <= 0 {
			return errf(p+".qty", "is %d; want a positive quantity in thousandths (1000 = 1 unit)", l.Qty)
		}
		if l.UnitPrice < 0 || l.Discount < 0 || l.Tax < 0 {
			return errf(p, "unit_price %d, discount %d and tax %d must not be negative", l.UnitPrice, l.Discount, l.Tax)
		}
		ext, ok := l.Extended()
		if !ok {
			return errf(p, "qty %d × unit_price %d overflows", l.Qty, l.UnitPrice)
		}
		if l.Discount > ext {
			return errf(p+".discount", "%d is more than the extended price %d", l.Discount, ext)
		}
		if want := ext - l.Discount; l.Amount != want {
			return errf(p+".amount", "is %d; want round(%d × %d / 1000) − %d = %d", l.Amount, l.Qty, l.UnitPrice, l.Discount, want)
		}
		if sub, ok = add(sub, l.Amount); !ok {
			return errf("subtotal", "overflows")
		}
		if tax, ok = add(tax, l.Tax); !ok {
			return errf("tax", "overflows")
		}
	}
	if t.Subtotal != sub {
		return errf("subtotal", "is %d; the line amounts add up to %d", t.Subtotal, sub)
	}
	if t.Tax != tax {
		return errf("tax", "is %d; the line taxes add up to %d", t.Tax, tax)
	}
	if t.Discount < 0 || t.Discount > sub {
		return errf("discount", "is %d; want 0 to the subtotal %d", t.Discount, sub)
	}
	want := sub - t.Discount
	if !t.TaxIncluded {
		want += tax
	}
	if t.Total != want {
		if t.TaxIncluded {
			return errf("total", "is %d; want subtotal %d − discount %d = %d (tax_included)", t.Total, sub, t.Discount, want)
		}
		return errf("total", "is %d; want subtotal %d − discount %d + tax %d = %d", t.Total, sub, t.Discount, tax, want)
	}
	return checkTenders(t.Tenders, t.Total, t.Change)
}

// Void is the body of sale.voided: a completed transaction cancelled at the
// till, whose tenders are given back.
type Void struct {
	Store       string   `cbor:"store" json:"store"`
	Terminal    string   `cbor:"terminal" json:"terminal"`
	BusinessDay string   `cbor:"business_day" json:"business_day"`
	Txn         string   `cbor:"txn" json:"txn"`               // this void's own id
	VoidedTxn   string   `cbor:"voided_txn" json:"voided_txn"` // the sale it cancels
	Reason      string   `cbor:"reason,omitempty" json:"reason,omitempty"`
	Currency    string   `cbor:"currency" json:"currency"`
	Total       int64    `cbor:"total" json:"total"` // the voided sale's total
	Tenders     []Tender `cbor:"tenders" json:"tenders"`
}

func (v *Void) validate() error {
	if err := checkHeader(v.Store, v.Terminal, v.BusinessDay, v.Currency); err != nil {
		return err
	}
	if err := checkText("txn", v.Txn, true); err != nil {
		return err
	}
	if err := checkText("voided_txn", v.VoidedTxn, true); err != nil {
		return err
	}
	if v.Total < 0 {
		return errf("total", "is %d; want the voided sale's total, not negative", v.Total)
	}
	return checkTenders(v.Tenders, v.Total, 0)
}

// Inventory adjustment reasons.
var AdjustReasons = []string{"received", "damaged", "shrink", "correction", "transfer_in", "transfer_out", "other"}

// InventoryAdjusted is a change to stock on hand outside a sale.
type InventoryAdjusted struct {
	Store    string `cbor:"store" json:"store"`
	SKU      string `cbor:"sku" json:"sku"`
	QtyDelta int64  `cbor:"qty_delta" json:"qty_delta"` // thousandths, signed
	Reason   string `cbor:"reason" json:"reason"`
}

func (a *InventoryAdjusted) validate() error {
	if err := checkText("store", a.Store, true); err != nil {
		return err
	}
	if err := checkText("sku", a.SKU, true); err != nil {
		return err
	}
	if a.QtyDelta == 0 {
		return errf("qty_delta", "is 0; an adjustment changes stock")
	}
	if !oneOf(a.Reason, AdjustReasons) {
		return errf("reason", "%q is not one of %v", a.Reason, AdjustReasons)
	}
	return nil
}

// InventoryCounted is a stock count: it sets stock on hand.
type InventoryCounted struct {
	Store string `cbor:"store" json:"store"`
	SKU   string `cbor:"sku" json:"sku"`
	Qty   int64  `cbor:"qty" json:"qty"` // thousandths
}

func (c *InventoryCounted) validate() error {
	if err := checkText("store", c.Store, true); err != nil {
		return err
	}
	if err := checkText("sku", c.SKU, true); err != nil {
		return err
	}
	if c.Qty < 0 {
		return errf("qty", "is %d; a count is not negative", c.Qty)
	}
	return nil
}

// TelemetryReading is one sensor reading. Its value is a measurement, not
// money, so it may be fractional.
type TelemetryReading struct {
	Store  string  `cbor:"store,omitempty" json:"store,omitempty"`
	Sensor string  `cbor:"sensor" json:"sensor"`
	Metric string  `cbor:"metric" json:"metric"`
	Value  float64 `cbor:"value" json:"value"`
	Unit   string  `cbor:"unit,omitempty" json:"unit,omitempty"`
}

func (r *TelemetryReading) validate() error {
	if err := checkText("sensor", r.Sensor, true); err != nil {
		return err
	}
	return checkText("metric", r.Metric, true)
}

// Tally is a count of transactions and their total.
type Tally struct {
	Count int64 `cbor:"count" json:"count"`
	Total int64 `cbor:"total" json:"total"`
}

// TenderTally is the net amount a till took in one tender type.
type TenderTally struct {
	Type   string `cbor:"type" json:"type"`
	Count  int64  `cbor:"count" json:"count"`
	Amount int64  `cbor:"amount" json:"amount"`
}

// TillClosed is the Z report a till prints when it closes a business day.
//
//	net = sales.total − returns.total − voids.total
//	Σ tenders[i].amount = net
//
// Tender amounts are net of change (change comes out of cash) and of refunds.
type TillClosed struct {
	Store       string        `cbor:"store" json:"store"`
	Terminal    string        `cbor:"terminal" json:"terminal"`
	BusinessDay string        `cbor:"business_day" json:"business_day"`
	Currency    string        `cbor:"currency" json:"currency"`
	Sales       Tally         `cbor:"sales" json:"sales"`
	Returns     Tally         `cbor:"returns" json:"returns"`
	Voids       Tally         `cbor:"voids" json:"voids"`
	Net         int64         `cbor:"net" json:"net"`
	Tenders     []TenderTally `cbor:"tenders" json:"tenders"`
}

func (z *TillClosed) validate() error {
	if err := checkHeader(z.Store, z.Terminal, z.BusinessDay, z.Currency); err != nil {
		return err
	}
	for name, t := range map[string]Tally{"sales": z.Sales, "returns": z.Returns, "voids": z.Voids} {
		if t.Count < 0 || t.Total < 0 {
			return errf(name, "count %d and total %d must not be negative", t.Count, t.Total)
		}
	}
	want, ok := add(z.Sales.Total, -z.Returns.Total)
	if ok {
		want, ok = add(want, -z.Voids.Total)
	}
	if !ok {
		return errf("net", "overflows")
	}
	if z.Net != want {
		return errf("net", "is %d; want sales %d − returns %d − voids %d = %d", z.Net, z.Sales.Total, z.Returns.Total, z.Voids.Total, want)
	}
	var sum int64
	seen := map[string]bool{}
	for i, t := range z.Tenders {
		p := fmt.Sprintf("tenders[%d]", i)
		if !oneOf(t.Type, TenderTypes) {
			return errf(p+".type", "%q is not one of %v", t.Type, TenderTypes)
		}
		if seen[t.Type] {
			return errf(p+".type", "%q appears twice; a Z report has one line per tender type", t.Type)
		}
		seen[t.Type] = true
		if t.Count < 0 {
			return errf(p+".count", "is %d; must not be negative", t.Count)
		}
		if sum, ok = add(sum, t.Amount); !ok {
			return errf("tenders", "overflow")
		}
	}
	if sum != z.Net {
		return errf("tenders", "add up to %d; want net %d", sum, z.Net)
	}
	return nil
}

func checkHeader(store, terminal, day, currency string) error {
	if err := checkText("store", store, true); err != nil {
		return err
	}
	if err := checkText("terminal", terminal, true); err != nil {
		return err
	}
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		return errf("business_day", "%q is not a date YYYY-MM-DD", day)
	}
	if !ValidCurrency(currency) {
		return errf("currency", "%q is not an ISO 4217 code such as \"EUR\" or \"USD\"", currency)
	}
	return nil
}

func checkTenders(ts []Tender, total, change int64) error {
	if len(ts) == 0 {
		return errf("tenders", "is empty; say how it was paid")
	}
	if change < 0 {
		return errf("change", "is %d; must not be negative", change)
	}
	var sum int64
	var ok bool
	for i, t := range ts {
		p := fmt.Sprintf("tenders[%d]", i)
		if !oneOf(t.Type, TenderTypes) {
			return errf(p+".type", "%q is not one of %v", t.Type, TenderTypes)
		}
		if t.Amount <= 0 {
			return errf(p+".amount", "is %d; want a positive amount", t.Amount)
		}
		if sum, ok = add(sum, t.Amount); !ok {
			return errf("tenders", "overflow")
		}
	}
	if want, _ := add(total, change); sum != want {
		if change != 0 {
			return errf("tenders", "add up to %d; want total %d + change %d = %d", sum, total, change, want)
		}
		return errf("tenders", "add up to %d; want total %d", sum, total)
	}
	return nil
}

func checkText(field, s string, required bool) error {
	if s == "" {
		if required {
			return errf(field, "is required")
		}
		return nil
	}
	if len(s) > 128 {
		return errf(field, "is %d bytes; the limit is 128", len(s))
	}
	return nil
}

func oneOf(s string, set []string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}

// add returns a+b and false on overflow.
func add(a, b int64) (int64, bool) {
	s := a + b
	if (s > a) != (b > 0) {
		return s, false
	}
	return s, true
}

// mulDivRound returns a×b/d rounded half away from zero, for a ≥ 0, b ≥ 0,
// d > 0, and false when the result does not fit an int64.
func mulDivRound(a, b, d int64) (int64, bool) {
	if a < 0 || b < 0 {
		return 0, false
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	lo, carry := bits.Add64(lo, uint64(d/2), 0)
	hi += carry
	if hi >= uint64(d) {
		return 0, false
	}
	q, _ := bits.Div64(hi, lo, uint64(d))
	if q > 1<<63-1 {
		return 0, false
	}
	return int64(q), true
}
