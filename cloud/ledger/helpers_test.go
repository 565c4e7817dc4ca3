package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// MustConn opens a connection to url, closed when tb ends.
func MustConn(tb testing.TB, url string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// MustMigratedDB returns the URL of a fresh, migrated database.
func MustMigratedDB(tb testing.TB) string {
	tb.Helper()
	url := pgtest.New(tb)
	if err := ledger.Migrate(context.Background(), MustConn(tb, url)); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	return url
}

// MustLedger returns a Ledger on its own connection to url.
func MustLedger(tb testing.TB, url string, opts ledger.Options) *ledger.Ledger {
	tb.Helper()
	return ledger.New(MustConn(tb, url), opts)
}

// testEdge is an edge with its signing key.
type testEdge struct {
	ID     string
	Signer *protocol.Signer
}

func newTestEdge(tb testing.TB, id string) *testEdge {
	tb.Helper()
	return &testEdge{ID: id, Signer: protocoltest.NewSigner(tb)}
}

// MustAddEdge makes a test edge and registers it.
func MustAddEdge(tb testing.TB, l *ledger.Ledger, id string) *testEdge {
	tb.Helper()
	e := newTestEdge(tb, id)
	if _, err := l.AddEdge(context.Background(), id, e.Signer.Public()); err != nil {
		tb.Fatalf("add edge %s: %v", id, err)
	}
	return e
}

func newEpoch(tb testing.TB) protocol.Epoch { return protocoltest.NewEpoch(tb) }

// chain is a stream's records 1..n as an edge's outbox would hold them;
// each segment says which edge's key signs it.
type chain = protocoltest.Stream

// makeChain builds n records of stream s, alternating ledger and
// telemetry types, starting at wall time base.
func makeChain(tb testing.TB, s protocol.Stream, n int, base time.Time) *chain {
	tb.Helper()
	c := &chain{Stream: s}
	extend(tb, c, n, base, "")
	return c
}

// extend appends n records to c; salt changes their content (to make a
// fork).
func extend(tb testing.TB, c *chain, n int, base time.Time, salt string) {
	tb.Helper()
	for range n {
		seq := c.Last() + 1
		typ := "sale.completed"
		if seq%5 == 0 {
			typ = "telemetry.temperature"
		}
		body, err := protocol.NewBody(map[string]any{"n": seq, "salt": salt})
		if err != nil {
			tb.Fatal(err)
		}
		at := base.Add(time.Duration(seq) * time.Millisecond)
		c.AddEvent(fmt.Sprintf("dev-%d", seq%3), protocol.Event{
			ID: fmt.Sprintf("ev-%d%s", seq, salt), Type: typ, TS: at, Body: body})
	}
}

// segment returns records first..last of c, signed by e.
func segment(c *chain, e *testEdge, first, last uint64) *protocol.Segment {
	return c.SignedBy(e.Signer).Segment(first, last)
}

// cut cuts c into segments of size records (the last may be shorter),
// signed by e.
func cut(c *chain, e *testEdge, size int) []*protocol.Segment {
	return c.SignedBy(e.Signer).Segments(size)
}

func inputs(segs ...*protocol.Segment) []ledger.Input {
	in := make([]ledger.Input, len(segs))
	for i, s := range segs {
		in[i] = ledger.Input{TopicEdge: s.Edge, Segment: s}
	}
	return in
}

// MustCommit commits segs in one batch and returns the outcomes.
func MustCommit(tb testing.TB, l *ledger.Ledger, in ...ledger.Input) []ledger.Outcome {
	tb.Helper()
	out, err := l.Commit(context.Background(), in)
	if err != nil {
		tb.Fatalf("commit: %v", err)
	}
	return out
}

// storedRows returns the raw bytes of a stream's ledger rows, in pos order,
// with their seqs.
func storedRows(tb testing.TB, conn *pgx.Conn, s protocol.Stream) (seqs []uint64, raws [][]byte) {
	tb.Helper()
	rows, err := conn.Query(context.Background(),
		`SELECT seq, raw FROM ledger WHERE edge = $1 AND epoch = $2 ORDER BY pos`, s.Edge, s.Epoch[:])
	if err != nil {
		tb.Fatal(err)
	}
	var seq int64
	var raw []byte
	if _, err := pgx.ForEachRow(rows, []any{&seq, &raw}, func() error {
		seqs = append(seqs, uint64(seq))
		raws = append(raws, raw)
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return seqs, raws
}

func count(tb testing.TB, conn *pgx.Conn, sql string, args ...any) int {
	tb.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return n
}
