package nats_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	brokernats "github.com/outpost-edge/outpost/cloud/broker/nats"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// quiet drops logs; the tests say what failed.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func signer(name string) *protocol.Signer {
	s, _ := protocol.NewSigner(protocoltest.Key(name))
	return s
}

var lastCounter atomic.Uint64

// natsToken is a fresh NATS broker token for edge, for a server started
// without Auth (no cloud key id in its audience).
func natsToken(s *protocol.Signer, edge string) string {
	return s.BrokerToken(protocol.BrokerNATS, edge, lastCounter.Add(1))
}

// fleet is the edges the test server knows, by id.
type fleet map[string]*protocol.Signer

func (f fleet) keys(_ context.Context, edge string) (protocol.Keys, error) {
	s, ok := f[edge]
	if !ok {
		return nil, fmt.Errorf("edge %q is not registered", edge)
	}
	return protocol.NewKeyMap(s.Public()), nil
}

// MustServer starts the embedded server on a free port for tb, with o's
// Addr, StoreDir, Keys and Logger filled in.
func MustServer(tb testing.TB, f fleet, o ...brokernats.Options) *brokernats.Broker {
	tb.Helper()
	var opts brokernats.Options
	if len(o) > 0 {
		opts = o[0]
	}
	opts.Addr, opts.StoreDir, opts.Keys, opts.Logger = "127.0.0.1:0", tb.TempDir(), f.keys, quiet
	s, err := brokernats.Start(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// MustInternal connects as the cloud's internal user; violations the
// server reports land in the returned errs.
func MustInternal(tb testing.TB, s *brokernats.Broker) (*natsgo.Conn, *errs) {
	tb.Helper()
	e := &errs{}
	nc, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo(protocol.InternalUser, s.InternalPassword()),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) { e.add(err) }))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc, e
}

// MustEdge connects as an edge with a broker token, the way the edge's
// uplink does.
func MustEdge(tb testing.TB, s *brokernats.Broker, edge string, sg *protocol.Signer) (*natsgo.Conn, *errs) {
	tb.Helper()
	e := &errs{}
	nc, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo(edge, natsToken(sg, edge)),
		natsgo.CustomInboxPrefix(protocol.NATSInboxPrefix(edge)),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) { e.add(err) }))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc, e
}

// errs collects the asynchronous errors a connection reports.
type errs struct {
	mu   sync.Mutex
	list []error
}

func (e *errs) add(err error) { e.mu.Lock(); e.list = append(e.list, err); e.mu.Unlock() }
func (e *errs) has(substr string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, err := range e.list {
		if strings.Contains(strings.ToLower(err.Error()), substr) {
			return true
		}
	}
	return false
}

func TestEdgeLogin(t *testing.T) {
	e1, e2 := signer("e1"), signer("e2")
	s := MustServer(t, fleet{"e1": e1, "e2": e2})
	for _, tc := range []struct {
		name, user, pass string
		ok               bool
	}{
		{"edge with its token", "e1", natsToken(e1, "e1"), true},
		{"token signed by another edge's key", "e1", natsToken(e2, "e1"), false},
		{"token for another edge", "e1", natsToken(e1, "e2"), false},
		{"token for MQTT", "e1", e1.BrokerToken(protocol.BrokerMQTT, "e1", lastCounter.Add(1)), false},
		{"unknown edge", "e9", natsToken(signer("e9"), "e9"), false},
		{"not an edge id", "e1.seg", "x", false},
		{"internal user", protocol.InternalUser, s.InternalPassword(), true},
		{"internal user, wrong password", protocol.InternalUser, "nope", false},
		{"no credentials", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo(tc.user, tc.pass), natsgo.NoReconnect())
			if nc != nil {
				nc.Close()
			}
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && !errors.Is(err, natsgo.ErrAuthorization) {
				t.Fatalf("got %v, want an authorization error", err)
			}
		})
	}
}

