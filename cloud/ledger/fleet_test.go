package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestEdgesAndKeys(t *testing.T) {
	ctx := context.Background()
	l := MustLedger(t, MustMigratedDB(t), ledger.Options{})
	a := MustAddEdge(t, l, "edge-a")
	b := MustAddEdge(t, l, "edge-b")

	if _, err := l.AddEdge(ctx, "edge-a", newTestEdge(t, "x").Signer.Public()); !errors.Is(err, ledger.ErrExists) {
		t.Errorf("AddEdge of an existing edge: %v, want ErrExists", err)
	}
	if _, err := l.AddEdge(ctx, "edge-c", b.Signer.Public()); !errors.Is(err, ledger.ErrKeyInUse) {
		t.Errorf("AddEdge with edge-b's key: %v, want ErrKeyInUse", err)
	}
	if _, err := l.AddEdge(ctx, "bad/id", newTestEdge(t, "x").Signer.Public()); err == nil {
		t.Errorf("AddEdge with a bad id: no error")
	}

	keys, err := l.EdgeKeys(ctx, "edge-a")
	if err != nil {
		t.Fatal(err)
	}
	if pub, err := keys.PublicKey(a.Signer.KeyID()); err != nil || !bytes.Equal(pub, a.Signer.Public()) {
		t.Errorf("edge-a's own key: %v", err)
	}
	if _, err := keys.PublicKey(b.Signer.KeyID()); !errors.Is(err, ledger.ErrUnknownKey) {
		t.Errorf("edge-b's key looked up for edge-a: %v, want ErrUnknownKey", err)
	}

	// Rotation: both keys verify until the old one is revoked.
	next := newTestEdge(t, "edge-a")
	kid, err := l.RotateKey(ctx, "edge-a", next.Signer.Public())
	if err != nil || kid != protocol.KeyIDOf(next.Signer.Public()) {
		t.Fatalf("RotateKey = %v, %v", kid, err)
	}
	keys, _ = l.EdgeKeys(ctx, "edge-a")
	for _, k := range []protocol.KeyID{a.Signer.KeyID(), next.Signer.KeyID()} {
		if _, err := keys.PublicKey(k); err != nil {
			t.Errorf("after rotation, key %s: %v", k, err)
		}
	}
	if err := l.RevokeKey(ctx, "edge-a", a.Signer.KeyID()); err != nil {
		t.Fatal(err)
	}
	if err := l.RevokeKey(ctx, "edge-b", a.Signer.KeyID()); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("RevokeKey of another edge's key: %v, want ErrNotFound", err)
	}
	keys, _ = l.EdgeKeys(ctx, "edge-a")
	if _, err := keys.PublicKey(a.Signer.KeyID()); !errors.Is(err, ledger.ErrRevoked) {
		t.Errorf("revoked key: %v, want ErrRevoked", err)
	}
	if _, err := keys.PublicKey(next.Signer.KeyID()); err != nil {
		t.Errorf("new key after revoking the old: %v", err)
	}

	if err := l.RevokeEdge(ctx, "edge-b"); err != nil {
		t.Fatal(err)
	}
	if err := l.RevokeEdge(ctx, "edge-b"); err != nil {
		t.Errorf("revoking twice: %v", err)
	}
	if err := l.RevokeEdge(ctx, "nobody"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("RevokeEdge of an unknown edge: %v", err)
	}
	keys, _ = l.EdgeKeys(ctx, "edge-b")
	if _, err := keys.PublicKey(b.Signer.KeyID()); !errors.Is(err, ledger.ErrRevoked) {
		t.Errorf("key of a revoked edge: %v, want ErrRevoked", err)
	}
	if _, err := l.RotateKey(ctx, "edge-b", newTestEdge(t, "y").Signer.Public()); !errors.Is(err, ledger.ErrRevoked) {
		t.Errorf("RotateKey on a revoked edge: %v, want ErrRevoked", err)
	}

	edges, err := l.ListEdges(ctx)
	if err != nil || len(edges) != 2 {
		t.Fatalf("ListEdges = %+v, %v", edges, err)
	}
	ea, eb := edges[0], edges[1]
	if ea.ID != "edge-a" || ea.Status != ledger.StatusActive || len(ea.Keys) != 2 ||
		ea.Keys[0].Status != ledger.StatusRevoked || ea.Keys[0].RevokedAt.IsZero() || ea.Keys[1].Status != ledger.StatusActive {
		t.Errorf("edge-a: %+v", ea)
	}
	if eb.ID != "edge-b" || eb.Status != ledger.StatusRevoked || eb.RevokedAt.IsZero() || len(eb.Keys) != 1 {
		t.Errorf("edge-b: %+v", eb)
	}
}

