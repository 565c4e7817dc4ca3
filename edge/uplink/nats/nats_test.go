package nats_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	uplinknats "github.com/outpost-edge/outpost/edge/uplink/nats"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func signer(name string) *protocol.Signer {
	s, _ := protocol.NewSigner(protocoltest.Key(name))
	return s
}

// MustServer starts nats-server with JetStream on a free port, with opts
// adjusted by f (for authentication settings).
func MustServer(tb testing.TB, f func(*server.Options)) *server.Server {
	tb.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: tb.TempDir(), NoSigs: true, NoLog: true}
	if f != nil {
		f(o)
	}
	s, err := server.NewServer(o)
	if err != nil {
		tb.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server not ready")
	}
	tb.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// cloud is the cloud's side in these tests: the stream, a hello
// responder, and a connection to send receipts with.
type cloud struct {
	nc     *natsgo.Conn
	js     jetstream.JetStream
	hellos chan []byte
}

func mustCloud(tb testing.TB, url string, opts ...natsgo.Option) *cloud {
	tb.Helper()
	nc, err := natsgo.Connect(url, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "SEG", Subjects: []string{protocol.SegmentFilterNATS},
		Retention: jetstream.WorkQueuePolicy, Duplicates: time.Minute}); err != nil {
		tb.Fatal(err)
	}
	c := &cloud{nc: nc, js: js, hellos: make(chan []byte, 16)}
	if _, err := nc.Subscribe(protocol.HelloFilterNATS, func(m *natsgo.Msg) {
		c.hellos <- m.Data
		_ = m.Respond(append([]byte("receipt for "), m.Data...))
	}); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return c
}

func (c *cloud) msgs(tb testing.TB) uint64 {
	tb.Helper()
	s, err := c.js.Stream(context.Background(), "SEG")
	if err != nil {
		tb.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// replies collects what the transport hands to onReply.
type replies struct {
	mu  sync.Mutex
	got []string
}

func (r *replies) on(b []byte) { r.mu.Lock(); r.got = append(r.got, string(b)); r.mu.Unlock() }
func (r *replies) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func mustConnect(tb testing.TB, o uplinknats.Options) (*uplinknats.Transport, *replies) {
	tb.Helper()
	tr, err := uplinknats.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	r := &replies{}
	if err := tr.Connect(context.Background(), r.on); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = tr.Close() })
	return tr, r
}

