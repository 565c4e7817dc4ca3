package edgeauth_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/edgeauth"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func signer(name string) *protocol.Signer {
	s, _ := protocol.NewSigner(protocoltest.Key(name))
	return s
}

// countingStore counts key lookups on top of a KeysStore.
type countingStore struct {
	edgeauth.Store
	lookups atomic.Int64
}

func (c *countingStore) EdgeKeys(ctx context.Context, edge string) (protocol.Keys, error) {
	c.lookups.Add(1)
	return c.Store.EdgeKeys(ctx, edge)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func newAuth(t *testing.T, o edgeauth.Options) (*edgeauth.Authenticator, *countingStore, *clock, *lockedBuf) {
	t.Helper()
	e1 := signer("e1")
	st := &countingStore{Store: edgeauth.KeysStore(func(_ context.Context, edge string) (protocol.Keys, error) {
		if edge == "e1" {
			return protocol.NewKeyMap(e1.Public()), nil
		}
		return nil, errors.New("not registered")
	})}
	c := &clock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	logs := &lockedBuf{}
	o.Store, o.Now, o.Logger = st, c.Now, slog.New(slog.NewTextHandler(logs, nil))
	a, err := edgeauth.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return a, st, c, logs
}

var n atomic.Uint64

func tok(s *protocol.Signer, broker, edge string) string {
	return s.BrokerToken(broker, edge, n.Add(1))
}

func TestLoginOnceAndAudience(t *testing.T) {
	a, _, _, _ := newAuth(t, edgeauth.Options{})
	ctx := context.Background()
	good := tok(signer("e1"), protocol.BrokerMQTT, "e1")
	if _, err := a.Login(ctx, protocol.BrokerMQTT, "e1", good, "10.0.0.1:5000"); err != nil {
		t.Fatalf("valid login: %v", err)
	}
	if _, err := a.Login(ctx, protocol.BrokerMQTT, "e1", good, "10.0.0.9:5000"); !errors.Is(err, edgeauth.ErrReplay) {
		t.Errorf("replayed token: %v, want ErrReplay", err)
	}
	if _, err := a.Login(ctx, protocol.BrokerMQTT, "e1", tok(signer("e1"), protocol.BrokerNATS, "e1"), "10.0.0.1:5000"); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("NATS token on MQTT: %v, want a bad signature", err)
	}
	if _, err := a.Login(ctx, protocol.BrokerNATS, "e1", tok(signer("e1"), protocol.BrokerMQTT, "e1"), "10.0.0.1:5000"); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("MQTT token on NATS: %v, want a bad signature", err)
	}
}

