package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// recordsSeen is a Projection that keeps what the commits gave it.
type recordsSeen struct{ recs []ledger.Committed }

func (p *recordsSeen) Apply(_ context.Context, _ pgx.Tx, recs []ledger.Committed) error {
	p.recs = append(p.recs, recs...)
	return nil
}

// TestReadCommitted: the ledger read back by position range is what the
// commits gave the projections, record for record (stream, position,
// bytes, link hash, decoded record), in position order; LastPos is the
// last position.
func TestReadCommitted(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	seen := &recordsSeen{}
	l := MustLedger(t, url, ledger.Options{Projections: []ledger.Projection{seen}})
	for _, id := range []string{"edge-a", "edge-b"} {
		e := MustAddEdge(t, l, id)
		c := makeChain(t, protocol.Stream{Edge: id, Epoch: newEpoch(t)}, 12, time.Now())
		MustCommit(t, l, inputs(cut(c, e, 5)...)...)
	}
	conn := MustConn(t, url)
	last, err := ledger.LastPos(ctx, conn)
	if err != nil || last != seen.recs[len(seen.recs)-1].Pos {
		t.Fatalf("last pos %d, %v; the last committed is %d", last, err, seen.recs[len(seen.recs)-1].Pos)
	}
	var got []ledger.Committed
	for after := int64(0); ; {
		page, err := ledger.ReadCommitted(ctx, conn, after, last, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1].Pos
	}
	if len(got) != len(seen.recs) {
		t.Fatalf("read %d records, committed %d", len(got), len(seen.recs))
	}
	for i, g := range got {
		w := seen.recs[i]
		if g.Pos != w.Pos || g.Stream != w.Stream || g.Hash != w.Hash || string(g.Raw) != string(w.Raw) ||
			g.Record.Seq != w.Record.Seq || g.Record.ID != w.Record.ID || !g.CommittedAt.Equal(w.CommittedAt) {
			t.Fatalf("record %d: read %+v, committed %+v", i, g, w)
		}
	}
	if tail, err := ledger.ReadCommitted(ctx, conn, got[3].Pos, got[5].Pos, 0); err != nil || len(tail) != 2 || tail[0].Pos != got[4].Pos {
		t.Errorf("positions (%d, %d]: %d records, %v", got[3].Pos, got[5].Pos, len(tail), err)
	}
}
