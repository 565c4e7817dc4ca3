package projection

import (
	"fmt"
	"reflect"
	"time"

	"github.com/outpost-edge/outpost/protocol/pos"
)

// Fold folds a batch of committed records, in pos order, on top of the rows
// prior holds, and returns what the batch changes. It reads prior only for
// the keys the batch touches and never changes it. Records of types the
// read models do not know are skipped. Fold keeps each record's decoded
// body in recs (a memo, which changes no result), so that folding the same
// slice again does not decode the bodies again; so two goroutines must not
// fold the same slice at once.
func Fold(prior View, stores Stores, recs []Record) *Delta {
	f := &folder{prior: prior, stores: stores, d: &Delta{Tables: newTables()}}
	for i := range recs {
		if recs[i].memo == nil {
			recs[i].memo = &decoded{}
		}
		r := recs[i]
		f.record(r)
		if r.Pos > f.d.LastPos {
			f.d.LastPos = r.Pos
		}
	}
	return f.d
}

// folder folds one batch. Each accessor reads a row from the batch's own
// rows first, then from prior, and each setter stores it in the batch's
// rows, so that every record sees the effect of every earlier one.
type folder struct {
	prior  View
	stores Stores
	d      *Delta
	cur    Record // the record being folded
}

func (f *folder) record(r Record) {
	f.cur = r
	if r.IsTombstone() {
		// The edge shed the body to save space; what it said is gone.
		switch r.Type {
		case pos.TypeSaleCompleted, pos.TypeReturnCompleted, pos.TypeSaleVoided, pos.TypeInventoryAdjusted,
			pos.TypeInventoryCounted, pos.TypeTelemetryReading, pos.TypeTillClosed:
			f.anomaly(Anomaly{Kind: AnomalyShed, Pos: r.Pos, ID: r.ID, Type: r.Type,
				Detail: fmt.Sprintf("the edge shed the body of this %s record; it is not counted", r.Type)})
		}
		return
	}
	switch r.Type {
	case pos.TypeSaleCompleted, pos.TypeReturnCompleted:
		var t pos.Transaction
		if f.decode(r, &t) {
			f.transaction(r, &t)
		}
	case pos.TypeSaleVoided:
		var v pos.Void
		if f.decode(r, &v) {
			f.void(r, &v)
		}
	case pos.TypeInventoryAdjusted:
		var a pos.InventoryAdjusted
		if f.decode(r, &a) && f.known(r, a.Store) {
			f.move(r.Pos, a.Store, a.SKU, a.Reason, a.QtyDelta)
		}
	case pos.TypeInventoryCounted:
		var c pos.InventoryCounted
		if f.decode(r, &c) && f.known(r, c.Store) {
			k := StockKey{c.Store, c.SKU}
			f.d.Tables.OnHand[k] = c.Qty
			f.d.Movements = append(f.d.Movements, Movement{Pos: r.Pos, Store: c.Store, SKU: c.SKU, Reason: "count", Qty: c.Qty})
		}
	case pos.TypeTelemetryReading:
		var m pos.TelemetryReading
		if f.decode(r, &m) {
			f.telemetry(r, &m)
		}
	case pos.TypeTillClosed:
		var z pos.TillClosed
		if f.decode(r, &z) && f.known(r, z.Store) {
			f.zReport(r, &z)
		}
	}
}

func (f *folder) decode(r Record, v any) bool {
	var err error
	switch m := r.memo; {
	case m.of(&r):
		// The values decoded are only read by the folds, never changed,
		// so a shallow copy is safe to share between folds.
		if err = m.err; err == nil {
			reflect.ValueOf(v).Elem().Set(m.v.Elem())
		}
	default:
		err = pos.Decode(r.Type, r.Body, v)
		if m != nil && len(r.Body) > 0 {
			m.typ, m.body, m.n, m.v, m.err = r.Type, &r.Body[0], len(r.Body), reflect.Value{}, err
			if err == nil {
				c := reflect.New(reflect.TypeOf(v).Elem())
				c.Elem().Set(reflect.ValueOf(v).Elem())
				m.v = c
			}
		}
	}
	if err != nil {
		f.anomaly(Anomaly{Kind: AnomalyUndecodable, Pos: r.Pos, ID: r.ID, Type: r.Type,
			Detail: fmt.Sprintf("the %s body does not decode: %v", r.Type, err)})
		return false
	}
	return true
}