func TestEnroll(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	clock := &fakeClock{t: time.Now()}
	l := MustLedger(t, url, ledger.Options{Now: clock.Now})
	e := newTestEdge(t, "edge-n")

	tok, err := l.CreateEnrollToken(ctx, e.ID, time.Hour)
	if err != nil || !strings.HasPrefix(tok, ledger.EnrollTokenPrefix) {
		t.Fatalf("CreateEnrollToken = %q, %v", tok, err)
	}
	conn := MustConn(t, url)
	if n := count(t, conn, `SELECT count(*) FROM enroll_tokens WHERE hash = sha256(convert_to($1, 'UTF8'))`, tok); n != 1 {
		t.Errorf("the token is not stored as its SHA-256")
	}
	if _, err := l.Enroll(ctx, "oe_nonsense", e.Signer.Public()); !errors.Is(err, ledger.ErrTokenUnknown) {
		t.Errorf("unknown token: %v", err)
	}
	got, err := l.Enroll(ctx, tok, e.Signer.Public())
	if err != nil || got.ID != e.ID || got.Status != ledger.StatusActive || len(got.Keys) != 1 || got.Keys[0].KID != e.Signer.KeyID() {
		t.Fatalf("Enroll = %+v, %v", got, err)
	}
	if _, err := l.Enroll(ctx, tok, newTestEdge(t, "z").Signer.Public()); !errors.Is(err, ledger.ErrTokenUsed) {
		t.Errorf("second use: %v, want ErrTokenUsed", err)
	}

	// The enrolled key signs segments that commit.
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 5, time.Now())
	if out := MustCommit(t, l, inputs(segment(c, e, 1, 5))...); out[0].Kind != ledger.KindCommitted {
		t.Errorf("segment signed by the enrolled key: %+v", out[0])
	}

	// Expiry, told apart from use; re-enrolling adds a key.
	tok2, err := l.CreateEnrollToken(ctx, e.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok3, err := l.CreateEnrollToken(ctx, e.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Enroll(ctx, tok3, e.Signer.Public()); !errors.Is(err, ledger.ErrKeyInUse) {
		t.Errorf("enrolling a registered key: %v, want ErrKeyInUse", err)
	}
	clock.Add(59 * time.Minute)
	second := newTestEdge(t, e.ID)
	if got, err := l.Enroll(ctx, tok3, second.Signer.Public()); err != nil || len(got.Keys) != 2 {
		t.Errorf("re-enroll before expiry (the refused attempt did not spend the token): %+v, %v", got, err)
	}
	clock.Add(2 * time.Minute)
	if _, err := l.Enroll(ctx, tok2, newTestEdge(t, "z").Signer.Public()); !errors.Is(err, ledger.ErrTokenExpired) {
		t.Errorf("expired token: %v, want ErrTokenExpired", err)
	}

	if err := l.RevokeEdge(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CreateEnrollToken(ctx, e.ID, time.Hour); !errors.Is(err, ledger.ErrRevoked) {
		t.Errorf("token for a revoked edge: %v, want ErrRevoked", err)
	}
}

func TestAPITokens(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	l := MustLedger(t, url, ledger.Options{})
	tok, err := l.CreateAPIToken(ctx, "backoffice", "reader", "acme")
	if err != nil || !strings.HasPrefix(tok, ledger.APITokenPrefix) {
		t.Fatalf("CreateAPIToken = %q, %v", tok, err)
	}
	if _, err := l.CreateAPIToken(ctx, "backoffice", "admin", ""); !errors.Is(err, ledger.ErrExists) {
		t.Errorf("duplicate name: %v, want ErrExists", err)
	}
	conn := MustConn(t, url)
	if n := count(t, conn, `SELECT count(*) FROM api_tokens WHERE hash = sha256(convert_to($1, 'UTF8'))`, tok); n != 1 {
		t.Errorf("the token is not stored as its SHA-256")
	}
	got, err := l.AuthAPIToken(ctx, tok)
	if err != nil || got.Name != "backoffice" || got.Role != "reader" || got.Tenant != "acme" {
		t.Errorf("AuthAPIToken = %+v, %v", got, err)
	}
	if _, err := l.AuthAPIToken(ctx, tok+"x"); !errors.Is(err, ledger.ErrTokenUnknown) {
		t.Errorf("wrong token: %v, want ErrTokenUnknown", err)
	}
	if err := l.RevokeAPIToken(ctx, "backoffice"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AuthAPIToken(ctx, tok); !errors.Is(err, ledger.ErrRevoked) {
		t.Errorf("revoked token: %v, want ErrRevoked", err)
	}
}

// A broker login counter is spent once: the same or a lower counter is a
// replay, on this Ledger or another one on the same database (another
// cloud replica), and a revoked edge or key cannot log in at all.
func TestUseBrokerCounter(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	l := ledger.New(MustPool(t, url), ledger.Options{})
	other := ledger.New(MustPool(t, url), ledger.Options{}) // a second replica
	a := MustAddEdge(t, l, "edge-a")
	kid := a.Signer.KeyID()

	if err := l.UseBrokerCounter(ctx, "edge-a", kid, 100); err != nil {
		t.Fatalf("first login: %v", err)
	}
	for _, c := range []uint64{100, 99} {
		if err := other.UseBrokerCounter(ctx, "edge-a", kid, c); !errors.Is(err, ledger.ErrCounterUsed) {
			t.Errorf("counter %d on the other replica: %v, want ErrCounterUsed", c, err)
		}
	}
	if err := other.UseBrokerCounter(ctx, "edge-a", kid, 101); err != nil {
		t.Fatalf("next login on the other replica: %v", err)
	}

	// Two replicas offered the same token at once accept it once.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = []*ledger.Ledger{l, other}[i%2].UseBrokerCounter(ctx, "edge-a", kid, 200)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ledger.ErrCounterUsed):
			t.Errorf("concurrent login: %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("one token offered 8 times at once was accepted %d times, want 1", ok)
	}

	if err := l.UseBrokerCounter(ctx, "edge-a", "0000000000000000", 300); !errors.Is(err, ledger.ErrUnknownKey) {
		t.Errorf("unknown kid: %v, want ErrUnknownKey", err)
	}
	if err := l.UseBrokerCounter(ctx, "edge-z", kid, 300); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("unknown edge: %v, want ErrNotFound", err)
	}
	b := MustAddEdge(t, l, "edge-b")
	if err := l.RevokeKey(ctx, "edge-a", kid); err != nil {
		t.Fatal(err)
	}
	if err := l.UseBrokerCounter(ctx, "edge-a", kid, 300); !errors.Is(err, ledger.ErrRevoked) {
		t.Errorf("revoked key: %v, want ErrRevoked", err)
	}
	if err := l.RevokeEdge(ctx, "edge-b"); err != nil {
		t.Fatal(err)
	}
	if err := l.UseBrokerCounter(ctx, "edge-b", b.Signer.KeyID(), 1); !errors.Is(err, ledger.ErrRevoked) {
		t.Errorf("revoked edge: %v, want ErrRevoked", err)
	}
	// Revoking again adds nothing.
	if err := l.RevokeEdge(ctx, "edge-b"); err != nil {
		t.Fatal(err)
	}

	revs, err := other.RecentRevocations(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 2 || revs[0].Edge != "edge-a" || revs[0].KID != kid || revs[1].Edge != "edge-b" || revs[1].KID != "" {
		t.Fatalf("recent revocations: %+v, want edge-a's key then edge-b", revs)
	}
}

// MustPool opens a connection pool to url, closed when tb ends.
func MustPool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

// A revoked edge's hello gets no answer: through an external broker, which
// cannot close its session, it may still send them.
func TestHelloOfRevokedEdge(t *testing.T) {
	ctx := context.Background()
	l := MustLedger(t, MustMigratedDB(t), ledger.Options{})
	e := MustAddEdge(t, l, "edge-r")
	h := protocol.Hello{V: 1, Edge: e.ID, Epoch: newEpoch(t), Seq: 1}
	if _, err := l.NoteHello(ctx, h); err != nil {
		t.Fatalf("hello of an active edge: %v", err)
	}
	if err := l.RevokeEdge(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := l.NoteHello(ctx, h); !errors.Is(err, ledger.ErrRevoked) {
		t.Fatalf("hello of a revoked edge: %v, want ErrRevoked", err)
	}
}

// TestBrokerLoginDoesNotWaitForCommits: a commit holds its edge's row FOR
// SHARE from taking its positions to its end (so that a revocation cannot
// slip in between); a login spending the edge's broker counter must not
// wait for it. With the counter a column of that row, the login's UPDATE
// waited behind every commit of its edge (177 NATS logins refused in a
// storm, past their 5 s limit).
func TestBrokerLoginDoesNotWaitForCommits(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	pool := MustPool(t, url)
	l := ledger.New(pool, ledger.Options{})
	a := MustAddEdge(t, l, "edge-a")
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM edges WHERE id = 'edge-a' FOR SHARE`); err != nil {
		t.Fatal(err)
	}
	// The statement timeout bounds the wait the test would otherwise
	// hang in; it is not a performance threshold.
	login, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := l.UseBrokerCounter(login, "edge-a", a.Signer.KeyID(), 100); err != nil {
		t.Fatalf("a login while a commit holds the edge's row: %v", err)
	}
	if err := l.UseBrokerCounter(login, "edge-a", a.Signer.KeyID(), 100); !errors.Is(err, ledger.ErrCounterUsed) {
		t.Fatalf("the same counter again: %v, want ErrCounterUsed", err)
	}
}
