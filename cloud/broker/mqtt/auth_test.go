package mqtt_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	broker "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	"github.com/outpost-edge/outpost/cloud/edgeauth"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const cluster = "c0ffee00c0ffee00" // the cloud key id in every audience here

// countingStore counts the key lookups that reach the database.
type countingStore struct {
	edgeauth.Store
	lookups atomic.Int64
}

func (c *countingStore) EdgeKeys(ctx context.Context, edge string) (protocol.Keys, error) {
	c.lookups.Add(1)
	return c.Store.EdgeKeys(ctx, edge)
}

// replica is one cloud process: its own pool, Authenticator (watching
// revocations) and embedded broker, on the shared database.
type replica struct {
	led   *ledger.Ledger
	auth  *edgeauth.Authenticator
	store *countingStore
	b     *broker.Broker
	logs  *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func startReplica(t *testing.T, url string) *replica {
	t.Helper()
	r := &replica{led: ledger.New(ledgertest.Pool(t, url), ledger.Options{}), logs: &syncBuf{}}
	log := slog.New(slog.NewTextHandler(r.logs, nil))
	r.store = &countingStore{Store: edgeauth.LedgerStore(r.led)}
	var err error
	// No log refill during a test (LogEvery), so that counts of log lines
	// do not depend on time.
	r.auth, err = edgeauth.New(edgeauth.Options{Store: r.store, Cluster: cluster, PollInterval: 20 * time.Millisecond,
		LogEvery: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.auth.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r.b, err = broker.Start(broker.Options{Addr: "127.0.0.1:0", Auth: r.auth, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.b.Close() })
	return r
}

func mustAddEdge(t *testing.T, l *ledger.Ledger, id string) *protocol.Signer {
	t.Helper()
	s := signer("auth-test " + id)
	if _, err := l.AddEdge(context.Background(), id, s.Public()); err != nil {
		t.Fatal(err)
	}
	return s
}

func mqttToken(s *protocol.Signer, edge string) string {
	return s.BrokerToken(protocol.BrokerAudience(protocol.BrokerMQTT, cluster), edge, counter())
}

// rawConn is an MQTT 3.1.1 connection written byte by byte, as an attacker
// replaying a sniffed CONNECT would.
type rawConn struct {
	net.Conn
	rc byte // the CONNACK return code
}

type will struct{ topic, payload string }

func str(b *bytes.Buffer, s string) {
	_ = binary.Write(b, binary.BigEndian, uint16(len(s)))
	b.WriteString(s)
}

// connectPacket is a CONNECT with clean session, user name and password,
// and an optional will at QoS 0.
func connectPacket(clientID, user, pass string, w *will) []byte {
	var vh bytes.Buffer
	str(&vh, "MQTT")
	flags := byte(0xC2)
	if w != nil {
		flags |= 0x04
	}
	vh.Write([]byte{4, flags, 0, 60})
	str(&vh, clientID)
	if w != nil {
		str(&vh, w.topic)
		str(&vh, w.payload)
	}
	str(&vh, user)
	str(&vh, pass)
	out := []byte{0x10}
	n := vh.Len()
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		out = append(out, d)
		if n == 0 {
			break
		}
	}
	return append(out, vh.Bytes()...)
}

func rawConnectFrom(t *testing.T, local, addr, clientID, user, pass string, w *will) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write(connectPacket(clientID, user, pass, w)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		return &rawConn{Conn: c, rc: 0xff} // closed without a CONNACK
	}
	_ = c.SetReadDeadline(time.Time{})
	if ack[0] != 0x20 || ack[1] != 2 {
		t.Fatalf("not a CONNACK: % x", ack)
	}
	return &rawConn{Conn: c, rc: ack[3]}
}

func rawConnect(t *testing.T, r *replica, edge, pass string, w *will) *rawConn {
	t.Helper()
	return rawConnectFrom(t, "", r.b.Addr(), broker.EdgeClientPrefix+edge, edge, pass, w)
}

// alive sends PINGREQ and waits for the PINGRESP.
func (c *rawConn) alive() bool {
	if _, err := c.Write([]byte{0xC0, 0}); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, 2)
	_, err := io.ReadFull(c, b)
	return err == nil && b[0] == 0xD0
}