// known looks the store up, and lists the record as an anomaly when it is
// not known: without its tenant and time zone it cannot be placed.
func (f *folder) known(r Record, store string) bool {
	_, ok := f.store(r, store)
	return ok
}

func (f *folder) store(r Record, store string) (Store, bool) {
	s, ok := f.stores.Store(store)
	if !ok {
		f.anomaly(Anomaly{Kind: AnomalyUnknownStore, Pos: r.Pos, ID: r.ID, Type: r.Type, Store: store,
			Detail: fmt.Sprintf("store %q is not known; add it (cloud stores add), then rebuild the projections (cloud projections rebuild) to count this record", store)})
		return s, false
	}
	if et, ok := f.stores.(EdgeTenants); ok {
		if t, ok := et.EdgeTenant(r.Edge); ok && t != s.Tenant {
			f.anomaly(Anomaly{Tenant: t, Kind: AnomalyForeignStore, Pos: r.Pos, ID: r.ID, Type: r.Type, Store: store,
				Detail: fmt.Sprintf("edge %s belongs to tenant %q but the body names store %q of another tenant; committed to the ledger, counted in no report; fix the till's store id or move the edge to the store's tenant, then rebuild the projections", r.Edge, t, store)})
			return s, false
		}
	}
	return s, true
}

// anomaly lists a, under the tenant of the edge that sent the record being
// folded; failing that, of the store it names; failing that, the default.
func (f *folder) anomaly(a Anomaly) {
	if a.Tenant == "" {
		if et, ok := f.stores.(EdgeTenants); ok {
			a.Tenant, _ = et.EdgeTenant(f.cur.Edge)
		}
	}
	if a.Tenant == "" && a.Store != "" {
		if s, ok := f.stores.Store(a.Store); ok {
			a.Tenant = s.Tenant
		}
	}
	if a.Tenant == "" {
		a.Tenant = DefaultTenant
	}
	f.d.Anomalies = append(f.d.Anomalies, a)
}

// duplicate reports whether a transaction with key k was already counted,
// and lists r as a duplicate anomaly when it was.
func (f *folder) duplicate(r Record, k TxnKey) bool {
	prev, ok := get(f.d.Txns, k, f.prior.Txn)
	if ok {
		f.anomaly(Anomaly{Kind: AnomalyDuplicate, Pos: r.Pos, ID: r.ID, Type: r.Type, Store: k.Store,
			Other: prev.Pos, OtherID: prev.ID,
			Detail: fmt.Sprintf("terminal %s, business day %s, txn %s was already counted at position %d (event %s); not counted again",
				k.Terminal, k.BusinessDay, k.Txn, prev.Pos, prev.ID)})
	}
	return ok
}

// counted records transaction t of record r under its key.
func (f *folder) counted(r Record, k TxnKey, t Txn) {
	t.Pos, t.ID, t.Type = r.Pos, r.ID, r.Type
	f.d.Txns[k] = t
}

// exTax returns what a line adds before tax and discounts: its extended
// price, less the tax inside it when prices include tax.
func exTax(l *pos.Line, taxIncluded bool) int64 {
	ext, _ := l.Extended() // validated by Decode
	if taxIncluded {
		ext -= l.Tax
	}
	return ext
}

