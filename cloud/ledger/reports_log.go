package ledger

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// The two logs behind the reports: the inventory movements that explain
// every on-hand figure, and the restatements that explain every till day
// that changed after it matched its Z report. Both are append-only tables
// the commit's fold writes (migration 0007), read in ledger order.

var movementsSpec = reportSpec{
	name: "inventory movements", table: "inventory_movements",
	key:     []keyCol{{"pos", "bigint"}, {"ord", "integer"}},
	cols:    `tenant, pos, ord, store, sku, reason, delta, on_hand`,
	filters: map[string]string{"store": "store", "sku": "sku"},
	pos:     "pos",
}

// MovementRow is one change to one item's stock on hand in one store: the
// Ord-th movement the ledger record at Pos made. Quantities are
// thousandths. A count (Reason "count") sets on hand to OnHand and has
// Delta 0; every other reason (sale, return, void, or the adjustment's
// own reason) adds Delta, and OnHand is the stock after it.
type MovementRow struct {
	Tenant string `json:"tenant"`
	Pos    int64  `json:"pos"`
	Ord    int    `json:"ord"`
	Store  string `json:"store"`
	SKU    string `json:"sku"`
	Reason string `json:"reason"`
	Delta  int64  `json:"delta"`
	OnHand int64  `json:"on_hand"`
}

// MovementsReport reads the inventory movements in ledger order (pos,
// then ord). Store and SKU filter; FromPos and ToPos bound the position.
// Movements have no business day: the day range does not apply.
func (l *Ledger) MovementsReport(ctx context.Context, f ReportFilter) (Report[MovementRow], error) {
	return runReport(ctx, l, movementsSpec, f, func(r pgx.Row) (MovementRow, error) {
		var v MovementRow
		var ord int32
		err := r.Scan(&v.Tenant, &v.Pos, &ord, &v.Store, &v.SKU, &v.Reason, &v.Delta, &v.OnHand)
		v.Ord = int(ord)
		return v, err
	}, func(v MovementRow) []string { return []string{strconv.FormatInt(v.Pos, 10), strconv.Itoa(v.Ord)} },
		func(v MovementRow) (string, string) { return v.Store, "" })
}

var restatementsSpec = reportSpec{
	name: "restatements", table: "restatements",
	key:     []keyCol{{"pos", "bigint"}, {"ord", "integer"}},
	cols:    `tenant, pos, ord, store, terminal, business_day, currency, event_id, type, status, what`,
	filters: map[string]string{"store": "store", "terminal": "terminal"},
	days:    "business_day",
}

// RestatementRow is one event that changed a till day after the day had
// matched its Z report: the event (Pos, EventID, Type), the till day it
// changed, the day's reconciliation status after it, and What differs
// from the Z since, in words.
type RestatementRow struct {
	Tenant      string   `json:"tenant"`
	Pos         int64    `json:"pos"`
	Ord         int      `json:"ord"`
	Store       string   `json:"store"`
	Terminal    string   `json:"terminal"`
	BusinessDay string   `json:"business_day"`
	Currency    string   `json:"currency"`
	EventID     string   `json:"event_id"`
	Type        string   `json:"type"`
	Status      string   `json:"status"`
	What        []string `json:"what"`
}

// RestatementsReport reads the restatement log in ledger order. Store,
// terminal and the business-day range filter.
func (l *Ledger) RestatementsReport(ctx context.Context, f ReportFilter) (Report[RestatementRow], error) {
	return runReport(ctx, l, restatementsSpec, f, func(r pgx.Row) (RestatementRow, error) {
		var v RestatementRow
		var ord int32
		var d time.Time
		err := r.Scan(&v.Tenant, &v.Pos, &ord, &v.Store, &v.Terminal, &d, &v.Currency, &v.EventID, &v.Type, &v.Status, &v.What)
		v.Ord, v.BusinessDay = int(ord), day(d)
		if v.What == nil {
			v.What = []string{}
		}
		return v, err
	}, func(v RestatementRow) []string { return []string{strconv.FormatInt(v.Pos, 10), strconv.Itoa(v.Ord)} },
		func(v RestatementRow) (string, string) { return v.Store, v.BusinessDay })
}
