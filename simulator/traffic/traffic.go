// Package traffic makes the point-of-sale traffic of simulated devices:
// tills that ring up sales with several lines from a catalog, discounts,
// tax and mixed tenders, void some and take returns, receive stock, and
// close the day with a Z report (till.closed) whose totals are exactly what
// the till sent; scales that weigh and label goods and adjust and count
// stock; and sensors that report readings.
//
// A Device is deterministic: the same Options (seed, store, device, kind)
// give the same sequence of events, bodies and ids. Only the timestamps
// come from the clock passed in, plus the device's clock skew. Every event
// passes protocol.Event.Validate, including the arithmetic of package pos.
//
// Event ids are "<device>-<n>" with n counting from 1, so (device, id) is
// unique per device, and a retransmit resends the same id.
package traffic

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// Kind is what a device is.
type Kind string

const (
	Till   Kind = "till"   // sales, voids, returns, stock received, Z report
	Scale  Kind = "scale"  // weighed labels, stock adjustments and counts
	Sensor Kind = "sensor" // telemetry readings
)

// TypeScaleWeighed is the scale's label event. It has no schema in package
// pos: the ledger keeps types it does not know with their body as sent.
const TypeScaleWeighed = "scale.weighed"

// Options describe one device.
type Options struct {
	Seed        uint64
	Store       string
	Device      string
	Kind        Kind
	Currency    string // ISO 4217; default EUR
	TaxIncluded bool   // prices include tax (EU style); else tax is added (US style)
	BusinessDay string // YYYY-MM-DD; default the UTC date of the first event
	Skew        time.Duration
	// DuplicateTxn is the share of a till's events that send one of its
	// recent sales again, the same body under a new event id: the retry
	// of a POS that mints a new id each time (the Odoo failure). The
	// till's own totals count the sale once, as its Z report does; the
	// cloud must not count it twice.
	DuplicateTxn float64
}

// Device makes one device's events. It is not safe for concurrent use.
type Device struct {
	o     Options
	rng   *rand.Rand
	n     int
	till  *tillState
	sense sensorState
	done  bool
}