func (f *folder) transaction(r Record, t *pos.Transaction) {
	st, ok := f.store(r, t.Store)
	if !ok {
		return
	}
	txn := Txn{Currency: t.Currency, Tax: t.Tax}
	for i := range t.Lines {
		l := &t.Lines[i]
		txn.Lines = append(txn.Lines, TxnLine{SKU: l.SKU, Qty: l.Qty, Gross: exTax(l, t.TaxIncluded), Discount: l.Discount})
	}
	txn.Net = t.Total - t.Tax // gross − discounts, before tax
	tk := TxnKey{t.Store, t.Terminal, t.BusinessDay, t.Txn}
	if f.duplicate(r, tk) {
		return
	}
	f.counted(r, tk, txn)
	sk := SalesKey{st.Tenant, t.Store, t.BusinessDay, t.Currency}
	s, _ := get(f.d.Tables.Sales, sk, f.prior.Sales)
	hk := HourKey{t.Store, t.BusinessDay, hour(r, st), t.Currency}
	h, _ := get(f.d.Tables.Hour, hk, f.prior.Hour)
	sale := r.Type == pos.TypeSaleCompleted
	if sale {
		s.Transactions++
		s.Discounts += t.Discount
		s.Tax += t.Tax
		h.Count++
		h.Net += txn.Net
	} else {
		s.ReturnsCount++
		s.ReturnsAmount += txn.Net
		s.Tax -= t.Tax
		h.Net -= txn.Net
	}
	for _, l := range txn.Lines {
		k := SKUKey{t.Store, t.BusinessDay, l.SKU, t.Currency}
		u, _ := get(f.d.Tables.SKU, k, f.prior.SKU)
		if sale {
			s.Items += l.Qty
			s.GrossSales += l.Gross
			s.Discounts += l.Discount
			u.QtySold += l.Qty
			u.Gross += l.Gross
			u.Discounts += l.Discount
			f.move(r.Pos, t.Store, l.SKU, "sale", -l.Qty)
		} else {
			u.QtyReturned += l.Qty
			u.Returns += l.Gross - l.Discount
			f.move(r.Pos, t.Store, l.SKU, "return", l.Qty)
		}
		u.Net = u.Gross - u.Discounts - u.Returns - u.Voids
		f.d.Tables.SKU[k] = u
	}
	f.d.Tables.Sales[sk] = s.derive()
	f.d.Tables.Hour[hk] = h
	for _, tn := range t.Tenders {
		f.tender(TenderKey{t.Store, t.BusinessDay, tn.Type, t.Currency}, func(x *Tenders) {
			if sale {
				x.Count++
				x.Amount += tn.Amount
			} else {
				x.Refunds += tn.Amount
			}
		})
	}
	if sale && t.Change > 0 {
		f.tender(TenderKey{t.Store, t.BusinessDay, "cash", t.Currency}, func(x *Tenders) { x.Change += t.Change })
	}
	f.ledgerEvent(r, pos.TillKey{Store: t.Store, Terminal: t.Terminal, BusinessDay: t.BusinessDay, Currency: t.Currency})
}

