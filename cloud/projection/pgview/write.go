package pgview

import (
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/projection"
)

// queueWrites queues one upsert per table the delta touched (one row per
// key) and one insert per log it appended.
func queueWrites(b *pgx.Batch, d *projection.Delta, suffix string, ten tenantOf) error {
	if n := len(d.Tables.Sales); n > 0 {
		var t, s, dy, cu []string
		v := make([][]int64, 11)
		for k, x := range d.Tables.Sales {
			t, s, dy, cu = append(t, k.Tenant), append(s, k.Store), append(dy, k.BusinessDay), append(cu, k.Currency)
			for i, f := range []int64{x.Transactions, x.Items, x.GrossSales, x.Discounts, x.ReturnsCount, x.ReturnsAmount,
				x.VoidsCount, x.VoidsAmount, x.Tax, x.NetSales, x.TotalCollected} {
				v[i] = append(v[i], f)
			}
		}
		b.Queue(tSales.upsertSQL(suffix), append([]any{t, s, dy, cu}, anys(v)...)...)
	}
	if n := len(d.Tables.SKU); n > 0 {
		var t, s, dy, sku, cu []string
		v := make([][]int64, 8)
		for k, x := range d.Tables.SKU {
			t, s, dy, sku, cu = append(t, ten(k.Store)), append(s, k.Store), append(dy, k.BusinessDay), append(sku, k.SKU), append(cu, k.Currency)
			for i, f := range []int64{x.QtySold, x.QtyReturned, x.QtyVoided, x.Gross, x.Discounts, x.Returns, x.Voids, x.Net} {
				v[i] = append(v[i], f)
			}
		}
		b.Queue(tSKU.upsertSQL(suffix), append([]any{t, s, dy, sku, cu}, anys(v)...)...)
	}
	if n := len(d.Tables.Hour); n > 0 {
		var t, s, dy, cu []string
		var h, cnt, net []int64
		for k, x := range d.Tables.Hour {
			t, s, dy, cu = append(t, ten(k.Store)), append(s, k.Store), append(dy, k.BusinessDay), append(cu, k.Currency)
			h, cnt, net = append(h, int64(k.Hour)), append(cnt, x.Count), append(net, x.Net)
		}
		b.Queue(tHour.upsertSQL(suffix), t, s, dy, h, cu, cnt, net)
	}
	if n := len(d.Tables.Tenders); n > 0 {
		var t, s, dy, ty, cu []string
		v := make([][]int64, 5)
		for k, x := range d.Tables.Tenders {
			t, s, dy, ty, cu = append(t, ten(k.Store)), append(s, k.Store), append(dy, k.BusinessDay), append(ty, k.Type), append(cu, k.Currency)
			for i, f := range []int64{x.Count, x.Amount, x.Change, x.Refunds, x.Net} {
				v[i] = append(v[i], f)
			}
		}
		b.Queue(tTenders.upsertSQL(suffix), append([]any{t, s, dy, ty, cu}, anys(v)...)...)
	}
	if n := len(d.Tables.OnHand); n > 0 {
		var t, s, sku []string
		var q []int64
		for k, x := range d.Tables.OnHand {
			t, s, sku, q = append(t, ten(k.Store)), append(s, k.Store), append(sku, k.SKU), append(q, x)
		}
		b.Queue(tOnHand.upsertSQL(suffix), t, s, sku, q)
	}
	if n := len(d.Tables.Telemetry); n > 0 {
		var t, s, se, me []string
		var mi []time.Time
		var cnt []int64
		var lo, hi, sum []float64
		for k, x := range d.Tables.Telemetry {
			t, s, se, me, mi = append(t, k.Tenant), append(s, k.Store), append(se, k.Sensor), append(me, k.Metric), append(mi, k.Minute)
			cnt, lo, hi, sum = append(cnt, x.Count), append(lo, x.Min), append(hi, x.Max), append(sum, x.Sum)
		}
		b.Queue(tTelemetry.upsertSQL(suffix), t, s, se, me, mi, cnt, lo, hi, sum)
	}
	if n := len(d.Tills); n > 0 {
		var t, s, te, dy, cu, st, reason, tenders, restated []string
		var z, zID []*string
		var zPos []*int64
		v := make([][]int64, 7)
		var zc []int64
		var matched []bool
		for k, x := range d.Tills {
			t, s, te, dy, cu = append(t, ten(k.Store)), append(s, k.Store), append(te, k.Terminal), append(dy, k.BusinessDay), append(cu, k.Currency)
			st = append(st, x.Status)
			reason = append(reason, jsonText(nonNil(x.Reason)))
			l := &x.Ledger
			for i, f := range []int64{l.Sales.Count, l.Sales.Total, l.Returns.Count, l.Returns.Total, l.Voids.Count, l.Voids.Total, l.Net} {
				v[i] = append(v[i], f)
			}
			tenders = append(tenders, jsonText(l.Tenders))
			if x.Z != nil {
				zj, zp, zi := jsonText(x.Z), x.ZPos, x.ZID
				z, zPos, zID = append(z, &zj), append(zPos, &zp), append(zID, &zi)
			} else {
				z, zPos, zID = append(z, nil), append(zPos, nil), append(zID, nil)
			}
			zc, matched = append(zc, x.ZCount), append(matched, x.Matched)
			restated = append(restated, jsonText(nonNil(x.Restated)))
		}
		args := []any{t, s, te, dy, cu, st, reason}
		args = append(args, anys(v)...)
		args = append(args, tenders, z, zPos, zID, zc, matched, restated)
		b.Queue(tTills.upsertSQL(suffix), args...)
	}
	if n := len(d.Txns); n > 0 {
		var t, s, te, dy, tx, id, ty, cu, lines []string
		var p, tax, net []int64
		var voided []bool
		for k, x := range d.Txns {
			t, s, te, dy, tx = append(t, ten(k.Store)), append(s, k.Store), append(te, k.Terminal), append(dy, k.BusinessDay), append(tx, k.Txn)
			p, id, ty, cu = append(p, x.Pos), append(id, x.ID), append(ty, x.Type), append(cu, x.Currency)
			tax, net, lines, voided = append(tax, x.Tax), append(net, x.Net), append(lines, jsonText(nonNil(x.Lines))), append(voided, x.Voided)
		}
		b.Queue(tTxns.upsertSQL(suffix), t, s, te, dy, tx, p, id, ty, cu, tax, net, lines, voided)
	}
	if n := len(d.Movements); n > 0 {
		var p, ord, delta, q []int64
		var t, s, sku, reason []string
		o := ordinals()
		for _, m := range d.Movements {
			p, ord = append(p, m.Pos), append(ord, o(m.Pos))
			t, s, sku, reason = append(t, ten(m.Store)), append(s, m.Store), append(sku, m.SKU), append(reason, m.Reason)
			delta, q = append(delta, m.Delta), append(q, m.Qty)
		}
		b.Queue(tMovements.insertSQL(suffix), p, ord, t, s, sku, reason, delta, q)
	}
	if n := len(d.Restatements); n > 0 {
		var p, ord []int64
		var t, s, te, dy, cu, id, ty, st, what []string
		o := ordinals()
		for _, r := range d.Restatements {
			p, ord = append(p, r.Pos), append(ord, o(r.Pos))
			k := r.Till
			t, s, te, dy, cu = append(t, ten(k.Store)), append(s, k.Store), append(te, k.Terminal), append(dy, k.BusinessDay), append(cu, k.Currency)
			id, ty, st, what = append(id, r.ID), append(ty, r.Type), append(st, r.Status), append(what, jsonText(nonNil(r.What)))
		}
		b.Queue(tRestatements.insertSQL(suffix), p, ord, t, s, te, dy, cu, id, ty, st, what)
	}
	if n := len(d.Anomalies); n > 0 {
		var p, ord []int64
		var t, kind, id, ty, s, detail []string
		var other []*int64
		var otherID []*string
		o := ordinals()
		for _, x := range d.Anomalies {
			p, ord = append(p, x.Pos), append(ord, o(x.Pos))
			t, kind, id, ty, s, detail = append(t, x.Tenant), append(kind, x.Kind), append(id, x.ID), append(ty, x.Type), append(s, x.Store), append(detail, x.Detail)
			if x.Other != 0 {
				op, oi := x.Other, x.OtherID
				other, otherID = append(other, &op), append(otherID, &oi)
			} else {
				other, otherID = append(other, nil), append(otherID, nil)
			}
		}
		b.Queue(tAnomalies.insertSQL(suffix), p, ord, t, kind, id, ty, s, other, otherID, detail)
	}
	return nil
}

// ordinals numbers the rows one record appends: 0, 1, ... per pos.
func ordinals() func(int64) int64 {
	n := map[int64]int64{}
	return func(p int64) int64 { o := n[p]; n[p]++; return o }
}

func anys[T any](v []T) []any {
	out := make([]any, len(v))
	for i := range v {
		out[i] = v[i]
	}
	return out
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// jsonText encodes v, which is always encodable (plain structs and slices).
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("pgview: encode " + err.Error())
	}
	return string(b)
}