// TestEdgePermissions: an edge may publish only its own segments, hellos
// and status, and hear only its own receipts, commands and inboxes.
func TestEdgePermissions(t *testing.T) {
	e1 := signer("e1")
	s := MustServer(t, fleet{"e1": e1, "e2": signer("e2")})
	cloud, _ := MustInternal(t, s)
	heard := make(chan string, 16)
	if _, err := cloud.Subscribe("outpost.>", func(m *natsgo.Msg) { heard <- m.Subject }); err != nil {
		t.Fatal(err)
	}
	if err := cloud.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, perr := MustEdge(t, s, "e1", e1)

	for _, subj := range []string{"outpost.v1.edge.e2.seg", "outpost.v1.edge.e2.hello", "outpost.v1.edge.e1.rcpt", "outpost.v1.dev.d1.ev", "$JS.API.STREAM.LIST"} {
		if err := nc.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range []string{"outpost.v1.edge.e1.seg", "outpost.v1.edge.e1.hello", "outpost.v1.edge.e1.status"} {
		if err := nc.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	poll.Until(t, 15*time.Second, "the allowed publishes", func() bool {
		for {
			select {
			case s := <-heard:
				got[s] = true
			default:
				return len(got) >= 3
			}
		}
	})
	for s := range got {
		if !strings.HasPrefix(s, "outpost.v1.edge.e1.") || strings.HasSuffix(s, ".rcpt") {
			t.Errorf("the cloud heard %s from edge e1", s)
		}
	}
	poll.Until(t, 15*time.Second, "publish violations reported", func() bool { return perr.has("permissions violation for publish") })

	for _, subj := range []string{"outpost.v1.edge.e2.rcpt", "outpost.v1.edge.*.rcpt", "outpost.>", "_INBOX.>", "_INBOX.edge.e2.>"} {
		sub, err := nc.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.Flush()
		poll.Until(t, 15*time.Second, "subscribe violation for "+subj, func() bool { return perr.has("subscription to \"" + strings.ToLower(subj) + "\"") })
		_ = sub.Unsubscribe()
	}
	for _, subj := range []string{"outpost.v1.edge.e1.rcpt", "outpost.v1.edge.e1.cmd"} {
		sub, err := nc.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := cloud.Publish(subj, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Errorf("edge e1 did not get its message on %s: %v", subj, err)
		}
	}
	// Its inboxes get the answers to its requests.
	hsub, err := cloud.Subscribe(protocol.HelloFilterNATS, func(m *natsgo.Msg) { _ = m.Respond([]byte("receipt")) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hsub.Unsubscribe() }()
	if err := cloud.Flush(); err != nil {
		t.Fatal(err)
	}
	if rep, err := nc.Request("outpost.v1.edge.e1.hello", []byte("hello"), 5*time.Second); err != nil || string(rep.Data) != "receipt" {
		t.Errorf("edge e1's hello: %v, %v", rep, err)
	}
}

// TestRepliesStayWithTheRequester: edge A asks for the replies to its
// requests on edge B's subjects. JetStream's PubAcks and the cloud's hello
// replies go where A asked, but inside A's own account (EdgeAccount): B's
// rcpt subject gets nothing, and nothing is stored under B's seg subject.
// (On one shared account B's rcpt got A's PubAck and the stream stored a
// PubAck as a segment of B's.)
func TestRepliesStayWithTheRequester(t *testing.T) {
	aKey, bKey := signer("ea"), signer("eb")
	s := MustServer(t, fleet{"ea": aKey, "eb": bKey})
	cloud, _ := MustInternal(t, s)
	ctx := context.Background()
	js, err := jetstream.New(cloud)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SEG", Subjects: []string{protocol.SegmentFilterNATS}})
	if err != nil {
		t.Fatal(err)
	}
	hsub, err := cloud.Subscribe(protocol.HelloFilterNATS, func(m *natsgo.Msg) { _ = m.Respond([]byte("receipt")) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hsub.Unsubscribe() }()
	if err := cloud.Flush(); err != nil {
		t.Fatal(err)
	}

	b, _ := MustEdge(t, s, "eb", bKey)
	bRcpt, err := b.SubscribeSync("outpost.v1.edge.eb.rcpt")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	a, _ := MustEdge(t, s, "ea", aKey)
	for _, reply := range []string{"outpost.v1.edge.eb.rcpt", "outpost.v1.edge.eb.seg"} {
		for _, subj := range []string{"outpost.v1.edge.ea.seg", "outpost.v1.edge.ea.hello"} {
			if err := a.PublishMsg(&natsgo.Msg{Subject: subj, Reply: reply, Data: []byte("aimed at B")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A barrier: A's own publishes and requests are answered after those.
	ajs, _ := jetstream.New(a)
	for range 2 {
		if _, err := ajs.Publish(ctx, "outpost.v1.edge.ea.seg", []byte("A's own")); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Request("outpost.v1.edge.ea.hello", []byte("hello"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := bRcpt.Pending(); n != 0 {
		m, _ := bRcpt.NextMsg(time.Second)
		t.Errorf("B's rcpt subject got %d replies meant for A's requests (first %q)", n, m.Data)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(protocol.SegmentFilterNATS))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Subjects; got["outpost.v1.edge.eb.seg"] != 0 || got["outpost.v1.edge.ea.seg"] != 4 {
		t.Errorf("stream holds %v; want A's 4 segments and nothing under B's subject", got)
	}
}

// TestInternalPermissions: the cloud's own user reaches only what cloud
// ingest uses. Purging or deleting the stream, its messages or its
// consumer is refused by the server, so no reply subject can make the
// cloud's user do it.
func TestInternalPermissions(t *testing.T) {
	e1 := signer("e1")
	s := MustServer(t, fleet{"e1": e1})
	cloud, cerr := MustInternal(t, s)
	ctx := context.Background()
	js, err := jetstream.New(cloud)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SEG", Subjects: []string{protocol.SegmentFilterNATS}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		t.Fatalf("the internal user could not create the stream: %v", err)
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "ingest", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("the internal user could not create the consumer: %v", err)
	}
	edge, _ := MustEdge(t, s, "e1", e1)
	ejs, _ := jetstream.New(edge)
	for range 3 {
		if _, err := ejs.Publish(ctx, "outpost.v1.edge.e1.seg", []byte("seg")); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range []string{
		"$JS.API.STREAM.PURGE.SEG", "$JS.API.STREAM.DELETE.SEG", "$JS.API.STREAM.MSG.DELETE.SEG",
		"$JS.API.STREAM.UPDATE.SEG", "$JS.API.CONSUMER.DELETE.SEG.ingest", "outpost.v1.edge.e1.seg", "outpost.v1.edge.e1.hello",
	} {
		if err := cloud.Publish(subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 15*time.Second, "a publish violation for "+subj, func() bool {
			return cerr.has(`permissions violation for publish to "` + strings.ToLower(subj) + `"`)
		})
	}
	// What ingest does is allowed: info, pull, ack, receipts, replies.
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs != 3 {
		t.Fatalf("stream info %+v, %v; want 3 messages, untouched", info, err)
	}
	b, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range b.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Fatalf("after one ack the stream holds %+v, %v; want 2", info, err)
	}
	for _, subj := range []string{"outpost.v1.edge.e1.rcpt", "outpost.v1.edge.e1.cmd"} {
		sub, err := edge.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		if err := edge.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := cloud.Publish(subj, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Errorf("the cloud could not reach %s: %v", subj, err)
		}
	}
}

// rawConn is a TCP connection to the server that speaks the NATS protocol
// by hand, where a client library would not send what an attacker does.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, s *brokernats.Broker) (*rawConn, map[string]any) {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	rc := &rawConn{Conn: c, r: bufio.NewReader(c)}
	line, err := rc.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("first line %q, %v; want INFO", line, err)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "INFO ")), &info); err != nil {
		t.Fatal(err)
	}
	return rc, info
}

// rest reads what the server sends until it closes the connection.
func (rc *rawConn) rest(t *testing.T) string {
	t.Helper()
	_ = rc.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, _ := io.ReadAll(rc.r)
	return string(b)
}

// TestUnauthenticatedBounds: what a connection that has not logged in can
// make the server hold is bounded: the server advertises max_payload, cuts
// a CONNECT line beyond MaxControlLine (the NATS analogue of MQTT's
// 256 MiB CONNECT), refuses a publish before CONNECT, and closes a
// connection that does not log in within AuthTimeout.
func TestUnauthenticatedBounds(t *testing.T) {
	s := MustServer(t, fleet{"e1": signer("e1")}, brokernats.Options{AuthTimeout: 300 * time.Millisecond})

	t.Run("advertised limits", func(t *testing.T) {
		_, info := dialRaw(t, s)
		if mp, _ := info["max_payload"].(float64); int(mp) != protocol.NATSMaxPayload {
			t.Errorf("max_payload %v, want %d", info["max_payload"], protocol.NATSMaxPayload)
		}
		if info["auth_required"] != true {
			t.Errorf("auth_required %v", info["auth_required"])
		}
	})
	t.Run("huge CONNECT", func(t *testing.T) {
		rc, _ := dialRaw(t, s)
		junk := "CONNECT {\"user\":\"e1\",\"pass\":\"" + strings.Repeat("a", 4*brokernats.MaxControlLine)
		// The server may close the connection while this is still being
		// written; the write error does not matter, its answer does.
		_, _ = io.WriteString(rc, junk)
		if got := rc.rest(t); !strings.Contains(strings.ToLower(got), "-err 'maximum control line exceeded'") {
			t.Fatalf("server answered %q, want a control line violation", got)
		}
	})
	t.Run("publish before CONNECT", func(t *testing.T) {
		rc, _ := dialRaw(t, s)
		_, _ = fmt.Fprintf(rc, "PUB outpost.v1.edge.e1.seg %d\r\n", protocol.NATSMaxPayload)
		if got := rc.rest(t); !strings.Contains(strings.ToLower(got), "-err 'authorization violation'") {
			t.Fatalf("server answered %q, want an authorization violation", got)
		}
	})
	t.Run("silent connection", func(t *testing.T) {
		rc, _ := dialRaw(t, s)
		if got := rc.rest(t); !strings.Contains(strings.ToLower(got), "-err 'authentication timeout'") {
			t.Fatalf("server answered %q, want an authentication timeout", got)
		}
	})
}