func (f *folder) void(r Record, v *pos.Void) {
	st, ok := f.store(r, v.Store)
	if !ok {
		return
	}
	vk := TxnKey{v.Store, v.Terminal, v.BusinessDay, v.Txn}
	if f.duplicate(r, vk) {
		return
	}
	sk := TxnKey{v.Store, v.Terminal, v.BusinessDay, v.VoidedTxn}
	sale, found := get(f.d.Txns, sk, f.prior.Txn)
	if found && (sale.Type != pos.TypeSaleCompleted || sale.Voided || sale.Currency != v.Currency) {
		what := "already voided"
		switch {
		case sale.Type != pos.TypeSaleCompleted:
			what = "a " + sale.Type + ", not a sale"
		case sale.Currency != v.Currency:
			what = "a sale in " + sale.Currency + ", not " + v.Currency
		}
		f.anomaly(Anomaly{Kind: AnomalyVoidTwice, Pos: r.Pos, ID: r.ID, Type: r.Type, Store: v.Store,
			Other: sale.Pos, OtherID: sale.ID,
			Detail: fmt.Sprintf("txn %s voids txn %s, which is %s (position %d); not counted", v.Txn, v.VoidedTxn, what, sale.Pos)})
		return
	}
	f.counted(r, vk, Txn{Currency: v.Currency})
	key := SalesKey{st.Tenant, v.Store, v.BusinessDay, v.Currency}
	s, _ := get(f.d.Tables.Sales, key, f.prior.Sales)
	hk := HourKey{v.Store, v.BusinessDay, hour(r, st), v.Currency}
	h, _ := get(f.d.Tables.Hour, hk, f.prior.Hour)
	s.VoidsCount++
	if found {
		sale.Voided = true
		f.d.Txns[sk] = sale
		s.VoidsAmount += sale.Net
		s.Tax -= sale.Tax
		h.Net -= sale.Net
		for _, l := range sale.Lines {
			k := SKUKey{v.Store, v.BusinessDay, l.SKU, v.Currency}
			u, _ := get(f.d.Tables.SKU, k, f.prior.SKU)
			u.QtyVoided += l.Qty
			u.Voids += l.Gross - l.Discount
			u.Net = u.Gross - u.Discounts - u.Returns - u.Voids
			f.d.Tables.SKU[k] = u
			f.move(r.Pos, v.Store, l.SKU, "void", l.Qty)
		}
	} else {
		// Without the sale its tax is not known: the whole total counts as
		// the voided amount, and the record is listed.
		s.VoidsAmount += v.Total
		h.Net -= v.Total
		f.anomaly(Anomaly{Kind: AnomalyVoidUnknown, Pos: r.Pos, ID: r.ID, Type: r.Type, Store: v.Store,
			Detail: fmt.Sprintf("txn %s voids txn %s, which was not counted before it on terminal %s, business day %s; its total %d counts as voided, its tax and lines are not reversed",
				v.Txn, v.VoidedTxn, v.Terminal, v.BusinessDay, v.Total)})
	}
	f.d.Tables.Sales[key] = s.derive()
	f.d.Tables.Hour[hk] = h
	for _, tn := range v.Tenders {
		f.tender(TenderKey{v.Store, v.BusinessDay, tn.Type, v.Currency}, func(x *Tenders) { x.Refunds += tn.Amount })
	}
	f.ledgerEvent(r, pos.TillKey{Store: v.Store, Terminal: v.Terminal, BusinessDay: v.BusinessDay, Currency: v.Currency})
}

// derive fills the figures that follow from the others.
func (s Sales) derive() Sales {
	s.NetSales = s.GrossSales - s.Discounts - s.ReturnsAmount - s.VoidsAmount
	s.TotalCollected = s.NetSales + s.Tax
	return s
}

func (f *folder) tender(k TenderKey, fn func(*Tenders)) {
	x, _ := get(f.d.Tables.Tenders, k, f.prior.Tender)
	fn(&x)
	x.Net = x.Amount - x.Change - x.Refunds
	f.d.Tables.Tenders[k] = x
}

func (f *folder) move(p int64, store, sku, reason string, delta int64) {
	k := StockKey{store, sku}
	q, _ := get(f.d.Tables.OnHand, k, f.prior.OnHand)
	q += delta
	f.d.Tables.OnHand[k] = q
	f.d.Movements = append(f.d.Movements, Movement{Pos: p, Store: store, SKU: sku, Reason: reason, Delta: delta, Qty: q})
}

func (f *folder) telemetry(r Record, m *pos.TelemetryReading) {
	// A reading of a store counts for the store's tenant, when the store
	// is known and the edge's; one that names no store (the edge's own
	// sensors) for the edge's tenant.
	tenant := DefaultTenant
	if m.Store != "" {
		st, ok := f.store(r, m.Store)
		if !ok {
			return
		}
		tenant = st.Tenant
	} else if et, ok := f.stores.(EdgeTenants); ok {
		if t, ok := et.EdgeTenant(r.Edge); ok {
			tenant = t
		}
	}
	k := TelemetryKey{tenant, m.Store, m.Sensor, m.Metric, r.EdgeTime.Time().Truncate(time.Minute)}
	x, ok := get(f.d.Tables.Telemetry, k, f.prior.Telemetry)
	if !ok || m.Value < x.Min {
		x.Min = m.Value
	}
	if !ok || m.Value > x.Max {
		x.Max = m.Value
	}
	x.Count++
	x.Sum += m.Value
	f.d.Tables.Telemetry[k] = x
}