// A flood of logins for an edge that does not exist costs one lookup, and a
// source over its failure budget is refused before any lookup or verify,
// even with good credentials, until its budget refills.
func TestNegativeCacheAndFailureLimit(t *testing.T) {
	a, st, c, logs := newAuth(t, edgeauth.Options{FailureBurst: 5, FailureRefill: 10 * time.Second, NegativeTTL: time.Minute, LogBurst: 3, LogEvery: time.Minute})
	ctx := context.Background()
	for i := range 200 {
		// Each from its own source, so that the failure limit does not
		// hide what the cache does.
		src := "10.1." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250) + ":1"
		if _, err := a.Login(ctx, protocol.BrokerNATS, "ghost", tok(signer("ghost"), protocol.BrokerNATS, "ghost"), src); !errors.Is(err, edgeauth.ErrUnknownEdge) {
			t.Fatalf("login %d for an unknown edge: %v", i, err)
		}
	}
	if got := st.lookups.Load(); got != 1 {
		t.Errorf("200 logins for an unknown edge made %d lookups, want 1 (negative cache)", got)
	}
	// Of 200 refusals, 3 lines were logged (LogBurst); the next line, a
	// minute later, says how many were suppressed.
	if n := strings.Count(logs.String(), "refused a broker login"); n != 3 {
		t.Errorf("%d refusal lines logged, want 3:\n%s", n, logs.String())
	}
	c.Add(time.Minute)
	if _, err := a.Login(ctx, protocol.BrokerNATS, "ghost", tok(signer("ghost"), protocol.BrokerNATS, "ghost"), "10.2.0.1:1"); !errors.Is(err, edgeauth.ErrUnknownEdge) || st.lookups.Load() != 2 {
		t.Errorf("after the TTL: %v, %d lookups; want a fresh lookup", err, st.lookups.Load())
	}
	if !strings.Contains(logs.String(), "suppressed=197") {
		t.Errorf("the line after a pause does not say 197 were suppressed:\n%s", logs.String())
	}

	// One source: 5 bad signatures, then even a good login is refused
	// unchecked.
	bad := tok(signer("x"), protocol.BrokerNATS, "e1")
	for range 5 {
		if _, err := a.Login(ctx, protocol.BrokerNATS, "e1", bad, "10.3.0.1:7"); !errors.Is(err, protocol.ErrBadSignature) {
			t.Fatalf("bad signature: %v", err)
		}
	}
	before := st.lookups.Load()
	for range 100 {
		if _, err := a.Login(ctx, protocol.BrokerNATS, "e1", tok(signer("e1"), protocol.BrokerNATS, "e1"), "10.3.0.1:8"); !errors.Is(err, edgeauth.ErrRateLimited) {
			t.Fatalf("over the budget: %v, want ErrRateLimited", err)
		}
	}
	if got := st.lookups.Load() - before; got != 0 {
		t.Errorf("rate-limited logins made %d lookups, want 0", got)
	}
	if _, err := a.Login(ctx, protocol.BrokerNATS, "e1", tok(signer("e1"), protocol.BrokerNATS, "e1"), "10.3.0.2:8"); err != nil {
		t.Errorf("another source is not limited: %v", err)
	}
	c.Add(10 * time.Second)
	if _, err := a.Login(ctx, protocol.BrokerNATS, "e1", tok(signer("e1"), protocol.BrokerNATS, "e1"), "10.3.0.1:9"); err != nil {
		t.Errorf("after one refill: %v", err)
	}
	st2 := a.Stats()
	if st2.RateLimited != 100 || st2.NegativeHits != 199 {
		t.Errorf("stats %+v, want 100 rate-limited and 199 negative hits", st2)
	}
	if st2.LogsDropped < 290 {
		t.Errorf("%d log lines dropped of about 300 refusals", st2.LogsDropped)
	}
}

func TestSessionLimitAndKick(t *testing.T) {
	a, _, _, _ := newAuth(t, edgeauth.Options{MaxSessionsPerEdge: 2})
	ctx := context.Background()
	login := func() (*edgeauth.Session, error) {
		return a.Login(ctx, protocol.BrokerNATS, "e1", tok(signer("e1"), protocol.BrokerNATS, "e1"), "10.0.0.1:1")
	}
	s1, err := login()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := login()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := login(); !errors.Is(err, edgeauth.ErrTooManySessions) {
		t.Fatalf("third session: %v, want ErrTooManySessions", err)
	}
	s1.Release()
	var alive atomic.Bool
	alive.Store(true)
	s3, err := login()
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	s3.SetAlive(alive.Load)
	alive.Store(false) // its connection went away without a Release
	s4, err := login()
	if err != nil {
		t.Fatalf("after a connection ended unreleased: %v", err)
	}

	var kicked []string
	var mu sync.Mutex
	for name, s := range map[string]*edgeauth.Session{"s2": s2, "s4": s4} {
		s.OnKick(func() { mu.Lock(); kicked = append(kicked, name); mu.Unlock() })
	}
	if n := a.Kick("e1", "0000000000000000"); n != 0 {
		t.Errorf("kicking another key closed %d sessions", n)
	}
	if n := a.Kick("e1", signer("e1").KeyID()); n != 2 || len(kicked) != 2 || a.Sessions("e1") != 0 {
		t.Errorf("kick by key: %d, %v, %d left", n, kicked, a.Sessions("e1"))
	}
	// A session kicked before the broker set its callback is closed as soon
	// as it does.
	s5, _ := login()
	a.Kick("e1", "")
	done := false
	s5.OnKick(func() { done = true })
	if !done || !s5.Kicked() {
		t.Errorf("late OnKick did not run")
	}
}