// TestSession: hello as request/reply through onReply, segments into
// JetStream with the server dropping a resend of the same Nats-Msg-Id,
// receipts from the rcpt subject in order.
func TestSession(t *testing.T) {
	s := MustServer(t, nil)
	c := mustCloud(t, s.ClientURL())
	tr, r := mustConnect(t, uplinknats.Options{URL: s.ClientURL(), Edge: "e1", Signer: signer("e1")})
	ctx := context.Background()

	if err := tr.Hello(ctx, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if got := <-c.hellos; string(got) != "hi" {
		t.Fatalf("cloud got hello %q", got)
	}
	if got := r.list(); len(got) != 1 || got[0] != "receipt for hi" {
		t.Fatalf("replies %q", got)
	}

	for _, p := range []struct{ data, id string }{{"seg1", "e1:x:1-2"}, {"seg1", "e1:x:1-2"}, {"seg2", "e1:x:3-4"}} {
		if err := tr.Publish(ctx, []byte(p.data), p.id); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 10*time.Second, "two segments stored, the resend dropped", func() bool { return c.msgs(t) == 2 })
	sub, err := c.js.CreateConsumer(ctx, "SEG", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := sub.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got, ids []string
	for m := range batch.Messages() {
		got = append(got, m.Subject()+" "+string(m.Data()))
		ids = append(ids, m.Headers().Get(jetstream.MsgIDHeader))
	}
	if want := []string{"outpost.v1.edge.e1.seg seg1", "outpost.v1.edge.e1.seg seg2"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("stream holds %q, want %q", got, want)
	}
	// Each id is the uplink's, then the transport's secret.
	if len(ids) != 2 || !strings.HasPrefix(ids[0], "e1:x:1-2:") || !strings.HasPrefix(ids[1], "e1:x:3-4:") ||
		ids[0][len("e1:x:1-2:"):] != ids[1][len("e1:x:3-4:"):] || len(ids[0][len("e1:x:1-2:"):]) != 32 {
		t.Fatalf("message ids %q, want {id}:{32 hex digits of one secret}", ids)
	}

	for _, m := range []string{"r1", "r2", "r3"} {
		if err := c.nc.Publish("outpost.v1.edge.e1.rcpt", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.nc.Publish("outpost.v1.edge.e2.rcpt", []byte("not mine"))
	poll.Until(t, 10*time.Second, "three receipts", func() bool { return len(r.list()) == 4 })
	if got := r.list(); strings.Join(got[1:], ",") != "r1,r2,r3" {
		t.Fatalf("replies %q", got)
	}
	select {
	case <-tr.Lost():
		t.Fatal("session lost")
	default:
	}
}

// TestNoCloud: a hello nobody answers fails at once, and a segment no
// stream takes ends the session (the uplink reconnects with backoff).
func TestNoCloud(t *testing.T) {
	s := MustServer(t, nil)
	tr, _ := mustConnect(t, uplinknats.Options{URL: s.ClientURL(), Edge: "e1", Signer: signer("e1")})
	err := tr.Hello(context.Background(), []byte("hi"))
	if !errors.Is(err, natsgo.ErrNoResponders) {
		t.Fatalf("hello: %v, want no responders", err)
	}
	if err := tr.Publish(context.Background(), []byte("seg"), "id"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tr.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the session outlived a segment no stream took")
	}
}

// TestLostOnDisconnect: the session ends when the server goes away, and a
// new Connect starts a fresh one.
func TestLostOnDisconnect(t *testing.T) {
	dir := t.TempDir()
	s := MustServer(t, func(o *server.Options) { o.StoreDir = dir })
	url, port := s.ClientURL(), s.Addr().(*net.TCPAddr).Port
	mustCloud(t, url)
	tr, r := mustConnect(t, uplinknats.Options{URL: url, Edge: "e1", Signer: signer("e1")})
	s.Shutdown()
	s.WaitForShutdown()
	select {
	case <-tr.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost not closed after the server went away")
	}
	_ = tr.Close()
	if err := tr.Publish(context.Background(), []byte("x"), "id"); !errors.Is(err, uplinknats.ErrNotConnected) {
		t.Fatalf("publish after close: %v", err)
	}

	// The same address and store, back again.
	MustServer(t, func(o *server.Options) { o.StoreDir = dir; o.Port = port })
	mustCloud(t, url)
	if err := tr.Connect(context.Background(), r.on); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tr.Lost():
		t.Fatal("the new session starts lost")
	default:
	}
	if err := tr.Hello(context.Background(), []byte("again")); err != nil {
		t.Fatal(err)
	}
}

// TestTooLarge: a segment beyond the server's max_payload is refused with
// a clear error instead of being sent.
func TestTooLarge(t *testing.T) {
	s := MustServer(t, func(o *server.Options) { o.MaxPayload = 4096 })
	mustCloud(t, s.ClientURL())
	tr, _ := mustConnect(t, uplinknats.Options{URL: s.ClientURL(), Edge: "e1", Signer: signer("e1")})
	err := tr.Publish(context.Background(), make([]byte, 4096), "id")
	if !errors.Is(err, uplinknats.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

// TestCredentials: each kind of NATS credential logs in to a server that
// requires it; the default (edge id and broker token) is what the cloud's
// embedded server checks, and is covered there.
func TestCredentials(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "edge.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		server func(*server.Options)
		cloud  natsgo.Option
		edge   uplinknats.Options
	}{
		{"token", func(o *server.Options) { o.Authorization = "s3cret" }, natsgo.Token("s3cret"), uplinknats.Options{Token: "s3cret"}},
		{"user and password", func(o *server.Options) { o.Username, o.Password = "e1", "pw" }, natsgo.UserInfo("e1", "pw"), uplinknats.Options{Password: "pw"}},
		{"nkey", func(o *server.Options) {
			o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
		}, nkeyOption(t, seedFile), uplinknats.Options{NKeySeedFile: seedFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := MustServer(t, tc.server)
			mustCloud(t, s.ClientURL(), tc.cloud)
			o := tc.edge
			o.URL, o.Edge = s.ClientURL(), "e1"
			tr, r := mustConnect(t, o)
			if err := tr.Hello(context.Background(), []byte("hi")); err != nil {
				t.Fatal(err)
			}
			if len(r.list()) != 1 {
				t.Fatal("no reply")
			}

			bad := tc.edge
			bad.URL, bad.Edge, bad.Token, bad.Password, bad.NKeySeedFile = s.ClientURL(), "e1", "", "", ""
			bad.Signer = signer("e1")
			tr2, err := uplinknats.New(bad)
			if err != nil {
				t.Fatal(err)
			}
			if err := tr2.Connect(context.Background(), func([]byte) {}); err == nil {
				_ = tr2.Close()
				t.Fatal("connected without the credential")
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	for _, o := range []uplinknats.Options{
		{Edge: "e1", Signer: signer("e1")},                                     // no URL
		{URL: "nats://x", Edge: "e.1", Signer: signer("e1")},                   // bad edge id
		{URL: "nats://x", Edge: "e1"},                                          // no credential at all
		{URL: "nats://x", Edge: "e1", Token: "t", Password: "p"},               // two kinds
		{URL: "nats://x", Edge: "e1", Signer: signer("e1"), CertFile: "c.pem"}, // cert without key
	} {
		if _, err := uplinknats.New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func nkeyOption(tb testing.TB, seedFile string) natsgo.Option {
	o, err := natsgo.NkeyOptionFromSeed(seedFile)
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

// TestMsgIDs: a resend with the uplink's same id (after a reconnect) is
// dropped by the server's duplicate window; a resend with the id the
// uplink gives after a rewind ("~1") is stored. Another transport of the
// same edge (the edge restarted) has another secret.
func TestMsgIDs(t *testing.T) {
	s := MustServer(t, nil)
	c := mustCloud(t, s.ClientURL())
	tr, _ := mustConnect(t, uplinknats.Options{URL: s.ClientURL(), Edge: "e1", Signer: signer("e1")})
	ctx := context.Background()
	cons, err := c.js.CreateConsumer(ctx, "SEG", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	take := func() (data, id string) {
		t.Helper()
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			return string(m.Data()), m.Headers().Get(jetstream.MsgIDHeader)
		}
		t.Fatal("no message")
		return "", ""
	}
	for _, p := range []struct{ data, id string }{{"seg", "e1:x:1-2~0"}, {"seg again", "e1:x:1-2~0"}, {"seg2", "e1:x:3-4~0"}, {"seg after a rewind", "e1:x:1-2~1"}} {
		if err := tr.Publish(ctx, []byte(p.data), p.id); err != nil {
			t.Fatal(err)
		}
	}
	// Every PubAck counts, the duplicate's too: JetStream has the segment.
	poll.Until(t, 10*time.Second, "4 publishes accepted", func() bool { return tr.Accepted() == 4 })
	var got []string
	var first string
	for range 3 {
		d, id := take()
		got = append(got, d)
		if first == "" {
			first = id
		}
	}
	if want := "seg|seg2|seg after a rewind"; strings.Join(got, "|") != want {
		t.Fatalf("stream got %q, want %q (the same id dropped, the rewound one stored)", strings.Join(got, "|"), want)
	}

	tr2, _ := mustConnect(t, uplinknats.Options{URL: s.ClientURL(), Edge: "e1", Signer: signer("e1")})
	if err := tr2.Publish(ctx, []byte("seg from a restarted edge"), "e1:x:1-2~0"); err != nil {
		t.Fatal(err)
	}
	d, id := take()
	if d != "seg from a restarted edge" || id == first {
		t.Fatalf("restarted edge: stored %q with id %q (first run %q); want stored, with another secret", d, id, first)
	}
}

// TestMsgIDSquatting: edge A knows how edge B's ids are made and publishes
// B's next one first (as the plain id and as the id the uplink gives). The
// stream's duplicate window is one for all edges, yet B's segment still
// lands, because B's transport ends its ids with a secret.
func TestMsgIDSquatting(t *testing.T) {
	s := MustServer(t, nil)
	c := mustCloud(t, s.ClientURL())
	ctx := context.Background()
	a, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ajs, _ := jetstream.New(a)
	next := "e2:0e90c10102030405060708090a0b0c0d:1-3"
	for _, id := range []string{next, next + "~0", next + "~1"} {
		if _, err := ajs.Publish(ctx, "outpost.v1.edge.e1.seg", []byte("squat"), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := mustConnect(t, uplinknats.Options{URL: s.ClientURL(), Edge: "e2", Signer: signer("e2")})
	if err := b.Publish(ctx, []byte("B's segment"), next+"~0"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "B's segment stored next to A's three", func() bool { return c.msgs(t) == 4 })
	cons, err := c.js.CreateConsumer(ctx, "SEG", jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubject: "outpost.v1.edge.e2.seg"})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if string(m.Data()) != "B's segment" {
			t.Fatalf("B's subject holds %q", m.Data())
		}
		return
	}
	t.Fatal("B's segment is not in the stream")
}

// TestTLS: the transport verifies the server with --nats-ca and presents a
// client certificate to a server that requires one.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := mustCert(t, dir, "ca", nil, nil)
	mustCert(t, dir, "server", ca, caKey)
	mustCert(t, dir, "client", ca, caKey)
	f := func(n string) string { return filepath.Join(dir, n) }
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: f("server.pem"), KeyFile: f("server.key"), CaFile: f("ca.pem"), Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	s := MustServer(t, func(o *server.Options) { o.TLSConfig, o.TLS, o.TLSVerify = tc, true, true })
	url := fmt.Sprintf("tls://127.0.0.1:%d", s.Addr().(*net.TCPAddr).Port)
	mustCloud(t, url, natsgo.RootCAs(f("ca.pem")), natsgo.ClientCert(f("client.pem"), f("client.key")))

	tr, r := mustConnect(t, uplinknats.Options{URL: url, Edge: "e1", Signer: signer("e1"),
		CAFile: f("ca.pem"), CertFile: f("client.pem"), KeyFile: f("client.key")})
	if err := tr.Hello(context.Background(), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if len(r.list()) != 1 {
		t.Fatal("no reply over TLS")
	}
	// Without the client certificate the server refuses the edge.
	tr2, _ := uplinknats.New(uplinknats.Options{URL: url, Edge: "e1", Signer: signer("e1"), CAFile: f("ca.pem")})
	if err := tr2.Connect(context.Background(), func([]byte) {}); err == nil {
		_ = tr2.Close()
		t.Fatal("connected without a client certificate")
	}
}

// mustCert writes name.pem and name.key: a CA when parent is nil, else a
// certificate for 127.0.0.1 signed by parent.
func mustCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	signerCert, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	} else {
		signerCert, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestNoGoroutinePerPublish: segments whose PubAcks have not come yet (a
// subscriber takes them and never answers) hold no goroutine each: one
// handler per session owns their outcome. When PublishTimeout passes
// without a PubAck, the session ends.
func TestNoGoroutinePerPublish(t *testing.T) {
	s := MustServer(t, nil)
	silent, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	got := make(chan struct{}, 1024)
	if _, err := silent.Subscribe(protocol.SegmentFilterNATS, func(*natsgo.Msg) { got <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if err := silent.Flush(); err != nil {
		t.Fatal(err)
	}
	tr, _ := mustConnect(t, uplinknats.Options{URL: s.ClientURL(), Edge: "e1", Signer: signer("e1"), PublishTimeout: time.Hour})
	before := runtime.NumGoroutine()
	const n = 200
	for i := range n {
		if err := tr.Publish(context.Background(), []byte("seg"), fmt.Sprintf("e1:x:%d-%d~0", i, i)); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		<-got
	}
	if after := runtime.NumGoroutine(); after > before+n/4 {
		t.Fatalf("%d goroutines with %d publishes awaiting their PubAcks (%d before)", after, n, before)
	}

	tr2, _ := mustConnect(t, uplinknats.Options{URL: s.ClientURL(), Edge: "e2", Signer: signer("e2"), PublishTimeout: 50 * time.Millisecond})
	if err := tr2.Publish(context.Background(), []byte("seg"), "e2:x:1-1~0"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tr2.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the session outlived a publish whose PubAck never came")
	}
	select {
	case <-tr.Lost():
		t.Fatal("the first session ended")
	default:
	}
}

// TestCommandsDelivered: with OnCommand the transport subscribes to the
// edge's own cmd subject in every session: commands reach the callback in
// order, again after a reconnect; one for another edge does not.
func TestCommandsDelivered(t *testing.T) {
	s := MustServer(t, nil)
	c := mustCloud(t, s.ClientURL())
	var mu sync.Mutex
	var got []string
	tr, err := uplinknats.New(uplinknats.Options{URL: s.ClientURL(), Edge: "e1", Signer: signer("e1"),
		OnCommand: func(b []byte) { mu.Lock(); got = append(got, string(b)); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	mine, _ := protocol.EdgeSubject("e1", protocol.KindCommand)
	other, _ := protocol.EdgeSubject("e2", protocol.KindCommand)
	var want []string
	for session := 1; session <= 2; session++ {
		if err := tr.Connect(context.Background(), func([]byte) {}); err != nil {
			t.Fatal(err)
		}
		n := fmt.Sprint(session)
		_ = c.nc.Publish(other, []byte("not mine "+n))
		_ = c.nc.Publish(mine, []byte("a"+n))
		_ = c.nc.Publish(mine, []byte("b"+n))
		want = append(want, "a"+n, "b"+n)
		poll.For(t, 30*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(got, ",") != strings.Join(want, ",") {
				return fmt.Errorf("commands %q, want %q", got, want)
			}
			return nil
		})
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
