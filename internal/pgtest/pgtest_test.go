package pgtest_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func connect(tb testing.TB, connURL string) *pgx.Conn {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		tb.Fatalf("connect %s: %v", connURL, err)
	}
	tb.Cleanup(func() { conn.Close(ctx) })
	return conn
}

// adminURL points at the maintenance database of the server behind u.
func adminURL(tb testing.TB, u string) string {
	tb.Helper()
	p, err := url.Parse(u)
	if err != nil {
		tb.Fatal(err)
	}
	p.Path = "/postgres"
	return p.String()
}

func dbName(tb testing.TB, conn *pgx.Conn) string {
	tb.Helper()
	var name string
	if err := conn.QueryRow(context.Background(), "SELECT current_database()").Scan(&name); err != nil {
		tb.Fatal(err)
	}
	return name
}

func TestNewIsEmptyAndUsable(t *testing.T) {
	ctx := context.Background()
	conn := connect(t, pgtest.New(t))

	if name := dbName(t, conn); !strings.HasPrefix(name, pgtest.DBPrefix) {
		t.Errorf("database %q lacks prefix %q", name, pgtest.DBPrefix)
	}
	var tables int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables
		WHERE table_schema NOT IN ('pg_catalog', 'information_schema')`).Scan(&tables)
	if err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Fatalf("new database has %d user tables, want 0", tables)
	}

	if _, err := conn.Exec(ctx, `CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO t VALUES (1, 'one'), (2, 'two')`); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := conn.QueryRow(ctx, `SELECT v FROM t WHERE id = $1`, 2).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != "two" {
		t.Fatalf("got %q, want %q", v, "two")
	}
}

func TestNewGivesDistinctDatabases(t *testing.T) {
	ctx := context.Background()
	a, b := pgtest.New(t), pgtest.New(t)
	if a == b {
		t.Fatalf("two calls returned the same URL %s", a)
	}
	ca, cb := connect(t, a), connect(t, b)
	if na, nb := dbName(t, ca), dbName(t, cb); na == nb {
		t.Fatalf("both URLs lead to database %s", na)
	}
	// A table made in one is not seen in the other.
	if _, err := ca.Exec(ctx, `CREATE TABLE only_in_a (x int)`); err != nil {
		t.Fatal(err)
	}
	var found bool
	err := cb.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'only_in_a')`).Scan(&found)
	if err != nil {
		t.Fatal(err)
	}
	if found {
		t.Fatal("table made in the first database is visible in the second")
	}
}

func TestCleanupDropsDatabase(t *testing.T) {
	var u, name string
	t.Run("uses", func(t *testing.T) {
		u = pgtest.New(t)
		// Leave the connection open on purpose: cleanup must drop the
		// database even when a test forgets to close it.
		conn, err := pgx.Connect(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		name = dbName(t, conn)
	})
	if name == "" {
		t.Fatal("subtest did not get a database")
	}
	admin := connect(t, adminURL(t, u))
	var exists bool
	err := admin.QueryRow(context.Background(),
		`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists)
	if err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("database %s still exists after its test's cleanup", name)
	}
}
