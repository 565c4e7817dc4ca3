package pgview

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// rig is a migrated database with the test directory (tenants t1 and t2;
// store s1 of t1 in New York, s2 of t2 in Berlin; edge e1 of t1, e2 of
// t2) and a ledger that folds every commit into the live projection.
type rig struct {
	tb     testing.TB
	pool   *pgxpool.Pool
	l      *ledger.Ledger
	p      *Projection
	chains map[string]*protocoltest.Stream
}

func newRig(tb testing.TB) *rig {
	tb.Helper()
	ctx := context.Background()
	pool := ledgertest.Pool(tb, ledgertest.URL(tb))
	r := &rig{tb: tb, pool: pool, p: New(nil), chains: map[string]*protocoltest.Stream{}}
	r.l = ledger.New(pool, ledger.Options{Projections: []ledger.Projection{r.p}})
	r.exec(`INSERT INTO tenants (id, name) VALUES ('t1', 'Tenant one'), ('t2', 'Tenant two')`)
	r.exec(`INSERT INTO stores (tenant, id, name, time_zone, currency) VALUES
		('t1', 's1', 'Store one', 'America/New_York', 'USD'), ('t2', 's2', 'Store two', 'Europe/Berlin', 'EUR')`)
	for _, e := range []string{"e1", "e2"} {
		s := protocoltest.NewSigner(tb)
		if _, err := r.l.AddEdge(ctx, e, s.Public()); err != nil {
			tb.Fatal(err)
		}
		r.chains[e] = protocoltest.NewStream(tb, e, s)
	}
	r.exec(`UPDATE edges SET tenant = 't1' WHERE id = 'e1'`)
	r.exec(`UPDATE edges SET tenant = 't2' WHERE id = 'e2'`)
	return r
}

// directory is what the rig's database says, in memory.
func (r *rig) directory() *projection.Directory {
	s := projectiontest.Stores(r.tb)
	return &projection.Directory{Stores: s, Edges: map[string]string{"e1": "t1", "e2": "t2"}}
}

func (r *rig) exec(sql string, args ...any) {
	r.tb.Helper()
	if _, err := r.pool.Exec(context.Background(), sql, args...); err != nil {
		r.tb.Fatalf("%s: %v", sql, err)
	}
}

// commit commits recs (each appended to its edge's chain) in one ledger
// batch: one segment per edge.
func (r *rig) commit(recs ...projection.Record) {
	r.tb.Helper()
	if err := r.commitErr(recs...); err != nil {
		r.tb.Fatal(err)
	}
}

// commitErr is commit for other goroutines than the test's: it returns
// what commit would fail with. Goroutines that call it at once must
// commit to different edges.
func (r *rig) commitErr(recs ...projection.Record) error {
	return r.commitInputs(context.Background(), r.inputs(recs...))
}

// inputs appends recs to their edges' chains and returns the ledger
// inputs that commit them: one segment per edge. They may be committed
// again (a redelivery) after a commit of them failed.
func (r *rig) inputs(recs ...projection.Record) []ledger.Input {
	first := map[string]uint64{}
	var edges []string
	for _, rec := range recs {
		c := r.chains[rec.Edge]
		if _, ok := first[rec.Edge]; !ok {
			first[rec.Edge] = c.Last() + 1
			edges = append(edges, rec.Edge)
		}
		pr := rec.Record
		pr.V = protocol.RecordVersion
		pr.Class = protocol.ClassOf(pr.Type)
		c.Add(pr)
	}
	var in []ledger.Input
	for _, e := range edges {
		c := r.chains[e]
		in = append(in, ledger.Input{TopicEdge: e, Segment: c.Segment(first[e], c.Last())})
	}
	return in
}

// commitInputs commits in and checks that every input was committed.
func (r *rig) commitInputs(ctx context.Context, in []ledger.Input) error {
	out, err := r.l.Commit(ctx, in)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	for i, o := range out {
		if o.Kind != ledger.KindCommitted {
			return fmt.Errorf("commit input %d: %v, not committed", i, o)
		}
	}
	return nil
}

// commitSplit commits recs in batches of random sizes.
func (r *rig) commitSplit(seed uint64, recs []projection.Record) {
	r.tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	for len(recs) > 0 {
		n := min(len(recs), 1+rng.IntN(25))
		r.commit(recs[:n]...)
		recs = recs[n:]
	}
}

// reference folds the whole ledger, as committed, in one batch in memory
// (the definition), writes it into tables with suffix _ref and returns the
// tables of the live projection that differ from it.
func (r *rig) reference() []Diff {
	r.tb.Helper()
	ctx := context.Background()
	recs, err := ledger.ReadCommitted(ctx, r.pool, 0, 1<<62, 0)
	if err != nil {
		r.tb.Fatal(err)
	}
	prs := make([]projection.Record, len(recs))
	for i, c := range recs {
		prs[i] = projection.Record{Pos: c.Pos, Record: c.Record}
	}
	d := projection.Fold(projection.NewState(), r.directory(), prs)
	var diffs []Diff
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, t := range tables {
			b.Queue(fmt.Sprintf(`CREATE TEMP TABLE %s_ref (LIKE %s INCLUDING ALL) ON COMMIT DROP`, t.name, t.name))
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		b = &pgx.Batch{}
		dir := r.directory()
		if err := queueWrites(b, d, "_ref", func(s string) string { st, _ := dir.Store(s); return st.Tenant }); err != nil {
			return err
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		diffs, err = compare(ctx, tx, "", "_ref")
		return err
	})
	if err != nil {
		r.tb.Fatalf("reference: %v", err)
	}
	return diffs
}

func (r *rig) count(sql string, args ...any) int {
	r.tb.Helper()
	var n int
	if err := r.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		r.tb.Fatalf("%s: %v", sql, err)
	}
	return n
}
