package verify

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// The reports check: the cloud's back-office reports (GET /v1/reports/*)
// against what the events in the ledger, which Check holds against the
// oracle, say they must be, per store and business day: sales, tenders,
// sales by SKU, sales by hour, inventory on hand and reconciliation
// status. The expected figures are computed here from the POS bodies with
// protocol/pos's arithmetic, independently of the cloud's folds.

// Reports are the cloud's report rows, as the verifier reads them.
type Reports struct {
	Sales          []SalesRow
	Tenders        []TenderRow
	SKU            []SKURow
	Hour           []HourRow
	Inventory      []InventoryRow
	Reconciliation []ReconciliationRow
}

type money struct {
	Minor int64 `json:"minor"`
}

// SalesRow is the part of a sales summary row the check compares.
type SalesRow struct {
	Store          string `json:"store"`
	BusinessDay    string `json:"business_day"`
	Currency       string `json:"currency"`
	Transactions   int64  `json:"transactions"`
	TotalCollected money  `json:"total_collected"`
}

// TenderRow is the part of a tenders row the check compares.
type TenderRow struct {
	Store       string `json:"store"`
	BusinessDay string `json:"business_day"`
	Type        string `json:"type"`
	Currency    string `json:"currency"`
	Net         money  `json:"net"`
}

// SKURow is the part of a sales-by-SKU row the check compares.
type SKURow struct {
	Store       string `json:"store"`
	BusinessDay string `json:"business_day"`
	SKU         string `json:"sku"`
	Currency    string `json:"currency"`
	QtySold     int64  `json:"qty_sold"`
}

// HourRow is the part of a sales-by-hour row the check compares.
type HourRow struct {
	Store       string `json:"store"`
	BusinessDay string `json:"business_day"`
	Currency    string `json:"currency"`
	Count       int64  `json:"count"`
}

// InventoryRow is a stock on hand row.
type InventoryRow struct {
	Store  string `json:"store"`
	SKU    string `json:"sku"`
	OnHand int64  `json:"on_hand"`
}

// ReconciliationRow is the part of a reconciliation row the check compares.
type ReconciliationRow struct {
	Store       string   `json:"store"`
	Terminal    string   `json:"terminal"`
	BusinessDay string   `json:"business_day"`
	Currency    string   `json:"currency"`
	Status      string   `json:"status"`
	Reason      []string `json:"reason"`
}

// ReportsVerdict is what the reports check found.
type ReportsVerdict struct {
	OK         bool     `json:"ok"`
	Stores     int      `json:"stores"`
	StoreDays  int      `json:"store_days"` // (store, business day, currency) of the sales summary
	Figures    int      `json:"figures"`    // figures compared
	Mismatches int      `json:"mismatches"`
	Examples   []string `json:"examples"` // the first few mismatches
}

func (v *ReportsVerdict) String() string {
	if v.OK {
		return fmt.Sprintf("%d figures of %d store-days in %d stores match (sales, tenders, SKU, hour, inventory, reconciliation)",
			v.Figures, v.StoreDays, v.Stores)
	}
	return fmt.Sprintf("%d of %d figures differ (%d store-days in %d stores)", v.Mismatches, v.Figures, v.StoreDays, v.Stores)
}

// Fetch reads every page of the reports the check compares.
func (c *Client) Reports(ctx context.Context) (*Reports, error) {
	r := &Reports{}
	for _, x := range []struct {
		path string
		f    func(ctx context.Context, c *Client, path string) error
	}{
		{"sales", func(ctx context.Context, c *Client, p string) error { return pages(ctx, c, p, &r.Sales) }},
		{"tenders", func(ctx context.Context, c *Client, p string) error { return pages(ctx, c, p, &r.Tenders) }},
		{"sales/by-sku", func(ctx context.Context, c *Client, p string) error { return pages(ctx, c, p, &r.SKU) }},
		{"sales/by-hour", func(ctx context.Context, c *Client, p string) error { return pages(ctx, c, p, &r.Hour) }},
		{"inventory", func(ctx context.Context, c *Client, p string) error { return pages(ctx, c, p, &r.Inventory) }},
		{"reconciliation", func(ctx context.Context, c *Client, p string) error { return pages(ctx, c, p, &r.Reconciliation) }},
	} {
		if err := x.f(ctx, c, "/v1/reports/"+x.path); err != nil {
			return nil, fmt.Errorf("report %s: %w", x.path, err)
		}
	}
	return r, nil
}

