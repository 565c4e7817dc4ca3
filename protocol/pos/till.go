package pos

import (
	"fmt"
	"slices"
	"sort"
)

// TillKey names what one Z report (till.closed) covers: one till's
// business day in one currency.
type TillKey struct {
	Store, Terminal, BusinessDay, Currency string
}

// Key is the till day the Z report covers.
func (z *TillClosed) Key() TillKey {
	return TillKey{Store: z.Store, Terminal: z.Terminal, BusinessDay: z.BusinessDay, Currency: z.Currency}
}

// TillTotals are the totals each till day's Z report must match, folded
// from its sale.completed, return.completed and sale.voided events: the
// arithmetic of the end-to-end verifier and of the cloud's reconciliation.
// Sales, Returns, Voids and Tenders are folded; Net is derived from them
// by TillClosed's rule (sales − returns − voids) after every event.
type TillTotals map[TillKey]*TillClosed

// Add folds one event into its till day's totals and reports whether it
// counted: events of other types, and bodies that do not decode, do not.
//
// A sale adds its total to sales and each tender's amount to that tender,
// cash net of the change (change given with no cash tender is cash paid
// out); a return adds to returns and takes its tenders back; a void adds
// to voids and takes its tenders back.
func (m TillTotals) Add(typ string, body []byte) bool {
	switch typ {
	case TypeSaleCompleted, TypeReturnCompleted:
		var t Transaction
		if Decode(typ, body, &t) != nil {
			return false
		}
		m.AddTransaction(typ, &t)
	case TypeSaleVoided:
		var v Void
		if Decode(typ, body, &v) != nil {
			return false
		}
		m.AddVoid(&v)
	default:
		return false
	}
	return true
}

// AddTransaction is Add of a body already decoded: t is the body of a
// sale.completed (typ TypeSaleCompleted) or, otherwise, of a
// return.completed.
func (m TillTotals) AddTransaction(typ string, t *Transaction) {
	z := m.get(TillKey{t.Store, t.Terminal, t.BusinessDay, t.Currency})
	if typ == TypeSaleCompleted {
		z.Sales.Count++
		z.Sales.Total += t.Total
		for _, tn := range t.Tenders {
			amt := tn.Amount
			if tn.Type == "cash" {
				amt -= t.Change
			}
			z.tender(tn.Type, amt)
		}
		if t.Change > 0 && !slices.ContainsFunc(t.Tenders, func(tn Tender) bool { return tn.Type == "cash" }) {
			z.tender("cash", -t.Change)
		}
	} else {
		z.Returns.Count++
		z.Returns.Total += t.Total
		for _, tn := range t.Tenders {
			z.tender(tn.Type, -tn.Amount)
		}
	}
	z.deriveNet()
}

// AddVoid is Add of a sale.voided body already decoded.
func (m TillTotals) AddVoid(v *Void) {
	z := m.get(TillKey{v.Store, v.Terminal, v.BusinessDay, v.Currency})
	z.Voids.Count++
	z.Voids.Total += v.Total
	for _, tn := range v.Tenders {
		z.tender(tn.Type, -tn.Amount)
	}
	z.deriveNet()
}

// deriveNet sets Net as a Z report must state it: sales − returns − voids.
func (z *TillClosed) deriveNet() { z.Net = z.Sales.Total - z.Returns.Total - z.Voids.Total }

func (m TillTotals) get(k TillKey) *TillClosed {
	z, ok := m[k]
	if !ok {
		z = &TillClosed{Store: k.Store, Terminal: k.Terminal, BusinessDay: k.BusinessDay, Currency: k.Currency}
		m[k] = z
	}
	return z
}

func (z *TillClosed) tender(typ string, amount int64) {
	for i := range z.Tenders {
		if z.Tenders[i].Type == typ {
			z.Tenders[i].Count++
			z.Tenders[i].Amount += amount
			return
		}
	}
	z.Tenders = append(z.Tenders, TenderTally{Type: typ, Count: 1, Amount: amount})
}

// Of returns the totals of the till day z covers (zero totals when none
// of its events were added).
func (m TillTotals) Of(z *TillClosed) TillClosed {
	if got := m[z.Key()]; got != nil {
		return *got
	}
	k := z.Key()
	return TillClosed{Store: k.Store, Terminal: k.Terminal, BusinessDay: k.BusinessDay, Currency: k.Currency}
}

// Reconcile compares what a Z report says with the totals of its till day
// (TillTotals.Of) and returns the differences, sorted, in words (nil when
// they match): the count and total of sales, returns and voids, and the
// net amount per tender, a tender the report leaves out counting when its
// amount is not zero.
func Reconcile(said *TillClosed, held TillClosed) []string {
	var diffs []string
	for _, t := range []struct {
		name      string
		said, has Tally
	}{{"sales", said.Sales, held.Sales}, {"returns", said.Returns, held.Returns}, {"voids", said.Voids, held.Voids}} {
		if t.said != t.has {
			diffs = append(diffs, fmt.Sprintf("%s: the Z report says %d for %d, the ledger holds %d for %d",
				t.name, t.said.Count, t.said.Total, t.has.Count, t.has.Total))
		}
	}
	has := map[string]int64{}
	for _, t := range held.Tenders {
		has[t.Type] = t.Amount
	}
	for _, t := range said.Tenders {
		if has[t.Type] != t.Amount {
			diffs = append(diffs, fmt.Sprintf("tender %s: the Z report says %d, the ledger adds up to %d", t.Type, t.Amount, has[t.Type]))
		}
		delete(has, t.Type)
	}
	for typ, amt := range has {
		if amt != 0 {
			diffs = append(diffs, fmt.Sprintf("tender %s: the ledger adds up to %d, which the Z report leaves out", typ, amt))
		}
	}
	sort.Strings(diffs)
	return diffs
}
