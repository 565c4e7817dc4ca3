package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5/pgxpool"
	natsgo "github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// `cloud serve` wires broker logins end to end: tokens bound to this
// cloud's key id and to one broker are accepted on the embedded MQTT broker
// and NATS server, and revoking the edge in the database (as the API or
// another replica's CLI does) closes both sessions.
func TestServeBrokerLoginsAndRevocation(t *testing.T) {
	var logs syncBuffer
	m := NewMain(&logs, &logs)
	dir := filepath.Join(t.TempDir(), "cloud")
	url := pgtest.New(t)
	if err := m.ParseFlags([]string{"--database-url", url, "--migrate", "--data-dir", dir,
		"--http", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--nats-embedded", "--nats-listen", "127.0.0.1:0", "--log-level", "warn"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = m.Close() })
	select {
	case <-m.Ready:
	case err := <-done:
		t.Fatalf("serve stopped: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve not ready within 30s")
	}
	cloudKey, err := loadCloudKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	admin := ledger.New(pool, ledger.Options{})
	_, priv, err := protocol.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	edge, _ := protocol.NewSigner(priv)
	if _, err := admin.AddEdge(context.Background(), "shop-1", edge.Public()); err != nil {
		t.Fatal(err)
	}
	n := uint64(time.Now().UnixMilli())
	token := func(broker, cluster string) string {
		n++
		return edge.BrokerToken(protocol.BrokerAudience(broker, cluster), "shop-1", n)
	}
	kid := string(cloudKey.KeyID())

	mqttConnect := func(pass string) (paho.Client, error) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + m.BrokerAddr()).SetClientID("outpost-edge-shop-1").
			SetUsername("shop-1").SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
		tok := c.Connect()
		tok.WaitTimeout(10 * time.Second)
		return c, tok.Error()
	}
	if _, err := mqttConnect(token(protocol.BrokerMQTT, "")); err == nil {
		t.Error("a token without this cloud's key id was accepted")
	}
	mq, err := mqttConnect(token(protocol.BrokerMQTT, kid))
	if err != nil {
		t.Fatalf("MQTT login: %v\n%s", err, logs.String())
	}
	defer mq.Disconnect(0)
	nc, err := natsgo.Connect("nats://"+m.NATSAddr(), natsgo.UserInfo("shop-1", token(protocol.BrokerNATS, kid)), natsgo.NoReconnect(),
		natsgo.CustomInboxPrefix(protocol.NATSInboxPrefix("shop-1")))
	if err != nil {
		t.Fatalf("NATS login: %v\n%s", err, logs.String())
	}
	defer nc.Close()

	if err := admin.RevokeEdge(context.Background(), "shop-1"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 15*time.Second, "the revoked edge's MQTT and NATS sessions closed", func() bool {
		return !mq.IsConnectionOpen() && nc.IsClosed()
	})
}