func pages[T any](ctx context.Context, c *Client, path string, dst *[]T) error {
	after := ""
	for {
		var page struct {
			Rows []T    `json:"rows"`
			Next string `json:"next"`
		}
		if err := c.get(ctx, path+"?limit=1000&after="+url.QueryEscape(after), &page); err != nil {
			return err
		}
		*dst = append(*dst, page.Rows...)
		if page.Next == "" {
			return nil
		}
		after = page.Next
	}
}

// expected are the figures the reports must show.
type expected struct {
	sales     map[[3]string]*[2]int64 // store, day, currency -> transactions, total collected
	tenders   map[[4]string]int64     // store, day, type, currency -> net
	sku       map[[4]string]int64     // store, day, sku, currency -> qty sold
	onHand    map[[2]string]int64     // store, sku -> on hand
	tills     pos.TillTotals
	zs        map[pos.TillKey]pos.TillClosed // the latest Z of each till day
	tillDays  map[pos.TillKey]bool
	stores    map[string]bool
	counted   map[[4]string][]pos.Line // counted sales by (store, terminal, day, txn), for voids
	voided    map[[4]string]bool
	txnsTaken map[[4]string]bool
}

// expect folds the ledger's POS records, in ledger position order, into
// the figures the reports must show, for the stores in only (every store
// when only is nil).
func expect(l *Ledger, only map[string]bool) *expected {
	e := &expected{sales: map[[3]string]*[2]int64{}, tenders: map[[4]string]int64{}, sku: map[[4]string]int64{},
		onHand: map[[2]string]int64{}, tills: pos.TillTotals{}, zs: map[pos.TillKey]pos.TillClosed{},
		tillDays: map[pos.TillKey]bool{}, stores: map[string]bool{}, counted: map[[4]string][]pos.Line{},
		voided: map[[4]string]bool{}, txnsTaken: map[[4]string]bool{}}
	type rec struct {
		pos int64
		r   protocol.Record
	}
	var recs []rec
	for _, s := range l.Streams {
		seen := map[uint64]bool{}
		for _, row := range s.Rows {
			if seen[row.Seq] {
				continue
			}
			seen[row.Seq] = true
			r, err := protocol.DecodeRecord(row.Raw)
			if err == nil && !r.IsTombstone() {
				recs = append(recs, rec{row.Pos, r})
			}
		}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].pos < recs[j].pos })
	in := func(store string) bool { return only == nil || only[store] }
	for _, x := range recs {
		e.record(x.r, in)
	}
	return e
}

func (e *expected) record(r protocol.Record, in func(string) bool) {
	switch r.Type {
	case pos.TypeSaleCompleted, pos.TypeReturnCompleted:
		var t pos.Transaction
		if pos.Decode(r.Type, r.Body, &t) != nil || !in(t.Store) {
			return
		}
		k := [4]string{t.Store, t.Terminal, t.BusinessDay, t.Txn}
		if e.txnsTaken[k] {
			return // the same transaction again under another event id: counted once
		}
		e.txnsTaken[k] = true
		e.stores[t.Store] = true
		e.tills.Add(r.Type, r.Body)
		e.tillDays[pos.TillKey{Store: t.Store, Terminal: t.Terminal, BusinessDay: t.BusinessDay, Currency: t.Currency}] = true
		s := e.salesRow(t.Store, t.BusinessDay, t.Currency)
		if r.Type == pos.TypeSaleCompleted {
			s[0]++
			s[1] += t.Total
			e.counted[k] = t.Lines
			for _, l := range t.Lines {
				e.sku[[4]string{t.Store, t.BusinessDay, l.SKU, t.Currency}] += l.Qty
				e.onHand[[2]string{t.Store, l.SKU}] -= l.Qty
			}
		} else {
			s[1] -= t.Total
			for _, l := range t.Lines {
				e.onHand[[2]string{t.Store, l.SKU}] += l.Qty
			}
		}
	case pos.TypeSaleVoided:
		var v pos.Void
		if pos.Decode(r.Type, r.Body, &v) != nil || !in(v.Store) {
			return
		}
		k := [4]string{v.Store, v.Terminal, v.BusinessDay, v.Txn}
		sale := [4]string{v.Store, v.Terminal, v.BusinessDay, v.VoidedTxn}
		if e.txnsTaken[k] || e.voided[sale] {
			return
		}
		e.txnsTaken[k] = true
		e.stores[v.Store] = true
		e.tills.Add(r.Type, r.Body)
		e.tillDays[pos.TillKey{Store: v.Store, Terminal: v.Terminal, BusinessDay: v.BusinessDay, Currency: v.Currency}] = true
		e.salesRow(v.Store, v.BusinessDay, v.Currency)[1] -= v.Total
		if lines, ok := e.counted[sale]; ok {
			e.voided[sale] = true
			for _, l := range lines {
				e.onHand[[2]string{v.Store, l.SKU}] += l.Qty
			}
		}
	case pos.TypeInventoryAdjusted:
		var a pos.InventoryAdjusted
		if pos.Decode(r.Type, r.Body, &a) == nil && in(a.Store) {
			e.stores[a.Store] = true
			e.onHand[[2]string{a.Store, a.SKU}] += a.QtyDelta
		}
	case pos.TypeInventoryCounted:
		var c pos.InventoryCounted
		if pos.Decode(r.Type, r.Body, &c) == nil && in(c.Store) {
			e.stores[c.Store] = true
			e.onHand[[2]string{c.Store, c.SKU}] = c.Qty
		}
	case pos.TypeTillClosed:
		var z pos.TillClosed
		if pos.Decode(r.Type, r.Body, &z) == nil && in(z.Store) {
			e.stores[z.Store] = true
			e.zs[z.Key()] = z
			e.tillDays[z.Key()] = true
		}
	}
}

