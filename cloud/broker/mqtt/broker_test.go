package mqtt_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	broker "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func signer(name string) *protocol.Signer {
	s, _ := protocol.NewSigner(protocoltest.Key(name))
	return s
}

// counter returns broker-token counters that only go up.
func counter() uint64 { return lastCounter.Add(1) }

var lastCounter atomic.Uint64

// token is a fresh MQTT broker token for edge, signed by s.
func token(s *protocol.Signer, edge string) string {
	return s.BrokerToken(protocol.BrokerMQTT, edge, counter())
}

func startBroker(t *testing.T) *broker.Broker {
	t.Helper()
	keys := map[string]protocol.Keys{
		"e1": protocol.NewKeyMap(signer("e1").Public()),
		"e2": protocol.NewKeyMap(signer("e2").Public()),
	}
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", Keys: func(_ context.Context, edge string) (protocol.Keys, error) {
		if k, ok := keys[edge]; ok {
			return k, nil
		}
		return nil, errors.New("unknown edge")
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func connect(t *testing.T, b *broker.Broker, clientID, user, pass string) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(clientID).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectTimeout(2 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil, errors.Join(errors.New("connect failed"), tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func TestEdgeLogin(t *testing.T) {
	b := startBroker(t)
	if _, err := connect(t, b, "outpost-edge-e1", "e1", token(signer("e1"), "e1")); err != nil {
		t.Fatalf("a valid edge login was refused: %v", err)
	}
	cases := map[string][3]string{
		"another edge's key":     {"outpost-edge-e1", "e1", token(signer("e2"), "e1")},
		"wrong client id":        {"someone", "e1", token(signer("e1"), "e1")},
		"token for NATS":         {"outpost-edge-e1", "e1", signer("e1").BrokerToken(protocol.BrokerNATS, "e1", counter())},
		"unknown edge":           {"outpost-edge-e9", "e9", token(signer("e9"), "e9")},
		"garbage password":       {"outpost-edge-e1", "e1", "hunter2"},
		"internal, bad password": {"x", broker.InternalUser, "nope"},
	}
	for name, c := range cases {
		if _, err := connect(t, b, c[0], c[1], c[2]); err == nil {
			t.Errorf("%s: login accepted", name)
		}
	}
}

// An edge may publish only to its own seg/hello/status and subscribe only to
// its own rcpt/cmd.
func TestEdgeACL(t *testing.T) {
	b := startBroker(t)
	internal, err := connect(t, b, "ingest", broker.InternalUser, b.InternalPassword())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]int{}
	tok := internal.Subscribe("outpost/v1/edge/#", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got[m.Topic()]++
		mu.Unlock()
	})
	tok.Wait()
	login := func() paho.Client {
		c, err := connect(t, b, "outpost-edge-e1", "e1", token(signer("e1"), "e1"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	e1 := login()
	e1.Publish("outpost/v1/edge/e1/seg", 1, false, []byte("x")).WaitTimeout(2 * time.Second)
	// A publish outside its own topics is dropped, and mochi closes an
	// MQTT 3.1.1 connection that tries.
	for _, topic := range []string{"outpost/v1/edge/e2/seg", "outpost/v1/edge/e1/rcpt", "outpost/v1/dev/d1/ev"} {
		login().Publish(topic, 1, false, []byte("x")).WaitTimeout(2 * time.Second)
	}
	count := func(topic string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return got[topic] >= 1 }
	}
	poll.Until(t, 10*time.Second, "e1's own segment forwarded", count("outpost/v1/edge/e1/seg"))
	// Give a wrongly forwarded message the same chance to arrive.
	internal.Publish("outpost/v1/edge/e1/status", 1, false, []byte("marker")).Wait()
	poll.Until(t, 10*time.Second, "the marker after it", count("outpost/v1/edge/e1/status"))
	mu.Lock()
	defer mu.Unlock()
	delete(got, "outpost/v1/edge/e1/status")
	if got["outpost/v1/edge/e1/seg"] != 1 || len(got) != 1 {
		t.Fatalf("delivered: %v; want only e1's own seg", got)
	}
	st := login().Subscribe("outpost/v1/edge/e2/rcpt", 1, nil)
	st.WaitTimeout(2 * time.Second)
	if r := st.(*paho.SubscribeToken).Result()["outpost/v1/edge/e2/rcpt"]; r != 0x80 {
		t.Fatalf("subscribing to another edge's receipts returned %#x, want 0x80", r)
	}
}