// revStore serves revocations a test adds.
type revStore struct {
	edgeauth.Store
	mu    sync.Mutex
	revs  []edgeauth.Revocation
	polls atomic.Int64
}

func (r *revStore) RecentRevocations(context.Context, time.Duration) ([]edgeauth.Revocation, error) {
	r.polls.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]edgeauth.Revocation(nil), r.revs...), nil
}

// Run kicks what is revoked, once per revocation: a session that logged in
// again after a key revocation (with another key) is not kicked by later
// polls that still see the old revocation.
func TestRunKicksOncePerRevocation(t *testing.T) {
	e1 := signer("e1")
	rs := &revStore{Store: edgeauth.KeysStore(func(context.Context, string) (protocol.Keys, error) { return protocol.NewKeyMap(e1.Public()), nil })}
	a, err := edgeauth.New(edgeauth.Options{Store: rs, PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	s, err := a.Login(ctx, protocol.BrokerMQTT, "e1", tok(e1, protocol.BrokerMQTT, "e1"), "")
	if err != nil {
		t.Fatal(err)
	}
	kicked := make(chan struct{})
	s.OnKick(func() { close(kicked) })
	rs.mu.Lock()
	rs.revs = append(rs.revs, edgeauth.Revocation{ID: 1, Edge: "e1", KID: e1.KeyID()})
	rs.mu.Unlock()
	poll.Until(t, 10*time.Second, "the revoked key's session kicked", func() bool {
		select {
		case <-kicked:
			return true
		default:
			return false
		}
	})
	s2, err := a.Login(ctx, protocol.BrokerMQTT, "e1", tok(e1, protocol.BrokerMQTT, "e1"), "")
	if err != nil {
		t.Fatal(err)
	}
	// Several more polls see revocation 1 again.
	from := rs.polls.Load()
	poll.Until(t, 10*time.Second, "three more polls", func() bool { return rs.polls.Load() >= from+3 })
	if s2.Kicked() || a.Sessions("e1") != 1 {
		t.Fatal("a new session was kicked again for an old revocation")
	}
}

// v1 tokens are refused unless the cloud accepts them for an upgrade, and
// then they too work once, and only near the cloud's clock.
func TestV1Tokens(t *testing.T) {
	seed := sha256.Sum256([]byte("e1"))
	key := ed25519.NewKeyFromSeed(seed[:])
	v1 := func(at time.Time) string {
		ms := strconv.FormatInt(at.UnixMilli(), 10)
		sig := ed25519.Sign(key, []byte("outpost-broker-auth/v1\x00e1\x00"+ms))
		return "v1." + string(signer("e1").KeyID()) + "." + ms + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	ctx := context.Background()
	strict, _, c, _ := newAuth(t, edgeauth.Options{})
	if _, err := strict.Login(ctx, protocol.BrokerMQTT, "e1", v1(c.Now()), ""); !errors.Is(err, protocol.ErrBrokerTokenVersion) {
		t.Errorf("v1 by default: %v, want a version refusal", err)
	}
	lax, _, c, _ := newAuth(t, edgeauth.Options{AcceptV1: true})
	tok := v1(c.Now())
	if _, err := lax.Login(ctx, protocol.BrokerMQTT, "e1", tok, ""); err != nil || lax.Stats().AcceptedV1 != 1 {
		t.Fatalf("v1 while upgrading: %v, %+v", err, lax.Stats())
	}
	if _, err := lax.Login(ctx, protocol.BrokerNATS, "e1", tok, ""); !errors.Is(err, edgeauth.ErrReplay) {
		t.Errorf("v1 replayed: %v, want ErrReplay", err)
	}
	if _, err := lax.Login(ctx, protocol.BrokerMQTT, "e1", v1(c.Now().Add(-time.Hour)), ""); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("stale v1: %v", err)
	}
	// Then the upgraded edge's v2 counters (its clock's ms) follow on.
	if _, err := lax.Login(ctx, protocol.BrokerMQTT, "e1", signer("e1").BrokerToken(protocol.BrokerMQTT, "e1", uint64(c.Now().UnixMilli())+1), ""); err != nil {
		t.Errorf("v2 after v1: %v", err)
	}
}

// Run also forgets sessions whose connection ended without a Release (NATS
// gives no callback), so they stop counting against the edge's limit.
func TestRunPrunesDeadSessions(t *testing.T) {
	e1 := signer("e1")
	rs := &revStore{Store: edgeauth.KeysStore(func(context.Context, string) (protocol.Keys, error) { return protocol.NewKeyMap(e1.Public()), nil })}
	a, err := edgeauth.New(edgeauth.Options{Store: rs, PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var alive atomic.Bool
	alive.Store(true)
	for range 2 {
		s, err := a.Login(ctx, protocol.BrokerNATS, "e1", tok(e1, protocol.BrokerNATS, "e1"), "")
		if err != nil {
			t.Fatal(err)
		}
		s.SetAlive(alive.Load)
	}
	if a.Sessions("e1") != 2 {
		t.Fatalf("%d sessions, want 2", a.Sessions("e1"))
	}
	alive.Store(false)
	poll.Until(t, 10*time.Second, "dead sessions forgotten", func() bool { return a.Sessions("e1") == 0 })
}

// natAuth is an Authenticator over n registered edges (nat-0 …), with
// small budgets: 3 failures per address and edge, 20 per address.
func natAuth(t *testing.T, n int) (*edgeauth.Authenticator, *clock, []*protocol.Signer) {
	t.Helper()
	signers := make([]*protocol.Signer, n)
	keys := map[string]protocol.Keys{}
	for i := range signers {
		name := "nat-" + strconv.Itoa(i)
		signers[i] = signer(name)
		keys[name] = protocol.NewKeyMap(signers[i].Public())
	}
	c := &clock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	a, err := edgeauth.New(edgeauth.Options{
		Store: edgeauth.KeysStore(func(_ context.Context, edge string) (protocol.Keys, error) {
			if k, ok := keys[edge]; ok {
				return k, nil
			}
			return nil, errors.New("not registered")
		}),
		FailureBurst: 3, FailureRefill: 10 * time.Second, AddressFailureBurst: 20, AddressFailureRefill: time.Second,
		Now: c.Now, Logger: slog.New(slog.NewTextHandler(&lockedBuf{}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, c, signers
}

// TestNATFleetLogsIn: many shops behind one address, each failing a few
// times (a replayed token after a restore, a stale counter), all still log
// in: each has a budget of its own. With one budget per address (the
// limit before), the fleet's first failures locked every shop there out.
func TestNATFleetLogsIn(t *testing.T) {
	const shops = 15
	a, _, signers := natAuth(t, shops)
	ctx := context.Background()
	const nat = "198.51.100.7"
	for i := range signers {
		edge := "nat-" + strconv.Itoa(i)
		// One failure each (a token another key signed): 15 in all, more
		// than any one edge's budget of 3, under the address's 20.
		if _, err := a.Login(ctx, protocol.BrokerMQTT, edge, tok(signer("stranger"), protocol.BrokerMQTT, edge), nat+":"+strconv.Itoa(1000+i)); !errors.Is(err, protocol.ErrBadSignature) {
			t.Fatalf("%s's bad login: %v", edge, err)
		}
	}
	for i, s := range signers {
		edge := "nat-" + strconv.Itoa(i)
		if _, err := a.Login(ctx, protocol.BrokerMQTT, edge, tok(s, protocol.BrokerMQTT, edge), nat+":"+strconv.Itoa(2000+i)); err != nil {
			t.Errorf("%s behind the NAT: %v", edge, err)
		}
	}
	if st := a.Stats(); st.Accepted != shops || st.RateLimited != 0 {
		t.Errorf("stats %+v, want %d accepted and none rate-limited", st, shops)
	}
}

// TestBruteForcerSlowed: one address guessing for one edge is refused
// unchecked after that edge's budget, while another shop behind the same
// address still logs in; an address guessing across many edges runs into
// its ceiling, which then holds for every edge from it until it refills.
func TestBruteForcerSlowed(t *testing.T) {
	a, c, signers := natAuth(t, 40)
	ctx := context.Background()
	const attacker = "203.0.113.9"
	bad := func(edge string) error {
		_, err := a.Login(ctx, protocol.BrokerNATS, edge, tok(signer("guess"), protocol.BrokerNATS, edge), attacker+":1")
		return err
	}
	for range 3 {
		if err := bad("nat-0"); !errors.Is(err, protocol.ErrBadSignature) {
			t.Fatalf("guess: %v", err)
		}
	}
	if _, err := a.Login(ctx, protocol.BrokerNATS, "nat-0", tok(signers[0], protocol.BrokerNATS, "nat-0"), attacker+":2"); !errors.Is(err, edgeauth.ErrRateLimited) {
		t.Fatalf("nat-0 from the guessing address after 3 failures: %v, want ErrRateLimited", err)
	}
	if _, err := a.Login(ctx, protocol.BrokerNATS, "nat-1", tok(signers[1], protocol.BrokerNATS, "nat-1"), attacker+":3"); err != nil {
		t.Fatalf("another shop behind the same address: %v", err)
	}
	// Across edges: 17 more failures reach the address's 20.
	for i := 2; i < 19; i++ {
		if err := bad("nat-" + strconv.Itoa(i)); !errors.Is(err, protocol.ErrBadSignature) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	for _, e := range []string{"nat-30", "made-up", "nat-31"} {
		if err := bad(e); !errors.Is(err, edgeauth.ErrRateLimited) {
			t.Fatalf("%s over the address's ceiling: %v, want ErrRateLimited", e, err)
		}
	}
	if _, err := a.Login(ctx, protocol.BrokerNATS, "nat-32", tok(signers[32], protocol.BrokerNATS, "nat-32"), attacker+":4"); !errors.Is(err, edgeauth.ErrRateLimited) {
		t.Fatalf("a good login from the address over its ceiling: %v, want ErrRateLimited", err)
	}
	if _, err := a.Login(ctx, protocol.BrokerNATS, "nat-33", tok(signers[33], protocol.BrokerNATS, "nat-33"), "203.0.113.10:1"); err != nil {
		t.Fatalf("another address: %v", err)
	}
	c.Add(time.Second) // one refill of the ceiling
	if _, err := a.Login(ctx, protocol.BrokerNATS, "nat-32", tok(signers[32], protocol.BrokerNATS, "nat-32"), attacker+":5"); err != nil {
		t.Fatalf("after the ceiling refilled: %v", err)
	}
	// Made-up user names share one budget per address (the table does not
	// grow with them) and count against the ceiling.
	for i := range 3 {
		c.Add(time.Second)
		if err := bad(strings.Repeat("x", 300) + strconv.Itoa(i)); err == nil || errors.Is(err, edgeauth.ErrRateLimited) {
			t.Fatalf("invalid name %d: %v, want refused for its name", i, err)
		}
	}
	c.Add(time.Second)
	if err := bad(strings.Repeat("y", 300)); !errors.Is(err, edgeauth.ErrRateLimited) {
		t.Fatalf("a 4th invalid name from the address: %v, want ErrRateLimited (one shared budget of 3)", err)
	}
}

// checkingStore is a Store whose UseCounter refuses revoked keys itself,
// as LedgerStore's UPDATE does: the Authenticator may cache its keys.
type checkingStore struct {
	mu       sync.Mutex
	keys     []*protocol.Signer // e1's registered keys
	revoked  map[protocol.KeyID]bool
	counters uint64
	lookups  atomic.Int64
}

func (s *checkingStore) CounterChecksKeys() bool { return true }

func (s *checkingStore) EdgeKeys(_ context.Context, edge string) (protocol.Keys, error) {
	s.lookups.Add(1)
	if edge != "e1" {
		return nil, edgeauth.ErrUnknownEdge
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var pubs []ed25519.PublicKey
	for _, k := range s.keys {
		if !s.revoked[k.KeyID()] {
			pubs = append(pubs, k.Public())
		}
	}
	return protocol.NewKeyMap(pubs...), nil
}

func (s *checkingStore) UseCounter(_ context.Context, edge string, kid protocol.KeyID, counter uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.revoked[kid] {
		return fmt.Errorf("key %s: %w", kid, edgeauth.ErrRevoked)
	}
	if counter <= s.counters {
		return edgeauth.ErrReplay
	}
	s.counters = counter
	return nil
}

func (s *checkingStore) RecentRevocations(context.Context, time.Duration) ([]edgeauth.Revocation, error) {
	return nil, nil
}

// TestKeysCached: with a Store that checks keys when it spends the counter,
// logins of one edge look its keys up once per KeysTTL, not once each;
// a key revoked since is still refused (by the counter's check), and a
// key registered since is found with a fresh lookup. Every token is still
// verified and spent.
func TestKeysCached(t *testing.T) {
	k1, k2 := signer("e1"), signer("e1 rotated")
	st := &checkingStore{keys: []*protocol.Signer{k1}, revoked: map[protocol.KeyID]bool{}}
	c := &clock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	a, err := edgeauth.New(edgeauth.Options{Store: st, Now: c.Now, KeysTTL: time.Minute, Logger: slog.New(slog.NewTextHandler(&lockedBuf{}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	login := func(s *protocol.Signer, src string) error {
		sess, err := a.Login(ctx, protocol.BrokerMQTT, "e1", tok(s, protocol.BrokerMQTT, "e1"), src)
		if err == nil {
			sess.Release()
		}
		return err
	}
	for i := range 5 {
		if err := login(k1, "10.9.0."+strconv.Itoa(i+1)+":1"); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
	}
	if n := st.lookups.Load(); n != 1 {
		t.Errorf("5 logins made %d lookups, want 1", n)
	}
	if _, err := a.Login(ctx, protocol.BrokerMQTT, "e1", tok(signer("forger"), protocol.BrokerMQTT, "e1"), "10.9.1.1:1"); !errors.Is(err, protocol.ErrBadSignature) {
		t.Errorf("a forged token against cached keys: %v, want a bad signature", err)
	}
	// A key registered since: found by a fresh lookup.
	st.mu.Lock()
	st.keys = append(st.keys, k2)
	st.mu.Unlock()
	if err := login(k2, "10.9.2.1:1"); err != nil {
		t.Fatalf("the new key: %v", err)
	}
	// A key revoked since: refused although its key is cached.
	if err := login(k1, "10.9.3.1:1"); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	st.revoked[k1.KeyID()] = true
	st.mu.Unlock()
	if err := login(k1, "10.9.3.2:1"); !errors.Is(err, edgeauth.ErrRevoked) {
		t.Errorf("a revoked key: %v, want ErrRevoked", err)
	}
	before := st.lookups.Load()
	c.Add(time.Minute)
	if err := login(k2, "10.9.4.1:1"); err != nil {
		t.Fatal(err)
	}
	if st.lookups.Load() == before {
		t.Error("no lookup after KeysTTL")
	}
	// Without CounterChecksKeys (KeysStore) nothing is cached.
	b, cs, _, _ := newAuth(t, edgeauth.Options{})
	for i := range 3 {
		sess, err := b.Login(ctx, protocol.BrokerMQTT, "e1", tok(signer("e1"), protocol.BrokerMQTT, "e1"), "10.9.5.1:1")
		if err != nil {
			t.Fatalf("KeysStore login %d: %v", i, err)
		}
		sess.Release()
	}
	if n := cs.lookups.Load(); n != 3 {
		t.Errorf("KeysStore: 3 logins made %d lookups, want 3 (no cache)", n)
	}
}
