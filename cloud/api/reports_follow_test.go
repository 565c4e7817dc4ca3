package api_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/cloud/projection/pgview"
	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// With the projection folded behind the commits (pgview.Follower), a
// report says honestly how far it reaches: as_of is the position folded
// through, and a store counts as complete only as far as the folded
// records reach, not as far as the commits do. Once the follower folds
// the rest, both move up to the ledger's end.
func TestReportsBehindTheCommits(t *testing.T) {
	ctx := context.Background()
	e := MustEnv(t, envOptions{}) // the commit folds nothing
	if _, err := e.Ledger.AddTenant(ctx, "t1", "Tenant one"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Ledger.AddStore(ctx, ledger.Store{Tenant: "t1", ID: "s1", Name: "Shop one", TimeZone: "America/New_York", Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
	s := e.MustStream(t, "edge-1")
	if err := e.Ledger.SetEdgeTenant(ctx, "edge-1", "t1", "s1"); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, e.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	f := pgview.NewFollower(pgview.New(nil), ledger.New(pool, ledger.Options{}), pool)
	// catchUp folds everything committed, as soon as no other transaction
	// of the server holds the horizon below it.
	catchUp := func() {
		t.Helper()
		var want int64
		if err := e.Conn.QueryRow(ctx, `SELECT max(pos) FROM ledger`).Scan(&want); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 60*time.Second, fmt.Sprintf("the follower folded through position %d", want), func() bool {
			if _, err := f.CatchUp(ctx); err != nil {
				t.Fatal(err)
			}
			return f.Through() >= want
		})
	}

	saleA := projectiontest.Txn(day1, "A", "USD", false, 0, "cash", 20, projectiontest.Line("sku-1", 2000, 500, 0, 80))
	saleB := projectiontest.Txn(day1, "B", "USD", false, 0, "card", 0, projectiontest.Line("sku-2", 1000, 250, 50, 20))
	saleC := projectiontest.Txn(day2, "C", "USD", false, 0, "cash", 0, projectiontest.Line("sku-1", 1000, 500, 0, 40))
	rec := func(typ string, body any) projection.Record {
		return projection.Record{Record: protocol.Record{Type: typ, Body: projectiontest.MustBody(t, body)}}
	}
	z := projectiontest.ZOf(t, pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: day1, Currency: "USD"},
		rec(pos.TypeSaleCompleted, saleA), rec(pos.TypeSaleCompleted, saleB))
	at := time.Date(2026, 2, 10, 15, 0, 0, 0, time.UTC) // 10:00 in New York on day 1
	for i, ev := range []struct {
		typ  string
		body any
		at   time.Time
	}{
		{pos.TypeSaleCompleted, saleA, at},
		{pos.TypeSaleCompleted, saleB, at.Add(time.Hour)},
		{pos.TypeTillClosed, z, at.Add(8 * time.Hour)},
		{pos.TypeSaleCompleted, saleC, at.Add(24 * time.Hour)}, // 10:00 in New York on day 2
	} {
		s.AddEvent("till-1", protocol.Event{ID: fmt.Sprintf("ev-%d", i), Type: ev.typ, TS: ev.at, Body: projectiontest.MustBody(t, ev.body)})
	}
	tok, err := e.Ledger.CreateAPIToken(ctx, "t1-reader", "reader", "t1")
	if err != nil {
		t.Fatal(err)
	}
	lastPos := func() int64 {
		var p int64
		if err := e.Conn.QueryRow(ctx, `SELECT max(pos) FROM ledger`).Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}

	e.MustCommit(t, s, 1, 2)
	catchUp()
	folded := lastPos()
	e.MustCommit(t, s, 3, 4) // committed, not folded yet
	var p salesPage
	e.MustDo(t, 200, "GET", "/v1/reports/sales", tok, nil, &p)
	if p.AsOf != folded {
		t.Errorf("as_of %d, want %d (where the fold stands, not the ledger's end %d)", p.AsOf, folded, lastPos())
	}
	if len(p.Rows) != 1 || p.Rows[0].Transactions != 2 {
		t.Errorf("rows before the fold: %+v", p.Rows)
	}
	// The folded records reach 11:00 on day 1 in New York: no day is
	// complete in the rows, though the commits reach day 2.
	if len(p.Stores) != 1 || p.Stores[0].CompleteThrough != "2026-02-09" || p.Stores[0].Complete {
		t.Errorf("stores before the fold: %+v", p.Stores)
	}

	catchUp()
	e.MustDo(t, 200, "GET", "/v1/reports/sales", tok, nil, &p)
	if p.AsOf != lastPos() {
		t.Errorf("as_of %d after the fold, want %d", p.AsOf, lastPos())
	}
	if len(p.Rows) != 2 || len(p.Stores) != 1 || p.Stores[0] != (storeComplete{Store: "s1", Requested: day2, CompleteThrough: day1}) {
		t.Errorf("after the fold: rows %+v, stores %+v", p.Rows, p.Stores)
	}

	// A rebuild's shadow checkpoint, far behind, is not what the live rows
	// reflect: as_of and completeness stay.
	if _, err := e.Conn.Exec(ctx, `INSERT INTO projection_checkpoints (name, version, last_pos, digest) VALUES ('pos_rebuild', 1, 1, sha256(''))`); err != nil {
		t.Fatal(err)
	}
	e.MustDo(t, 200, "GET", "/v1/reports/sales", tok, nil, &p)
	if p.AsOf != lastPos() || len(p.Stores) != 1 || p.Stores[0].CompleteThrough != day1 {
		t.Errorf("during a rebuild: as_of %d (want %d), stores %+v", p.AsOf, lastPos(), p.Stores)
	}
}
