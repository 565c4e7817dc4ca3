package nats_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	brokernats "github.com/outpost-edge/outpost/cloud/broker/nats"
	"github.com/outpost-edge/outpost/cloud/edgeauth"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const cluster = "c0ffee00c0ffee00" // the cloud key id in every audience here

// replicaToken is a fresh NATS token for edge on the replicas here, whose
// audience has the cloud key id cluster.
func replicaToken(s *protocol.Signer, edge string) string {
	return s.BrokerToken(protocol.BrokerAudience(protocol.BrokerNATS, cluster), edge, lastCounter.Add(1))
}

type countingStore struct {
	edgeauth.Store
	lookups atomic.Int64
}

func (c *countingStore) EdgeKeys(ctx context.Context, edge string) (protocol.Keys, error) {
	c.lookups.Add(1)
	return c.Store.EdgeKeys(ctx, edge)
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// replica is one cloud process with its embedded NATS server, on the
// shared database.
type replica struct {
	led   *ledger.Ledger
	auth  *edgeauth.Authenticator
	store *countingStore
	s     *brokernats.Broker
	logs  *syncBuf
}

func startReplica(t *testing.T, url string, o edgeauth.Options) *replica {
	t.Helper()
	r := &replica{led: ledger.New(ledgertest.Pool(t, url), ledger.Options{}), logs: &syncBuf{}}
	log := slog.New(slog.NewTextHandler(r.logs, nil))
	r.store = &countingStore{Store: edgeauth.LedgerStore(r.led)}
	o.Store, o.Cluster, o.PollInterval, o.Logger = r.store, cluster, 20*time.Millisecond, log
	var err error
	if r.auth, err = edgeauth.New(o); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.auth.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r.s, err = brokernats.Start(brokernats.Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Auth: r.auth, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.s.Close() })
	return r
}

func mustAddEdge(t *testing.T, l *ledger.Ledger, id string) *protocol.Signer {
	t.Helper()
	s := signer("nats auth test " + id)
	if _, err := l.AddEdge(context.Background(), id, s.Public()); err != nil {
		t.Fatal(err)
	}
	return s
}

func dial(t *testing.T, r *replica, user, pass string) (*natsgo.Conn, error) {
	t.Helper()
	nc, err := natsgo.Connect(r.s.ClientURL(), natsgo.UserInfo(user, pass), natsgo.NoReconnect(),
		natsgo.CustomInboxPrefix(protocol.NATSInboxPrefix(user)))
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}

func TestReplayedTokenRefused(t *testing.T) {
	url := ledgertest.URL(t)
	a, b := startReplica(t, url, edgeauth.Options{}), startReplica(t, url, edgeauth.Options{})
	e1 := mustAddEdge(t, a.led, "e1")
	tok := replicaToken(e1, "e1")
	real, err := dial(t, a, "e1", tok)
	if err != nil {
		t.Fatalf("the edge's own login: %v", err)
	}
	for name, r := range map[string]*replica{"same server": a, "other replica": b} {
		if _, err := dial(t, r, "e1", tok); err == nil {
			t.Errorf("%s: a replayed token was accepted", name)
		}
	}
	if err := real.Flush(); err != nil || !real.IsConnected() {
		t.Fatalf("the real edge's session ended after the replays: %v", err)
	}
}

func TestMQTTTokenRefused(t *testing.T) {
	r := startReplica(t, ledgertest.URL(t), edgeauth.Options{})
	e1 := mustAddEdge(t, r.led, "e1")
	mqtt := e1.BrokerToken(protocol.BrokerAudience(protocol.BrokerMQTT, cluster), "e1", lastCounter.Add(1))
	if _, err := dial(t, r, "e1", mqtt); err == nil {
		t.Fatal("a token made for MQTT was accepted by NATS")
	}
	if _, err := dial(t, r, "e1", replicaToken(e1, "e1")); err != nil {
		t.Fatalf("the NATS token: %v", err)
	}
}

