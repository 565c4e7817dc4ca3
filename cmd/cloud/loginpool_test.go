package main

import (
	"context"
	"net/url"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5/pgxpool"
	natsgo "github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/protocol"
)

// TestLoginsDoNotWaitForCommitConnections: with every connection of the
// cloud's main pool taken (as a storm's commits take them), edges still
// log in to both embedded brokers, with their tokens checked in full (a
// replay is refused). Logins used to take their connections from the
// main pool and wait behind the commits, on the broker's read loop, until
// the client gave up.
func TestLoginsDoNotWaitForCommitConnections(t *testing.T) {
	dbURL := pgtest.New(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", "2")
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	m, done := startServe(t, ctx, logs, "--database-url", u.String(), "--migrate", "--log-level", "warn",
		"--nats-embedded", "--nats-listen", "127.0.0.1:0", "--audit-every", "0")
	defer func() { cancel(); <-done }()
	cloudKey, err := loadCloudKey(m.Config.DataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	_, priv, err := protocol.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	edge, _ := protocol.NewSigner(priv)
	if _, err := ledger.New(admin, ledger.Options{}).AddEdge(context.Background(), "shop-1", edge.Public()); err != nil {
		t.Fatal(err)
	}
	// Take every connection of the main pool, and hold them.
	var held []*pgxpool.Conn
	for range int(m.pool.Config().MaxConns) {
		actx, acancel := context.WithTimeout(context.Background(), time.Minute)
		c, err := m.pool.Acquire(actx)
		acancel()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Release()
		}
	}()
	n := uint64(time.Now().UnixMilli())
	token := func(broker string) string {
		n++
		return edge.BrokerToken(protocol.BrokerAudience(broker, string(cloudKey.KeyID())), "shop-1", n)
	}
	natsTok := token(protocol.BrokerNATS)
	natsConnect := func(tok string) (*natsgo.Conn, error) {
		return natsgo.Connect("nats://"+m.NATSAddr(), natsgo.UserInfo("shop-1", tok), natsgo.NoReconnect(),
			natsgo.Timeout(30*time.Second), natsgo.CustomInboxPrefix(protocol.NATSInboxPrefix("shop-1")))
	}
	nc, err := natsConnect(natsTok)
	if err != nil {
		t.Fatalf("NATS login with the main pool taken: %v\n%s", err, logs.String())
	}
	nc.Close()
	if nc, err := natsConnect(natsTok); err == nil {
		nc.Close()
		t.Fatal("a replayed NATS token was accepted")
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + m.BrokerAddr()).SetClientID("outpost-edge-shop-1").
		SetUsername("shop-1").SetPassword(token(protocol.BrokerMQTT)).SetAutoReconnect(false).SetConnectTimeout(30 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(40*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT login with the main pool taken: %v\n%s", tok.Error(), logs.String())
	}
	c.Disconnect(0)
}
