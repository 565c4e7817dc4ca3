// Package pgtest gives each test its own fresh, empty PostgreSQL database.
//
// New returns a connection string for a database made for the calling test
// and dropped when it ends. Where the database lives:
//
//   - When OUTPOST_TEST_DATABASE_URL is set (for example
//     postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable), on that
//     server: its user must be allowed to CREATE DATABASE. Dropping uses
//     DROP DATABASE ... WITH (FORCE), so the server must be PostgreSQL 13
//     or later.
//   - Otherwise on a private throwaway cluster (internal/pgcluster) that the
//     first New of the test binary starts, from the initdb and postgres
//     binaries on PATH or in /usr/lib/postgresql/*/bin, on a free port of
//     127.0.0.1, in a temporary directory, with fsync off. New fails the
//     test, never skips it, when there are no such binaries.
//
// A package whose tests use New stops the private cluster and removes its
// directory by calling Main from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Without that, the cluster outlives the tests until the test binary
// exits; on Linux the kernel then kills it (PR_SET_PDEATHSIG), but its
// temporary directory is left behind.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/internal/pgcluster"
)

// EnvURL names the variable that points the tests at an existing server.
const EnvURL = "OUTPOST_TEST_DATABASE_URL"

// DBPrefix starts the name of every database New creates.
const DBPrefix = "outpost_t_"

const notFoundMsg = "PostgreSQL server binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: " +
	"install them with `apt-get install postgresql` (Debian/Ubuntu) or `brew install postgresql@15` (macOS), " +
	"or set " + EnvURL

// opTimeout bounds creating or dropping one database.
const opTimeout = 30 * time.Second

// The private cluster, started by the first New that needs it.
var private struct {
	once    sync.Once
	mu      sync.Mutex // guards cluster and dir against Main
	cluster *pgcluster.Cluster
	dir     string
	err     error
}

// New creates an empty database for tb, drops it in tb.Cleanup, and returns
// a postgres:// URL for it as a superuser. It calls tb.Fatal when there is
// no server to put it on.
func New(tb testing.TB) string {
	tb.Helper()
	admin, logTail := adminURL(tb)
	name := DBPrefix + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := execSQL(ctx, admin, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("pgtest: create database %s: %v%s", name, err, logTail())
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		// FORCE ends sessions the test left open.
		if err := execSQL(ctx, admin, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v%s", name, err, logTail())
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// Main runs the tests, stops the private cluster if one was started,
// removes its directory, and exits with the tests' code. Call it from
// TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := stopPrivate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// adminURL returns a URL to a database on the server New should use, from
// which to create and drop databases, and a function giving the server
// log's tail for failure messages.
func adminURL(tb testing.TB) (string, func() string) {
	tb.Helper()
	if env := os.Getenv(EnvURL); env != "" {
		u, err := url.Parse(env)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			tb.Fatalf("pgtest: %s must be a postgres:// URL, got %q", EnvURL, env)
		}
		return env, func() string { return "" }
	}
	private.once.Do(startPrivate)
	private.mu.Lock()
	c, err := private.cluster, private.err
	private.mu.Unlock()
	switch {
	case errors.Is(err, pgcluster.ErrNotFound):
		tb.Fatal(notFoundMsg)
	case err != nil:
		tb.Fatalf("pgtest: start private PostgreSQL cluster (set %s to use a running server instead): %v", EnvURL, err)
	case c == nil:
		tb.Fatal("pgtest: private PostgreSQL cluster already stopped (New called after Main's tests ended?)")
	}
	return c.URL("postgres"), func() string {
		return "\n--- tail of " + c.LogPath() + " ---\n" + c.LogTail(30)
	}
}

func startPrivate() {
	private.mu.Lock()
	defer private.mu.Unlock()
	if _, err := pgcluster.FindBinaries(); err != nil {
		private.err = err
		return
	}
	dir, err := os.MkdirTemp("", "outpost-pgtest-")
	if err != nil {
		private.err = err
		return
	}
	c, err := pgcluster.Start(context.Background(), pgcluster.Options{Dir: dir, NoFsync: true})
	if err != nil {
		os.RemoveAll(dir)
		private.err = err
		return
	}
	private.cluster, private.dir = c, dir
}

func stopPrivate() error {
	private.mu.Lock()
	defer private.mu.Unlock()
	if private.cluster == nil {
		return nil
	}
	err := private.cluster.Stop()
	if err == nil {
		err = os.RemoveAll(private.dir)
	} // else: keep the directory and its log for a look.
	private.cluster = nil
	if err != nil {
		return fmt.Errorf("pgtest: stop private cluster in %s: %w", private.dir, err)
	}
	return nil
}

func execSQL(ctx context.Context, connURL, sql string) error {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