// One edge may hold a few sessions, not hundreds.
func TestSessionLimitPerEdge(t *testing.T) {
	r := startReplica(t, ledgertest.URL(t), edgeauth.Options{MaxSessionsPerEdge: 3})
	e1 := mustAddEdge(t, r.led, "e1")
	var conns []*natsgo.Conn
	for i := range 3 {
		nc, err := dial(t, r, "e1", replicaToken(e1, "e1"))
		if err != nil {
			t.Fatalf("session %d: %v", i+1, err)
		}
		conns = append(conns, nc)
	}
	for i := range 20 {
		if _, err := dial(t, r, "e1", replicaToken(e1, "e1")); err == nil {
			t.Fatalf("session %d of one edge accepted (limit 3)", 4+i)
		}
	}
	conns[0].Close()
	poll.Until(t, 10*time.Second, "a session accepted once one closed", func() bool {
		_, err := dial(t, r, "e1", replicaToken(e1, "e1"))
		return err == nil
	})
}

// Revoking an edge closes its NATS sessions on every replica within
// seconds: it stores nothing more and gets no more hello replies.
func TestRevocationClosesSessions(t *testing.T) {
	url := ledgertest.URL(t)
	a, b := startReplica(t, url, edgeauth.Options{}), startReplica(t, url, edgeauth.Options{})
	admin := ledger.New(ledgertest.Pool(t, url), ledger.Options{})
	e1 := mustAddEdge(t, admin, "e1")
	onA, err := dial(t, a, "e1", replicaToken(e1, "e1"))
	if err != nil {
		t.Fatal(err)
	}
	onB, err := dial(t, b, "e1", replicaToken(e1, "e1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeEdge(context.Background(), "e1"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the revoked edge's sessions closed on both replicas", func() bool {
		return onA.IsClosed() && onB.IsClosed()
	})
	if _, err := dial(t, b, "e1", replicaToken(e1, "e1")); err == nil {
		t.Fatal("a revoked edge logged in again")
	}

	// A key revocation closes the sessions of that key only.
	e2 := mustAddEdge(t, admin, "e2")
	k2 := signer("nats auth test e2 new key")
	if _, err := admin.RotateKey(context.Background(), "e2", k2.Public()); err != nil {
		t.Fatal(err)
	}
	old, err := dial(t, a, "e2", replicaToken(e2, "e2"))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := dial(t, a, "e2", replicaToken(k2, "e2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeKey(context.Background(), "e2", e2.KeyID()); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the revoked key's session closed", old.IsClosed)
	if err := cur.Flush(); err != nil {
		t.Fatalf("the other key's session: %v", err)
	}
}

// An unauthenticated CONNECT flood costs a few lookups and a few log lines.
func TestFailedLoginFlood(t *testing.T) {
	// No log refill during the test, so the count does not depend on time.
	r := startReplica(t, ledgertest.URL(t), edgeauth.Options{LogEvery: time.Hour})
	mustAddEdge(t, r.led, "e1")
	const flood = 200
	for i := range flood {
		user, pass := "e1", replicaToken(signer("not e1"), "e1")
		if i%2 == 1 {
			user, pass = "ghost", replicaToken(signer("ghost"), "ghost")
		}
		if _, err := dial(t, r, user, pass); err == nil {
			t.Fatalf("attempt %d accepted", i)
		}
	}
	// The budget is per address and edge id: e1 costs at most its budget of
	// lookups, ghost one (then the negative cache).
	if n := r.store.lookups.Load(); n > int64(edgeauth.DefaultFailureBurst)+1 {
		t.Errorf("%d failed logins made %d key lookups, want at most %d", flood, n, edgeauth.DefaultFailureBurst+1)
	}
	logs := r.logs.String()
	if n := strings.Count(logs, "refused a broker login"); n > edgeauth.DefaultLogBurst {
		t.Errorf("%d refusal lines for %d attempts", n, flood)
	}
	if n := strings.Count(logs, "level=ERROR"); n > 0 {
		t.Errorf("%d error lines (nats-server's per-login lines must not flood the log):\n%s", n, logs)
	}
}