// closed reports whether the broker has closed the connection (a read
// ends with EOF or a reset rather than waiting).
func (c *rawConn) closed() bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// A sniffed CONNECT replayed, on the same replica or another one, is
// refused, and the real edge's session is not kicked off by it.
func TestReplayedTokenRefused(t *testing.T) {
	url := ledgertest.URL(t)
	a, b := startReplica(t, url), startReplica(t, url)
	e1 := mustAddEdge(t, a.led, "e1")
	tok := mqttToken(e1, "e1")
	real := rawConnect(t, a, "e1", tok, nil)
	if real.rc != 0 {
		t.Fatalf("the edge's own login: CONNACK %#x", real.rc)
	}
	for name, r := range map[string]*replica{"same replica": a, "other replica": b} {
		if c := rawConnect(t, r, "e1", tok, nil); c.rc == 0 {
			t.Errorf("%s: a replayed token was accepted", name)
		}
	}
	if !real.alive() {
		t.Fatal("the real edge's session ended after the replays")
	}
	if c := rawConnect(t, b, "e1", mqttToken(e1, "e1"), nil); c.rc != 0 {
		t.Errorf("the edge's next token on the other replica: CONNACK %#x", c.rc)
	}
}

// A token is for one broker kind of one cloud.
func TestTokenAudience(t *testing.T) {
	r := startReplica(t, ledgertest.URL(t))
	e1 := mustAddEdge(t, r.led, "e1")
	for name, aud := range map[string]string{
		"NATS token":      protocol.BrokerAudience(protocol.BrokerNATS, cluster),
		"another cloud's": protocol.BrokerAudience(protocol.BrokerMQTT, "0123456789abcdef"),
		"no cloud key id": protocol.BrokerMQTT,
	} {
		if c := rawConnect(t, r, "e1", e1.BrokerToken(aud, "e1", counter()), nil); c.rc == 0 {
			t.Errorf("%s accepted by the MQTT broker", name)
		}
	}
}

// Logins need no clock agreement: an edge whose clock is 8 days behind or
// ahead logs in, as long as its counter goes up (edge/uplink.Tokens keeps
// it going up across clock steps; TestTokensClockSteps).
func TestClockOffEdgeLogsIn(t *testing.T) {
	r := startReplica(t, ledgertest.URL(t))
	e1 := mustAddEdge(t, r.led, "e1")
	aud := protocol.BrokerAudience(protocol.BrokerMQTT, cluster)
	behind := uint64(time.Now().Add(-8 * 24 * time.Hour).UnixMilli())
	ahead := uint64(time.Now().Add(8 * 24 * time.Hour).UnixMilli())
	for _, n := range []uint64{behind, ahead, ahead + 1} {
		c := rawConnect(t, r, "e1", e1.BrokerToken(aud, "e1", n), nil)
		if c.rc != 0 {
			t.Fatalf("counter %d (%s): CONNACK %#x\n%s", n, time.UnixMilli(int64(n)).UTC(), c.rc, r.logs)
		}
		_ = c.Close()
	}
}