// hour is the hour of the record's edge time in the store's time zone.
func hour(r Record, st Store) int {
	loc := st.Location
	if loc == nil {
		loc = time.UTC
	}
	return r.EdgeTime.Time().In(loc).Hour()
}

func (f *folder) till(k pos.TillKey) Till {
	t, ok := get(f.d.Tills, k, f.prior.Till)
	if !ok {
		return Till{Ledger: pos.TillClosed{Store: k.Store, Terminal: k.Terminal, BusinessDay: k.BusinessDay, Currency: k.Currency}, Status: StatusOpen}
	}
	return t.clone()
}

// ledgerEvent adds a counted sale, return or void to its till day and
// reconciles the day again.
func (f *folder) ledgerEvent(r Record, k pos.TillKey) {
	t := f.till(k)
	pos.TillTotals{k: &t.Ledger}.Add(r.Type, r.Body)
	f.reconcile(r, k, &t, true)
}

func (f *folder) zReport(r Record, z *pos.TillClosed) {
	k := z.Key()
	t := f.till(k)
	t.ZCount++
	switch {
	case t.Z == nil:
		t.Z, t.ZPos, t.ZID = z, r.Pos, r.ID
	case reflect.DeepEqual(*t.Z, *z):
		// A reprint: the same report again. The first one stays.
	default:
		f.anomaly(Anomaly{Kind: AnomalyZSuperseded, Pos: r.Pos, ID: r.ID, Type: r.Type, Store: k.Store,
			Other: t.ZPos, OtherID: t.ZID,
			Detail: fmt.Sprintf("a second, different Z report for terminal %s, business day %s, %s; it replaces the one at position %d",
				k.Terminal, k.BusinessDay, k.Currency, t.ZPos)})
		t.Z, t.ZPos, t.ZID = z, r.Pos, r.ID
	}
	f.reconcile(r, k, &t, false)
}

// reconcile sets the status of a till day after record r changed it.
func (f *folder) reconcile(r Record, k pos.TillKey, t *Till, ledger bool) {
	defer func() { f.d.Tills[k] = *t }()
	wasMatched := t.Matched
	if t.Z == nil {
		t.Status, t.Reason = StatusOpen, nil
		return
	}
	diffs := pos.Reconcile(t.Z, t.Ledger)
	switch {
	case len(diffs) == 0:
		t.Status, t.Reason = StatusMatch, nil
	case short(t.Z, &t.Ledger):
		n, amt := missing(t.Z, &t.Ledger)
		t.Status = StatusPending
		t.Reason = append([]string{fmt.Sprintf("the ledger is short of the Z report by %d transactions worth %d", n, amt)}, diffs...)
	default:
		t.Status, t.Reason = StatusMismatch, diffs
	}
	now := t.Status
	if len(diffs) == 0 {
		t.Matched = true
	}
	if ledger && wasMatched {
		t.Restated = append(t.Restated, r.Pos)
		f.d.Restatements = append(f.d.Restatements, Restatement{Till: k, Pos: r.Pos, ID: r.ID, Type: r.Type, Status: now, What: diffs})
	}
	if len(t.Restated) > 0 {
		t.Status = StatusRestated
		t.Reason = append([]string{"changed after it matched its Z report; now " + now}, t.Reason...)
	}
}

// short reports whether the ledger holds no more than the Z report of each
// of sales, returns and voids, by count and by total.
func short(z, held *pos.TillClosed) bool {
	for _, p := range [][2]pos.Tally{{z.Sales, held.Sales}, {z.Returns, held.Returns}, {z.Voids, held.Voids}} {
		if p[1].Count > p[0].Count || p[1].Total > p[0].Total {
			return false
		}
	}
	return held.Sales.Count+held.Returns.Count+held.Voids.Count < z.Sales.Count+z.Returns.Count+z.Voids.Count
}

func missing(z, held *pos.TillClosed) (n, amount int64) {
	n = z.Sales.Count + z.Returns.Count + z.Voids.Count - held.Sales.Count - held.Returns.Count - held.Voids.Count
	amount = z.Sales.Total + z.Returns.Total + z.Voids.Total - held.Sales.Total - held.Returns.Total - held.Voids.Total
	return n, amount
}
