package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	natsgo "github.com/nats-io/nats.go"

	brokermqtt "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	brokernats "github.com/outpost-edge/outpost/cloud/broker/nats"
	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// cmdEdge plays an edge on the command channel: subscribed to its own cmd
// topic or subject, it keeps the seqs of the commands it gets that verify
// with the cloud's key and are for it, and says hello with a cmd.
type cmdEdge struct {
	t     *testing.T
	edge  string
	epoch protocol.Epoch
	keys  protocol.Keys
	hello func(cmd uint64) error

	mu  sync.Mutex
	got []uint64
	bad []error
}

func (e *cmdEdge) onCommand(b []byte) {
	c, err := protocol.VerifyCommand(b, e.keys)
	if err == nil && c.Edge != e.edge {
		err = fmt.Errorf("command for %s", c.Edge)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		e.bad = append(e.bad, err)
		return
	}
	e.got = append(e.got, c.Seq)
}

func (e *cmdEdge) helloMsg(cmd uint64) []byte {
	return protocol.EncodeHello(protocol.Hello{Edge: e.edge, Epoch: e.epoch, SentAt: time.Now().UnixMilli(), Cmd: cmd})
}

// accepted is what the edge's gate accepts of what came, in order: each
// seq above the last accepted.
func (e *cmdEdge) accepted() (acc, got []uint64, bad []error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.got {
		if len(acc) == 0 || s > acc[len(acc)-1] {
			acc = append(acc, s)
		}
	}
	return acc, slices.Clone(e.got), slices.Clone(e.bad)
}

func (e *cmdEdge) last() uint64 {
	acc, _, _ := e.accepted()
	if len(acc) == 0 {
		return 0
	}
	return acc[len(acc)-1]
}

// waitAccepted waits until the edge has accepted want. With rehello it
// says hello again every 10 s meanwhile, as a real edge whose hello went
// unanswered does; without, what is missing must come by itself (a push).
func (e *cmdEdge) waitAccepted(want []uint64, rehello bool, logs *syncBuffer) {
	e.t.Helper()
	next := time.Now().Add(10 * time.Second)
	poll.For(e.t, 90*time.Second, func() error {
		acc, got, bad := e.accepted()
		if len(bad) > 0 {
			e.t.Fatalf("the edge got commands that do not verify for it: %v", bad)
		}
		if slices.Equal(acc, want) {
			return nil
		}
		if rehello && time.Now().After(next) {
			next = time.Now().Add(10 * time.Second)
			_ = e.hello(e.last())
		}
		return fmt.Errorf("the edge accepted %v (got %v), want %v\n%s", acc, got, want, logs.String())
	})
}

func mqttCmdEdge(t *testing.T, addr, password string, stream *protocoltest.Stream, keys protocol.Keys) *cmdEdge {
	t.Helper()
	e := &cmdEdge{t: t, edge: stream.Stream.Edge, epoch: stream.Stream.Epoch, keys: keys}
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(brokermqtt.EdgeClientPrefix + e.edge).
		SetUsername(e.edge).SetPassword(password).SetAutoReconnect(false).SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("edge connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	topic, _ := protocol.EdgeTopic(e.edge, protocol.KindCommand)
	tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { e.onCommand(m.Payload()) })
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil || tok.(*paho.SubscribeToken).Result()[topic] >= 0x80 {
		t.Fatalf("subscribe %s: %v %v", topic, tok.Error(), tok.(*paho.SubscribeToken).Result())
	}
	hello, _ := protocol.EdgeTopic(e.edge, protocol.KindHello)
	e.hello = func(cmd uint64) error {
		tok := c.Publish(hello, 1, false, e.helloMsg(cmd))
		if !tok.WaitTimeout(30 * time.Second) {
			return errors.New("no PUBACK for the hello")
		}
		return tok.Error()
	}
	return e
}