// Revoking an edge closes its sessions on every replica within seconds,
// without delivering their wills; revoking one key closes only the
// sessions that logged in with it.
func TestRevocationClosesSessionsOnEveryReplica(t *testing.T) {
	url := ledgertest.URL(t)
	a, b := startReplica(t, url), startReplica(t, url)
	admin := ledger.New(ledgertest.Pool(t, url), ledger.Options{}) // the API's
	e1 := mustAddEdge(t, admin, "e1")

	var mu sync.Mutex
	var got []string
	internal, err := connect(t, a.b, "ingest", broker.InternalUser, a.b.InternalPassword())
	if err != nil {
		t.Fatal(err)
	}
	internal.Subscribe("outpost/v1/edge/e1/status", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got = append(got, string(m.Payload()))
		mu.Unlock()
	}).Wait()

	w := &will{topic: "outpost/v1/edge/e1/status", payload: "will of a revoked edge"}
	onA := rawConnect(t, a, "e1", mqttToken(e1, "e1"), w)
	onB := rawConnect(t, b, "e1", mqttToken(e1, "e1"), w)
	if onA.rc != 0 || onB.rc != 0 || !onA.alive() || !onB.alive() {
		t.Fatalf("logins: %#x %#x", onA.rc, onB.rc)
	}
	if err := admin.RevokeEdge(context.Background(), "e1"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the revoked edge's sessions closed on both replicas", func() bool {
		return onA.closed() && onB.closed()
	})
	internal.Publish("outpost/v1/edge/e1/status", 1, false, "marker").Wait()
	poll.Until(t, 10*time.Second, "the marker", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && got[len(got)-1] == "marker"
	})
	mu.Lock()
	if len(got) != 1 {
		t.Errorf("delivered %q; a kicked session's will must not be", got)
	}
	mu.Unlock()
	if c := rawConnect(t, b, "e1", mqttToken(e1, "e1"), nil); c.rc == 0 {
		t.Error("a revoked edge logged in again")
	}

	// Key revocation: e2 holds a session with each of its two keys.
	e2 := mustAddEdge(t, admin, "e2")
	k2 := signer("auth-test e2 new key")
	if _, err := admin.RotateKey(context.Background(), "e2", k2.Public()); err != nil {
		t.Fatal(err)
	}
	old := rawConnect(t, a, "e2", mqttToken(e2, "e2"), nil)
	cur := rawConnect(t, b, "e2", mqttToken(k2, "e2"), nil)
	if old.rc != 0 || cur.rc != 0 {
		t.Fatalf("e2 logins: %#x %#x", old.rc, cur.rc)
	}
	if err := admin.RevokeKey(context.Background(), "e2", e2.KeyID()); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the session of the revoked key closed", old.closed)
	if !cur.alive() {
		t.Error("the session of the key still active was closed")
	}
}

// A flood of failed logins costs a few database lookups, then nothing but
// a refusal; the log says it once in a while, not per attempt; and an edge
// logging in from another address is not affected.
func TestFailedLoginFlood(t *testing.T) {
	r := startReplica(t, ledgertest.URL(t))
	e1 := mustAddEdge(t, r.led, "e1")
	const flood = 300
	for i := range flood {
		pass := "garbage"
		user := "e1"
		switch i % 3 {
		case 1:
			pass = mqttToken(signer("not e1"), "e1") // well-formed, wrong key
		case 2:
			user, pass = "ghost", mqttToken(signer("ghost"), "ghost") // no such edge
		}
		if c := rawConnectFrom(t, "127.0.0.1", r.b.Addr(), broker.EdgeClientPrefix+user, user, pass, nil); c.rc == 0 {
			t.Fatalf("attempt %d accepted", i)
		}
	}
	// The budget is per address and edge id: e1's and ghost's each run out
	// after DefaultFailureBurst; ghost costs one lookup (then the negative
	// cache), e1 at most its budget.
	st := r.auth.Stats()
	if n := r.store.lookups.Load(); n > int64(edgeauth.DefaultFailureBurst)+1 {
		t.Errorf("%d failed logins made %d key lookups, want at most %d", flood, n, edgeauth.DefaultFailureBurst+1)
	}
	if st.RateLimited < flood-2*edgeauth.DefaultFailureBurst {
		t.Errorf("stats %+v: want the flood rate-limited after %d failures for each of its 2 edge ids", st, edgeauth.DefaultFailureBurst)
	}
	if n := strings.Count(r.logs.String(), "\n"); n > edgeauth.DefaultLogBurst+5 {
		t.Errorf("%d log lines for %d refused logins", n, flood)
	}
	if c := rawConnectFrom(t, "127.0.0.2", r.b.Addr(), broker.EdgeClientPrefix+"e1", "e1", mqttToken(e1, "e1"), nil); c.rc != 0 {
		t.Errorf("the edge from another address: CONNACK %#x", c.rc)
	}
}
