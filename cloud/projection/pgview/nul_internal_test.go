package pgview

import (
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// TestNULInABodyCommits: a sale whose SKU holds a NUL (valid CBOR text, and
// refused by the edge's intake today, but an older edge or a forged till
// record may still carry one) commits, and is an undecodable body,
// counted nowhere. Before, its text reached a Postgres text column and
// failed the commit as a data error, so that its stream could never commit
// past it.
func TestNULInABodyCommits(t *testing.T) {
	r := newRig(t)
	l := projectiontest.New(t)
	bad := projectiontest.Txn("2026-11-30", "t-1", "USD", false, 0, "cash", 0,
		projectiontest.Line("sk\x00u", 1000, 250, 0, 20))
	good := projectiontest.Txn("2026-11-30", "t-2", "USD", false, 0, "cash", 0,
		projectiontest.Line("sku", 1000, 250, 0, 20))
	r.commit(l.Add("e1", "sale-1", pos.TypeSaleCompleted, bad), l.Add("e1", "sale-2", pos.TypeSaleCompleted, good))
	if n := r.count(`SELECT count(*) FROM ledger`); n != 2 {
		t.Fatalf("%d records committed, want 2", n)
	}
	var detail string
	if err := r.pool.QueryRow(t.Context(), `SELECT detail FROM anomalies WHERE kind = 'undecodable'`).Scan(&detail); err != nil {
		t.Fatalf("the undecodable anomaly: %v", err)
	}
	if !strings.Contains(detail, "lines[0].sku") || !strings.Contains(detail, "NUL") {
		t.Fatalf("anomaly %q does not name the field and the NUL", detail)
	}
	if n := r.count(`SELECT count(*) FROM sales_by_sku`); n != 1 {
		t.Fatalf("%d SKU rows, want only the good sale's", n)
	}
	if d := r.reference(); len(d) > 0 {
		t.Fatalf("rows differ from the fold: %v", d[0])
	}
}
