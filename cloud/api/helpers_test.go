package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/api"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// clock is a settable clock shared by the ledger and the API.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// env is a running API on a fresh, migrated database.
type env struct {
	URL    string // the database's
	Conn   *pgx.Conn
	Ledger *ledger.Ledger
	Clock  *clock
	Cloud  *protocol.Signer
	Server *httptest.Server
	Log    *syncBuffer
	Admin  string // an admin API token
	Reader string // a reader API token
}

type envOptions struct {
	Unmigrated bool
	Ready      func(context.Context) error
	Live       func() error
	Metrics    http.Handler
	// Projections are the ledger's (none by default).
	Projections []ledger.Projection
	// StreamMaxDuration bounds the live tail's streams (the API's default
	// when zero).
	StreamMaxDuration time.Duration
	// Pool puts the ledger on a pool, as cloud serve does, rather than on
	// Conn: a query a handler makes outside its request's read
	// transaction then runs on another connection, as it would in
	// production (on one connection it would run inside that transaction).
	Pool bool
}

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

// MustSigner returns a signer with a fresh key.
func MustSigner(tb testing.TB) *protocol.Signer {
	tb.Helper()
	return protocoltest.NewSigner(tb)
}

// MustEnv starts the API on a fresh database. The ledger uses one
// connection, which is safe because the tests send one request at a time.
func MustEnv(tb testing.TB, o envOptions) *env {
	tb.Helper()
	ctx := context.Background()
	e := &env{URL: pgtest.New(tb), Clock: &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}, Log: &syncBuffer{}}
	e.Conn = MustConn(tb, e.URL)
	if !o.Unmigrated {
		if err := ledger.Migrate(ctx, e.Conn); err != nil {
			tb.Fatalf("migrate: %v", err)
		}
	}
	logger := slog.New(slog.NewJSONHandler(e.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var db ledger.DB = e.Conn
	if o.Pool {
		pool, err := pgxpool.New(ctx, e.URL)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(pool.Close)
		db = pool
	}
	e.Ledger = ledger.New(db, ledger.Options{Now: e.Clock.Now, Logger: logger, Projections: o.Projections})
	e.Cloud = MustSigner(tb)
	e.Server = httptest.NewServer(api.New(api.Options{
		Ledger: e.Ledger, CloudPublicKey: e.Cloud.Public(), Signer: e.Cloud, Ready: o.Ready, Live: o.Live, Metrics: o.Metrics,
		Logger: logger, Now: e.Clock.Now, StreamMaxDuration: o.StreamMaxDuration,
	}))
	tb.Cleanup(e.Server.Close)
	if !o.Unmigrated {
		var err error
		if e.Admin, err = e.Ledger.CreateAPIToken(ctx, "root", api.RoleAdmin, ""); err != nil {
			tb.Fatal(err)
		}
		if e.Reader, err = e.Ledger.CreateAPIToken(ctx, "viewer", api.RoleReader, ""); err != nil {
			tb.Fatal(err)
		}
	}
	return e
}

// response is an answer of the API.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing tb when it is not JSON.
func (r response) JSON(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Error returns the body's error message, failing tb when there is none.
func (r response) Error(tb testing.TB) string {
	tb.Helper()
	var e struct {
		Error string `json:"error"`
	}
	r.JSON(tb, &e)
	if e.Error == "" {
		tb.Fatalf("no error in %d answer %s", r.Status, r.Body)
	}
	return e.Error
}

// Do sends a request with token as its bearer token (none when empty);
// body is marshalled to JSON unless it is a string.
func (e *env) Do(tb testing.TB, method, path, token string, body any) response {
	tb.Helper()
	authz := ""
	if token != "" {
		authz = "Bearer " + token
	}
	return e.DoAuth(tb, method, path, authz, body)
}

// DoAuth is Do with authz as the whole Authorization header.
func (e *env) DoAuth(tb testing.TB, method, path, authz string, body any) response {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.Server.URL+path, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := e.Server.Client().Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// MustDo is Do that fails tb unless the status is want, and decodes the
// answer into v (when not nil).
func (e *env) MustDo(tb testing.TB, want int, method, path, token string, body, v any) response {
	tb.Helper()
	r := e.Do(tb, method, path, token, body)
	if r.Status != want {
		tb.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	if v != nil {
		r.JSON(tb, v)
	}
	return r
}

// wantError checks r's status and that its error message holds every
// one of parts.
func wantError(tb testing.TB, r response, status int, parts ...string) {
	tb.Helper()
	if r.Status != status {
		tb.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type %q, want application/json", ct)
	}
	msg := r.Error(tb)
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			tb.Errorf("error %q does not say %q", msg, p)
		}
	}
}

func hexKey(pub ed25519.PublicKey) string { return hex.EncodeToString(pub) }

// testStream is one outbox life of an edge: its records and signer.
type testStream = protocoltest.Stream

// MustStream registers edge (when new) and returns a new stream of it.
func (e *env) MustStream(tb testing.TB, edge string) *testStream {
	tb.Helper()
	s := protocoltest.NewStream(tb, edge, MustSigner(tb))
	if _, err := e.Ledger.AddEdge(context.Background(), edge, s.Signer.Public()); err != nil {
		tb.Fatalf("add edge %s: %v", edge, err)
	}
	return s
}

// appendTypes adds records of the given types to s, one millisecond apart
// in edge time from base onwards.
func appendTypes(tb testing.TB, s *testStream, base time.Time, types ...string) {
	tb.Helper()
	for _, typ := range types {
		seq := s.Last() + 1
		body, err := protocol.NewBody(map[string]any{"n": seq})
		if err != nil {
			tb.Fatal(err)
		}
		at := base.Add(time.Duration(seq) * time.Millisecond)
		s.AddEvent("till-1", protocol.Event{ID: fmt.Sprintf("ev-%d", seq), Type: typ, TS: at, Body: body})
	}
}

// MustCommit commits records first..last of s as one segment.
func (e *env) MustCommit(tb testing.TB, s *testStream, first, last uint64) {
	tb.Helper()
	out, err := e.Ledger.Commit(context.Background(), []ledger.Input{{TopicEdge: s.Stream.Edge, Segment: s.Segment(first, last)}})
	if err != nil {
		tb.Fatalf("commit: %v", err)
	}
	if out[0].Kind != ledger.KindCommitted {
		tb.Fatalf("commit %s %d..%d: %v %s", s.Stream, first, last, out[0].Kind, out[0].Reason)
	}
}