// New returns the device o describes.
func New(o Options) *Device {
	if o.Currency == "" {
		o.Currency = "EUR"
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%s/%s", o.Store, o.Device, o.Kind)
	d := &Device{o: o, rng: rand.New(rand.NewPCG(o.Seed, h.Sum64()))}
	if o.Kind == Till {
		d.till = &tillState{tenders: map[string]*pos.TenderTally{}}
	}
	d.sense.values = map[string]float64{}
	return d
}

// ID returns the device id.
func (d *Device) ID() string { return d.o.Device }

// Kind returns the device's kind.
func (d *Device) Kind() Kind { return d.o.Kind }

// Skew returns how far the device's clock is off.
func (d *Device) Skew() time.Duration { return d.o.Skew }

// Count returns how many events the device has made.
func (d *Device) Count() int { return d.n }

func (d *Device) event(now time.Time, typ string, body any) protocol.Event {
	d.n++
	b, err := protocol.NewBody(body)
	if err != nil {
		panic(fmt.Sprintf("traffic: %s body: %v", typ, err)) // our own bodies always encode
	}
	if d.o.BusinessDay == "" {
		d.o.BusinessDay = now.UTC().Format(time.DateOnly)
	}
	return protocol.Event{
		ID:   fmt.Sprintf("%s-%d", d.o.Device, d.n),
		Type: typ,
		TS:   now.Add(d.o.Skew).UTC().Truncate(time.Millisecond),
		Body: b,
	}
}

// Next returns the device's next event, stamped with its clock at now.
func (d *Device) Next(now time.Time) protocol.Event {
	if d.o.BusinessDay == "" {
		d.o.BusinessDay = now.UTC().Format(time.DateOnly)
	}
	switch d.o.Kind {
	case Till:
		return d.nextTill(now)
	case Scale:
		return d.nextScale(now)
	default:
		return d.nextSensor(now)
	}
}

// Close returns the till's end-of-day Z report (till.closed) with the true
// totals of everything Next made, once; false for other kinds, or when it
// was made already.
func (d *Device) Close(now time.Time) (protocol.Event, bool) {
	if d.till == nil || d.done {
		return protocol.Event{}, false
	}
	d.done = true
	return d.event(now, pos.TypeTillClosed, d.Totals()), true
}

// Totals returns the till's Z report as it stands.
func (d *Device) Totals() pos.TillClosed {
	z := pos.TillClosed{Store: d.o.Store, Terminal: d.o.Device, BusinessDay: d.o.BusinessDay, Currency: d.o.Currency, Tenders: []pos.TenderTally{}}
	if d.till == nil {
		return z
	}
	t := d.till
	z.Sales, z.Returns, z.Voids = t.sales, t.returns, t.voids
	z.Net = t.sales.Total - t.returns.Total - t.voids.Total
	for _, typ := range pos.TenderTypes {
		if tt, ok := t.tenders[typ]; ok {
			z.Tenders = append(z.Tenders, *tt)
		}
	}
	return z
}

// tillState is what a till remembers for its voids, returns and Z report.
type tillState struct {
	txn                   int
	sales, returns, voids pos.Tally
	tenders               map[string]*pos.TenderTally
	recent                []*sale // the last sales, for voids and returns
}

type sale struct {
	t        pos.Transaction
	net      []pos.Tender // tenders net of change
	voided   bool
	returned []bool // per line
}

func (t *tillState) tally(typ string, amount int64) {
	tt, ok := t.tenders[typ]
	if !ok {
		tt = &pos.TenderTally{Type: typ}
		t.tenders[typ] = tt
	}
	tt.Count++
	tt.Amount += amount
}

func (d *Device) txnID() string {
	d.till.txn++
	return fmt.Sprintf("%s-%s-%05d", d.o.BusinessDay, d.o.Device, d.till.txn)
}

func (d *Device) nextTill(now time.Time) protocol.Event {
	// Drawn only when asked for, so that the traffic without duplicates
	// stays what it was for a seed.
	if d.o.DuplicateTxn > 0 && len(d.till.recent) > 0 && d.rng.Float64() < d.o.DuplicateTxn {
		s := d.till.recent[d.rng.IntN(len(d.till.recent))]
		return d.event(now, pos.TypeSaleCompleted, s.t)
	}
	r := d.rng.IntN(100)
	switch {
	case r < 6:
		if s := d.pickSale(func(s *sale) bool { return !s.voided && !slices.Contains(s.returned, true) }); s != nil {
			return d.void(now, s)
		}
	case r < 12:
		if s := d.pickSale(func(s *sale) bool { return !s.voided && slices.Contains(s.returned, false) }); s != nil {
			return d.refund(now, s)
		}
	case r < 17:
		it := Catalog[d.rng.IntN(len(Catalog))]
		qty := int64(6+d.rng.IntN(19)) * 1000
		reason := "received"
		if d.rng.IntN(4) == 0 {
			reason, qty = "correction", -int64(1+d.rng.IntN(3))*1000
		}
		return d.event(now, pos.TypeInventoryAdjusted, pos.InventoryAdjusted{Store: d.o.Store, SKU: it.SKU, QtyDelta: qty, Reason: reason})
	}
	return d.sell(now)
}

func (d *Device) pickSale(ok func(*sale) bool) *sale {
	var cands []*sale
	for _, s := range d.till.recent {
		if ok(s) {
			cands = append(cands, s)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[d.rng.IntN(len(cands))]
}

// mulDivRound returns a×b/c rounded half up, for non-negative a, b and
// positive c small enough not to overflow.
func mulDivRound(a, b, c int64) int64 { return (a*b + c/2) / c }

func (d *Device) line(it Item) pos.Line {
	l := pos.Line{SKU: it.SKU, Description: it.Description, UnitPrice: it.UnitPrice}
	if it.Weighed {
		l.Qty = int64(150 + d.rng.IntN(1850)) // 0.150 to 2 kg
	} else {
		l.Qty = int64(1+d.rng.IntN(3)) * 1000
	}
	ext, _ := l.Extended()
	if d.rng.IntN(8) == 0 {
		l.Discount = ext * int64(5+d.rng.IntN(16)) / 100 // 5 to 20% off
	}
	l.Amount = ext - l.Discount
	if d.o.TaxIncluded {
		l.Tax = mulDivRound(l.Amount, it.TaxRate, 10000+it.TaxRate)
	} else {
		l.Tax = mulDivRound(l.Amount, it.TaxRate, 10000)
	}
	return l
}

func (d *Device) sell(now time.Time) protocol.Event {
	t := pos.Transaction{Store: d.o.Store, Terminal: d.o.Device, BusinessDay: d.o.BusinessDay, Txn: d.txnID(),
		Operator: fmt.Sprintf("op-%d", 1+d.rng.IntN(4)), Currency: d.o.Currency, TaxIncluded: d.o.TaxIncluded}
	for n := 1 + d.rng.IntN(5); n > 0; n-- {
		l := d.line(Catalog[d.rng.IntN(len(Catalog))])
		t.Lines = append(t.Lines, l)
		t.Subtotal += l.Amount
		t.Tax += l.Tax
	}
	if d.rng.IntN(20) == 0 { // a coupon off the whole basket
		t.Discount = min(500, t.Subtotal/10)
	}
	t.Total = t.Subtotal - t.Discount
	if !t.TaxIncluded {
		t.Total += t.Tax
	}
	var net []pos.Tender
	switch r := d.rng.IntN(100); {
	case r < 45:
		t.Tenders = []pos.Tender{{Type: "card", Amount: t.Total}}
	case r < 75:
		paid := (t.Total + 499) / 500 * 500 // the next note up
		t.Tenders = []pos.Tender{{Type: "cash", Amount: paid}}
		t.Change = paid - t.Total
		net = []pos.Tender{{Type: "cash", Amount: t.Total}}
	case r < 85:
		t.Tenders = []pos.Tender{{Type: "mobile", Amount: t.Total}}
	default:
		v := min(1000, t.Total/2)
		if v < 1 {
			t.Tenders = []pos.Tender{{Type: "card", Amount: t.Total}}
		} else {
			t.Tenders = []pos.Tender{{Type: "voucher", Amount: v}, {Type: "card", Amount: t.Total - v}}
		}
	}
	if net == nil {
		net = t.Tenders
	}
	ts := d.till
	ts.sales.Count++
	ts.sales.Total += t.Total
	for _, tn := range net {
		ts.tally(tn.Type, tn.Amount)
	}
	ts.recent = append(ts.recent, &sale{t: t, net: net, returned: make([]bool, len(t.Lines))})
	if len(ts.recent) > 30 {
		ts.recent = ts.recent[1:]
	}
	return d.event(now, pos.TypeSaleCompleted, t)
}

func (d *Device) void(now time.Time, s *sale) protocol.Event {
	s.voided = true
	v := pos.Void{Store: d.o.Store, Terminal: d.o.Device, BusinessDay: d.o.BusinessDay, Txn: d.txnID(),
		VoidedTxn: s.t.Txn, Reason: "customer changed mind", Currency: d.o.Currency, Total: s.t.Total, Tenders: s.net}
	ts := d.till
	ts.voids.Count++
	ts.voids.Total += v.Total
	for _, tn := range v.Tenders {
		ts.tally(tn.Type, -tn.Amount)
	}
	return d.event(now, pos.TypeSaleVoided, v)
}

func (d *Device) refund(now time.Time, s *sale) protocol.Event {
	var idx []int
	for i, done := range s.returned {
		if !done {
			idx = append(idx, i)
		}
	}
	i := idx[d.rng.IntN(len(idx))]
	s.returned[i] = true
	l := s.t.Lines[i]
	t := pos.Transaction{Store: d.o.Store, Terminal: d.o.Device, BusinessDay: d.o.BusinessDay, Txn: d.txnID(),
		OriginalTxn: s.t.Txn, Currency: d.o.Currency, TaxIncluded: d.o.TaxIncluded,
		Lines: []pos.Line{l}, Subtotal: l.Amount, Tax: l.Tax, Total: l.Amount}
	if !t.TaxIncluded {
		t.Total += l.Tax
	}
	t.Tenders = []pos.Tender{{Type: s.net[len(s.net)-1].Type, Amount: t.Total}}
	ts := d.till
	ts.returns.Count++
	ts.returns.Total += t.Total
	ts.tally(t.Tenders[0].Type, -t.Total)
	return d.event(now, pos.TypeReturnCompleted, t)
}

// scaleLabel is the body of a scale.weighed event.
type scaleLabel struct {
	Store       string `json:"store"`
	Scale       string `json:"scale"`
	SKU         string `json:"sku"`
	Description string `json:"description"`
	Qty         int64  `json:"qty"` // thousandths of a kg
	UnitPrice   int64  `json:"unit_price"`
	Amount      int64  `json:"amount"`
	Currency    string `json:"currency"`
	Label       string `json:"label"`
}

func (d *Device) weighed() Item {
	var ws []Item
	for _, it := range Catalog {
		if it.Weighed {
			ws = append(ws, it)
		}
	}
	return ws[d.rng.IntN(len(ws))]
}

func (d *Device) nextScale(now time.Time) protocol.Event {
	it := d.weighed()
	switch r := d.rng.IntN(100); {
	case r < 20:
		reason := []string{"damaged", "shrink"}[d.rng.IntN(2)]
		return d.event(now, pos.TypeInventoryAdjusted, pos.InventoryAdjusted{Store: d.o.Store, SKU: it.SKU,
			QtyDelta: -int64(100 + d.rng.IntN(900)), Reason: reason})
	case r < 32:
		return d.event(now, pos.TypeInventoryCounted, pos.InventoryCounted{Store: d.o.Store, SKU: it.SKU,
			Qty: int64(d.rng.IntN(40000))})
	}
	qty := int64(100 + d.rng.IntN(1900))
	return d.event(now, TypeScaleWeighed, scaleLabel{Store: d.o.Store, Scale: d.o.Device, SKU: it.SKU,
		Description: it.Description, Qty: qty, UnitPrice: it.UnitPrice, Amount: mulDivRound(qty, it.UnitPrice, 1000),
		Currency: d.o.Currency, Label: fmt.Sprintf("%s-L%06d", d.o.Device, d.n+1)})
}

// sensorState is the random walk behind a sensor's readings.
type sensorState struct {
	k      int
	values map[string]float64
}

var metrics = []struct {
	name, unit      string
	base, spread, σ float64
}{
	{"fridge_temp", "C", 3.5, 1.5, 0.2},
	{"freezer_temp", "C", -18, 2, 0.3},
	{"humidity", "%", 45, 10, 1},
	{"power", "W", 850, 300, 25},
}

func (d *Device) nextSensor(now time.Time) protocol.Event {
	m := metrics[d.sense.k%len(metrics)]
	d.sense.k++
	v, ok := d.sense.values[m.name]
	if !ok {
		v = m.base
	}
	v += d.rng.NormFloat64() * m.σ
	v = math.Max(m.base-m.spread, math.Min(m.base+m.spread, v))
	d.sense.values[m.name] = v
	return d.event(now, pos.TypeTelemetryReading, pos.TelemetryReading{Store: d.o.Store, Sensor: d.o.Device,
		Metric: m.name, Value: math.Round(v*100) / 100, Unit: m.unit})
}
