package pgview

import (
	"fmt"
	"strings"
)

// column is one column of a projection table as the SQL built here moves
// it: arr is the array type its values travel in (one array parameter per
// column, unnested), in turns the unnested value into the column's type
// (%s is the unnested value), out reads it back (%s is the column).
type column struct {
	name, arr, in, out string
}

func col(name, arr string) column { return column{name: name, arr: arr, in: "%s", out: "%s"} }

// dateCol travels as text 'YYYY-MM-DD', whatever the server's DateStyle.
func dateCol(name string) column {
	return column{name: name, arr: "text[]", in: "%s::date", out: "to_char(%s, 'YYYY-MM-DD')"}
}

// textsCol is a text[] column; it travels as a JSON array of strings.
func textsCol(name string) column {
	return column{name: name, arr: "text[]", in: "ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))", out: "%s"}
}

// bigintsCol is a bigint[] column; it travels as a JSON array of numbers.
func bigintsCol(name string) column {
	return column{name: name, arr: "text[]", in: "ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)::bigint)", out: "%s"}
}

func jsonCol(name string) column {
	return column{name: name, arr: "text[]", in: "%s::jsonb", out: "%s::text"}
}

// table is one projection table: its key columns (its primary key, tenant
// first) and its other columns.
type table struct {
	name string
	key  []column
	vals []column
}

func (t *table) all() []column { return append(append([]column(nil), t.key...), t.vals...) }

func names(cs []column, prefix string) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = prefix + c.name
	}
	return strings.Join(s, ", ")
}

// fetchSQL selects the rows with the keys given as one array per key
// column, locked, in key order (every commit locks in the same order).
func (t *table) fetchSQL(suffix string) string {
	var params, on, out []string
	for i, c := range t.key {
		params = append(params, fmt.Sprintf("$%d::%s", i+1, c.arr))
		on = append(on, fmt.Sprintf("t.%s = %s", c.name, fmt.Sprintf(c.in, "k."+c.name)))
	}
	for _, c := range t.all() {
		out = append(out, fmt.Sprintf(c.out, "t."+c.name))
	}
	return fmt.Sprintf(`SELECT %s FROM %s%s t JOIN unnest(%s) AS k(%s) ON %s ORDER BY %s FOR UPDATE OF t`,
		strings.Join(out, ", "), t.name, suffix, strings.Join(params, ", "), names(t.key, ""),
		strings.Join(on, " AND "), names(t.key, "t."))
}

// upsertSQL writes rows given as one array per column; the rows of one
// batch have distinct keys.
func (t *table) upsertSQL(suffix string) string {
	s := t.insertSQL(suffix)
	if len(t.vals) == 0 {
		return s + " ON CONFLICT DO NOTHING"
	}
	set := make([]string, len(t.vals))
	for i, c := range t.vals {
		set[i] = fmt.Sprintf("%s = EXCLUDED.%s", c.name, c.name)
	}
	return fmt.Sprintf("%s ON CONFLICT (%s) DO UPDATE SET %s", s, names(t.key, ""), strings.Join(set, ", "))
}

// insertSQL appends rows given as one array per column.
func (t *table) insertSQL(suffix string) string {
	all := t.all()
	var params, in []string
	for i, c := range all {
		params = append(params, fmt.Sprintf("$%d::%s", i+1, c.arr))
		in = append(in, fmt.Sprintf(c.in, "u."+c.name))
	}
	return fmt.Sprintf(`INSERT INTO %s%s (%s) SELECT %s FROM unnest(%s) AS u(%s)`, t.name, suffix, names(all, ""),
		strings.Join(in, ", "), strings.Join(params, ", "), names(all, ""))
}

var (
	tenant   = col("tenant", "text[]")
	store    = col("store", "text[]")
	currency = col("currency", "text[]")
	day      = dateCol("business_day")
)

func bigints(names ...string) []column {
	cs := make([]column, len(names))
	for i, n := range names {
		cs[i] = col(n, "bigint[]")
	}
	return cs
}

// The projection tables (migration 0007), in the order check compares them.
var (
	tSales = &table{name: "sales_summary", key: []column{tenant, store, day, currency},
		vals: bigints("transactions", "items", "gross_sales", "discounts", "returns_count", "returns_amount",
			"voids_count", "voids_amount", "tax", "net_sales", "total_collected")}
	tSKU = &table{name: "sales_by_sku", key: []column{tenant, store, day, col("sku", "text[]"), currency},
		vals: bigints("qty_sold", "qty_returned", "qty_voided", "gross", "discounts", "returns", "voids", "net")}
	tHour = &table{name: "sales_by_hour",
		key:  []column{tenant, store, day, {name: "hour", arr: "bigint[]", in: "%s::smallint", out: "%s::bigint"}, currency},
		vals: bigints("count", "net")}
	tTenders = &table{name: "tenders", key: []column{tenant, store, day, col("type", "text[]"), currency},
		vals: bigints("count", "amount", "change", "refunds", "net")}
	tOnHand = &table{name: "inventory_on_hand", key: []column{tenant, store, col("sku", "text[]")},
		vals: bigints("on_hand")}
	tTelemetry = &table{name: "telemetry_per_minute",
		key:  []column{tenant, store, col("sensor", "text[]"), col("metric", "text[]"), col("minute", "timestamptz[]")},
		vals: []column{col("count", "bigint[]"), col("min", "float8[]"), col("max", "float8[]"), col("sum", "float8[]")}}
	tTills = &table{name: "till_reconciliation", key: []column{tenant, store, col("terminal", "text[]"), day, currency},
		vals: append(append([]column{col("status", "text[]"), textsCol("reason")},
			bigints("ledger_sales_count", "ledger_sales_total", "ledger_returns_count", "ledger_returns_total",
				"ledger_voids_count", "ledger_voids_total", "ledger_net")...),
			jsonCol("ledger_tenders"), jsonCol("z"), col("z_pos", "bigint[]"), col("z_event_id", "text[]"),
			col("z_count", "bigint[]"), col("matched", "bool[]"), bigintsCol("restated"))}
	tTxns = &table{name: "projection_txns", key: []column{tenant, store, col("terminal", "text[]"), day, col("txn", "text[]")},
		vals: []column{col("pos", "bigint[]"), col("event_id", "text[]"), col("type", "text[]"), currency,
			col("tax", "bigint[]"), col("net", "bigint[]"), jsonCol("lines"), col("voided", "bool[]")}}
	tMovements = &table{name: "inventory_movements", key: []column{col("pos", "bigint[]"), col("ord", "bigint[]")},
		vals: []column{tenant, store, col("sku", "text[]"), col("reason", "text[]"), col("delta", "bigint[]"), col("on_hand", "bigint[]")}}
	tRestatements = &table{name: "restatements", key: []column{col("pos", "bigint[]"), col("ord", "bigint[]")},
		vals: []column{tenant, store, col("terminal", "text[]"), day, currency, col("event_id", "text[]"),
			col("type", "text[]"), col("status", "text[]"), textsCol("what")}}
	tAnomalies = &table{name: "anomalies", key: []column{col("pos", "bigint[]"), col("ord", "bigint[]")},
		vals: []column{tenant, col("kind", "text[]"), col("event_id", "text[]"), col("type", "text[]"), store,
			col("other_pos", "bigint[]"), col("other_event_id", "text[]"), col("detail", "text[]")}}

	// tables are every table a rebuild recomputes, in the order check
	// compares them.
	tables = []*table{tSales, tSKU, tHour, tTenders, tOnHand, tMovements, tTelemetry, tTills, tRestatements, tAnomalies, tTxns}
)