func (e *expected) salesRow(store, day, currency string) *[2]int64 {
	k := [3]string{store, day, currency}
	if e.sales[k] == nil {
		e.sales[k] = &[2]int64{}
	}
	return e.sales[k]
}

// reportChecker compares figures and keeps the first few differences.
type reportChecker struct {
	v        *ReportsVerdict
	examples int
}

func (c *reportChecker) cmp(what string, got, want int64) {
	c.v.Figures++
	if got != want {
		c.v.Mismatches++
		if len(c.v.Examples) < c.examples {
			c.v.Examples = append(c.v.Examples, fmt.Sprintf("%s: the report says %d, the ledger's events %d", what, got, want))
		}
	}
}

func (c *reportChecker) status(what, got, want string, reason []string) {
	c.v.Figures++
	if got != want {
		c.v.Mismatches++
		if len(c.v.Examples) < c.examples {
			c.v.Examples = append(c.v.Examples, fmt.Sprintf("%s: status %s (%s), want %s", what, got, strings.Join(reason, "; "), want))
		}
	}
}

// CheckReports compares the reports with the ledger's events, for the
// stores in only (every store the events name when only is empty).
func CheckReports(l *Ledger, got *Reports, only []string, o Options) *ReportsVerdict {
	if o.Examples <= 0 {
		o.Examples = 5
	}
	var set map[string]bool
	if len(only) > 0 {
		set = map[string]bool{}
		for _, s := range only {
			set[s] = true
		}
	}
	e := expect(l, set)
	v := &ReportsVerdict{Examples: []string{}}
	c := &reportChecker{v: v, examples: o.Examples}
	mine := func(store string) bool { return e.stores[store] || set[store] }

	// Sales summary and by hour: every (store, day, currency) either side.
	gotSales := map[[3]string]SalesRow{}
	for _, r := range got.Sales {
		if mine(r.Store) {
			gotSales[[3]string{r.Store, r.BusinessDay, r.Currency}] = r
		}
	}
	hours := map[[3]string]int64{}
	for _, r := range got.Hour {
		if mine(r.Store) {
			hours[[3]string{r.Store, r.BusinessDay, r.Currency}] += r.Count
		}
	}
	for _, k := range union(keys(e.sales), keys(gotSales)) {
		want := [2]int64{}
		if w := e.sales[k]; w != nil {
			want = *w
		}
		g := gotSales[k]
		name := fmt.Sprintf("sales %s %s %s", k[0], k[1], k[2])
		c.cmp(name+" transactions", g.Transactions, want[0])
		c.cmp(name+" total collected", g.TotalCollected.Minor, want[1])
		c.cmp(name+" sales by hour, summed", hours[k], want[0])
	}
	v.StoreDays = len(e.sales)
	v.Stores = len(e.stores)

	// Tenders: the net per type, summed over the store's tills.
	gotTenders := map[[4]string]int64{}
	for _, r := range got.Tenders {
		if mine(r.Store) {
			gotTenders[[4]string{r.Store, r.BusinessDay, r.Type, r.Currency}] += r.Net.Minor
		}
	}
	wantTenders := map[[4]string]int64{}
	for k, z := range e.tills {
		for _, tn := range z.Tenders {
			wantTenders[[4]string{k.Store, k.BusinessDay, tn.Type, k.Currency}] += tn.Amount
		}
	}
	for _, k := range union(keys(wantTenders), keys(gotTenders)) {
		c.cmp(fmt.Sprintf("tender %s %s %s %s net", k[0], k[1], k[2], k[3]), gotTenders[k], wantTenders[k])
	}

	// Sales by SKU: quantity sold.
	gotSKU := map[[4]string]int64{}
	for _, r := range got.SKU {
		if mine(r.Store) {
			gotSKU[[4]string{r.Store, r.BusinessDay, r.SKU, r.Currency}] += r.QtySold
		}
	}
	for _, k := range union(keys(e.sku), keys(gotSKU)) {
		c.cmp(fmt.Sprintf("sku %s %s %s %s qty sold", k[0], k[1], k[2], k[3]), gotSKU[k], e.sku[k])
	}

	// Inventory on hand.
	gotStock := map[[2]string]int64{}
	for _, r := range got.Inventory {
		if mine(r.Store) {
			gotStock[[2]string{r.Store, r.SKU}] = r.OnHand
		}
	}
	for _, k := range union(keys(e.onHand), keys(gotStock)) {
		c.cmp(fmt.Sprintf("inventory %s %s on hand", k[0], k[1]), gotStock[k], e.onHand[k])
	}

	// Reconciliation: a till day whose Z the ledger's events add up to
	// matches (or matched, and was restated to a match); one without a Z
	// is open; one whose Z they do not add up to is not a match.
	gotRecon := map[pos.TillKey]ReconciliationRow{}
	for _, r := range got.Reconciliation {
		if mine(r.Store) {
			gotRecon[pos.TillKey{Store: r.Store, Terminal: r.Terminal, BusinessDay: r.BusinessDay, Currency: r.Currency}] = r
		}
	}
	for _, k := range union(keys(e.tillDays), keys(gotRecon)) {
		g, ok := gotRecon[k]
		name := fmt.Sprintf("reconciliation %s/%s %s %s", k.Store, k.Terminal, k.BusinessDay, k.Currency)
		if !ok {
			g.Status = "(no row)"
		}
		z, hasZ := e.zs[k]
		switch {
		case !hasZ:
			c.status(name, g.Status, "open", g.Reason)
		case len(pos.Reconcile(&z, e.tills.Of(&z))) == 0:
			st := g.Status
			if st == "restated" && len(g.Reason) > 0 && strings.HasSuffix(g.Reason[len(g.Reason)-1], "now match") {
				st = "match"
			}
			c.status(name, st, "match", g.Reason)
		default:
			st := g.Status
			if st != "match" && st != "open" && ok {
				st = "not match"
			}
			c.status(name, st, "not match", g.Reason)
		}
	}
	v.OK = v.Mismatches == 0
	return v
}