func natsCmdEdge(t *testing.T, addr, password string, stream *protocoltest.Stream, keys protocol.Keys) *cmdEdge {
	t.Helper()
	e := &cmdEdge{t: t, edge: stream.Stream.Edge, epoch: stream.Stream.Epoch, keys: keys}
	nc, err := natsgo.Connect("nats://"+addr, natsgo.UserInfo(e.edge, password), natsgo.NoReconnect(),
		natsgo.CustomInboxPrefix(protocol.NATSInboxPrefix(e.edge)))
	if err != nil {
		t.Fatalf("edge connect: %v", err)
	}
	t.Cleanup(nc.Close)
	subj, _ := protocol.EdgeSubject(e.edge, protocol.KindCommand)
	if _, err := nc.Subscribe(subj, func(m *natsgo.Msg) { e.onCommand(m.Data) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	hello, _ := protocol.EdgeSubject(e.edge, protocol.KindHello)
	e.hello = func(cmd uint64) error {
		_, err := nc.Request(hello, e.helloMsg(cmd), 30*time.Second)
		return err
	}
	return e
}

// cmdCloud is what the tests enqueue through: the cloud's key and a pool
// on its database.
type cmdCloud struct {
	t      *testing.T
	signer *protocol.Signer
	db     *pgxpool.Pool
}

func newCmdCloud(t *testing.T, m *Main, url string) *cmdCloud {
	t.Helper()
	s, err := loadCloudKey(m.Config.DataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return &cmdCloud{t: t, signer: s, db: db}
}

func (c *cmdCloud) enqueue(edge, ref string, expires time.Time) uint64 {
	c.t.Helper()
	var seq uint64
	if err := pgx.BeginFunc(context.Background(), c.db, func(tx pgx.Tx) (err error) {
		seq, err = command.Enqueue(context.Background(), tx, c.signer, edge, protocol.CommandAssign, ref, []byte(`{}`), expires)
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
	return seq
}

func (c *cmdCloud) cancel(ref string) {
	c.t.Helper()
	if err := pgx.BeginFunc(context.Background(), c.db, func(tx pgx.Tx) error {
		_, err := command.CancelRef(context.Background(), tx, ref)
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
}

// checkCommandDelivery is the command channel end to end on one
// transport: commands enqueued while the edge is away come at its hello,
// in order, without the cancelled and expired ones; one enqueued while it
// is connected comes without a new hello.
func checkCommandDelivery(t *testing.T, cl *cmdCloud, connect func() *cmdEdge, logs *syncBuffer) {
	now := time.Now()
	cl.enqueue("shop-1", "r-1", now.Add(time.Hour)) // 1
	cl.enqueue("shop-1", "r-2", now.Add(time.Hour)) // 2: cancelled
	cl.enqueue("shop-1", "", now.Add(-time.Second)) // 3: expired
	cl.enqueue("shop-1", "r-1", now.Add(time.Hour)) // 4
	cl.cancel("r-2")

	e := connect()
	if err := e.hello(0); err != nil {
		t.Fatalf("hello: %v", err)
	}
	e.waitAccepted([]uint64{1, 4}, true, logs)

	cl.enqueue("shop-1", "", now.Add(time.Hour)) // 5, while connected
	e.waitAccepted([]uint64{1, 4, 5}, false, logs)
	_, got, _ := e.accepted()
	if slices.Contains(got, 2) || slices.Contains(got, 3) {
		t.Fatalf("the edge got a cancelled or expired command: %v", got)
	}
	// The hello that acknowledges them marks them so.
	if err := e.hello(5); err != nil {
		t.Fatal(err)
	}
	poll.For(t, 60*time.Second, func() error {
		st, err := command.List(context.Background(), cl.db, "shop-1")
		if err != nil {
			return err
		}
		for _, s := range st {
			if want := s.Seq != 2 && s.Seq != 3; (s.AckedAt != nil) != want || (s.DeliveredAt != nil) != want {
				return fmt.Errorf("command %d: delivered %v, acked %v; want both %v", s.Seq, s.DeliveredAt != nil, s.AckedAt != nil, want)
			}
		}
		return nil
	})
}

func TestServeCommandsEmbeddedMQTT(t *testing.T) {
	url, _, stream := mustEdgeDB(t, 0)
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m, _ := startServe(t, ctx, &logs, "--database-url", url, "--log-level", "warn")
	cl := newCmdCloud(t, m, url)
	keys := protocol.NewKeyMap(cl.signer.Public())
	checkCommandDelivery(t, cl, func() *cmdEdge {
		return mqttCmdEdge(t, m.BrokerAddr(), mqttToken(stream.Signer, cl.signer.Public(), "shop-1"), stream, keys)
	}, &logs)
}

func TestServeCommandsEmbeddedNATS(t *testing.T) {
	url, _, stream := mustEdgeDB(t, 0)
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m, _ := startServe(t, ctx, &logs, "--database-url", url, "--log-level", "warn", "--mqtt-listen", "",
		"--nats-embedded", "--nats-listen", "127.0.0.1:0")
	cl := newCmdCloud(t, m, url)
	keys := protocol.NewKeyMap(cl.signer.Public())
	checkCommandDelivery(t, cl, func() *cmdEdge {
		aud := protocol.BrokerAudience(protocol.BrokerNATS, string(cl.signer.KeyID()))
		return natsCmdEdge(t, m.NATSAddr(), stream.Signer.BrokerToken(aud, "shop-1", uint64(time.Now().UnixMilli())), stream, keys)
	}, &logs)
}

// edgeKeys is a broker's Keys for the one edge of stream.
func edgeKeys(stream *protocoltest.Stream) func(context.Context, string) (protocol.Keys, error) {
	return func(_ context.Context, edge string) (protocol.Keys, error) {
		if edge != stream.Stream.Edge {
			return nil, errors.New("unknown edge")
		}
		return protocol.NewKeyMap(stream.Signer.Public()), nil
	}
}

// On an external MQTT broker (here a broker of the cloud's own kind run
// apart, logged into as its internal user), served by two cloud processes
// on one database: the edge's hellos go to either (a shared
// subscription), commands are enqueued through both at once, and the edge
// still accepts every one, in order.
func TestServeCommandsExternalMQTTTwoReplicas(t *testing.T) {
	url, _, stream := mustEdgeDB(t, 0)
	ext, err := brokermqtt.Start(brokermqtt.Options{Addr: "127.0.0.1:0", Keys: edgeKeys(stream)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ext.Close() })
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var clouds []*cmdCloud
	for range 2 {
		m, _ := startServe(t, ctx, &logs, "--database-url", url, "--log-level", "warn",
			"--mqtt", "tcp://"+ext.Addr(), "--mqtt-user", brokermqtt.InternalUser, "--mqtt-password", ext.InternalPassword())
		clouds = append(clouds, newCmdCloud(t, m, url))
	}
	// The replicas do not share a data dir; both sign with the first's key
	// here, as replicas of one cloud share its key.
	clouds[1].signer = clouds[0].signer
	keys := protocol.NewKeyMap(clouds[0].signer.Public())
	checkCommandDelivery(t, clouds[0], func() *cmdEdge {
		return mqttCmdEdge(t, ext.Addr(), stream.Signer.BrokerToken(protocol.BrokerMQTT, "shop-1", uint64(time.Now().UnixMilli())), stream, keys)
	}, &logs)
}

// Two cloud processes on one database enqueue for one connected edge at
// once (the rollout controller runs in every replica): seqs are neither
// lost nor doubled, and the edge accepts every command, in order.
func TestServeCommandsConcurrentEnqueue(t *testing.T) {
	url, _, stream := mustEdgeDB(t, 0)
	ext, err := brokermqtt.Start(brokermqtt.Options{Addr: "127.0.0.1:0", Keys: edgeKeys(stream)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ext.Close() })
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var clouds []*cmdCloud
	var mains []*Main
	for range 2 {
		m, _ := startServe(t, ctx, &logs, "--database-url", url, "--log-level", "warn",
			"--mqtt", "tcp://"+ext.Addr(), "--mqtt-user", brokermqtt.InternalUser, "--mqtt-password", ext.InternalPassword())
		clouds = append(clouds, newCmdCloud(t, m, url))
		mains = append(mains, m)
	}
	clouds[1].signer = clouds[0].signer
	keys := protocol.NewKeyMap(clouds[0].signer.Public())
	e := mqttCmdEdge(t, ext.Addr(), stream.Signer.BrokerToken(protocol.BrokerMQTT, "shop-1", uint64(time.Now().UnixMilli())), stream, keys)
	if err := e.hello(0); err != nil {
		t.Fatal(err)
	}
	// Both replicas have heard from the edge once its hellos reached each
	// (the shared subscription spreads them): say hello until both did.
	poll.For(t, 90*time.Second, func() error {
		var deaf []int
		for i, m := range mains {
			if m.commands.Stats().Served == 0 {
				deaf = append(deaf, i)
			}
		}
		if len(deaf) == 0 {
			return nil
		}
		if err := e.hello(e.last()); err != nil {
			return err
		}
		return fmt.Errorf("replicas %v have not had a hello from the edge yet", deaf)
	})
	const each = 20
	var wg sync.WaitGroup
	for _, c := range clouds {
		wg.Go(func() {
			for range each {
				c.enqueue("shop-1", "", time.Now().Add(time.Hour))
			}
		})
	}
	wg.Wait()
	want := make([]uint64, 2*each)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	e.waitAccepted(want, false, &logs)
}

// On an external NATS server (here a server of the cloud's own kind run
// apart, with an account per edge, logged into as its internal user).
func TestServeCommandsExternalNATS(t *testing.T) {
	url, _, stream := mustEdgeDB(t, 0)
	ext, err := brokernats.Start(brokernats.Options{Addr: "127.0.0.1:0", StoreDir: filepath.Join(t.TempDir(), "js"), Keys: edgeKeys(stream)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ext.Close() })
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m, _ := startServe(t, ctx, &logs, "--database-url", url, "--log-level", "warn", "--mqtt-listen", "",
		"--nats", "nats://"+ext.Addr(), "--nats-user", protocol.InternalUser, "--nats-password", ext.InternalPassword(), "--nats-edge-accounts")
	cl := newCmdCloud(t, m, url)
	keys := protocol.NewKeyMap(cl.signer.Public())
	checkCommandDelivery(t, cl, func() *cmdEdge {
		aud := protocol.BrokerAudience(protocol.BrokerNATS, "")
		return natsCmdEdge(t, ext.Addr(), stream.Signer.BrokerToken(aud, "shop-1", uint64(time.Now().UnixMilli())), stream, keys)
	}, &logs)
}

// `cloud commands list --edge E [--json]` shows an edge's commands from the
// database; bad or missing input is a usage error that says what to give.
func TestCommandsListCLI(t *testing.T) {
	url, conn, _ := mustEdgeDB(t, 0)
	s := protocoltest.NewSigner(t)
	ctx := context.Background()
	for _, ref := range []string{"r-1", "r-2"} {
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			_, err := command.Enqueue(ctx, tx, s, "shop-1", protocol.CommandAssign, ref, []byte(`{"rollout":"`+ref+`"}`), time.Now().Add(time.Hour))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { _, err := command.CancelRef(ctx, tx, "r-2"); return err }); err != nil {
		t.Fatal(err)
	}
	db := []string{"--database-url", url}
	code, out, errb := cloudRun(t, append([]string{"commands", "list", "--edge", "shop-1"}, db...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "SEQ") || !strings.Contains(lines[1], "pending") || !strings.Contains(lines[2], "cancelled") {
		t.Fatalf("table:\n%s", out)
	}
	code, out, errb = cloudRun(t, append([]string{"commands", "list", "--edge", "shop-1", "--json"}, db...)...)
	var v command.Views
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Edge != "shop-1" || len(v.Commands) != 2 ||
		v.Commands[1].State != command.StateCancelled || string(v.Commands[0].Body) != `{"rollout":"r-1"}` {
		t.Fatalf("--json: exit %d, %s %s", code, out, errb)
	}
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"commands", "list"}, 2, "needs --edge"},
		{[]string{"commands", "list", "--edge", "a/b"}, 2, "--edge"},
		{[]string{"commands"}, 2, "needs a subcommand"},
		{[]string{"commands", "show"}, 2, "unknown command"},
		{[]string{"commands", "list", "--edge", "ghost"}, 1, "ghost"},
	} {
		code, _, errb := cloudRun(t, append(tc.args, db...)...)
		if code != tc.code || !strings.Contains(errb, tc.says) {
			t.Errorf("%v: exit %d, %q; want %d naming %q", tc.args, code, errb, tc.code, tc.says)
		}
	}
}