func keys[K comparable, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// union returns the keys of a and b once each, sorted by their text.
func union[K comparable](a, b []K) []K {
	seen := map[K]bool{}
	var out []K
	for _, k := range append(a, b...) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(x, y K) int { return cmp.Compare(fmt.Sprint(x), fmt.Sprint(y)) })
	return out
}

// CheckReports reads the cloud's reports and checks them against l, the
// ledger v is the verdict of, for stores (every store l's events name when
// empty). A mismatch fails v. When l left earlier runs' streams out, the
// reports (which cover everything the database holds) are not comparable,
// and the check is skipped, saying so.
func (c *Client) CheckReports(ctx context.Context, l *Ledger, v *Verdict, stores []string, o Options) error {
	if l.Earlier > 0 {
		v.ReportsSkipped = fmt.Sprintf("the database holds %d streams of earlier runs, which the reports count too; verify a run on its own database to check them", l.Earlier)
		return nil
	}
	got, err := c.Reports(ctx)
	if err != nil {
		return err
	}
	v.Reports = CheckReports(l, got, stores, o)
	if !v.Reports.OK {
		v.OK = false
		v.Counts[ReportFigure] += v.Reports.Mismatches
		for _, ex := range v.Reports.Examples {
			v.Discrepancies = append(v.Discrepancies, Discrepancy{Kind: ReportFigure, Detail: ex})
		}
	}
	return nil
}
