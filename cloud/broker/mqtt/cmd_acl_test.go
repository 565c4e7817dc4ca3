package mqtt_test

import (
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	broker "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	"github.com/outpost-edge/outpost/internal/poll"
)

// The command channel's ACL: an edge may subscribe to its own cmd topic
// only, and no edge may publish to any edge's cmd topic (its own
// included): only the cloud's own connection does. A foreign edge tries
// both.
func TestCommandTopicACL(t *testing.T) {
	b := startBroker(t)
	login := func(edge string) paho.Client {
		t.Helper()
		c, err := connect(t, b, broker.EdgeClientPrefix+edge, edge, token(signer(edge), edge))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var mu sync.Mutex
	var got []string
	e1 := login("e1")
	sub := e1.Subscribe("outpost/v1/edge/e1/cmd", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		got = append(got, string(m.Payload()))
		mu.Unlock()
	})
	if !sub.WaitTimeout(5*time.Second) || sub.(*paho.SubscribeToken).Result()["outpost/v1/edge/e1/cmd"] >= 0x80 {
		t.Fatalf("e1 could not subscribe to its own cmd topic: %v %v", sub.Error(), sub.(*paho.SubscribeToken).Result())
	}

	// e2 subscribes to e1's commands, by name and by wildcard: refused.
	for _, filter := range []string{"outpost/v1/edge/e1/cmd", "outpost/v1/edge/+/cmd", "outpost/v1/edge/#", "#"} {
		st := login("e2").Subscribe(filter, 1, nil)
		st.WaitTimeout(5 * time.Second)
		if r := st.(*paho.SubscribeToken).Result()[filter]; r != 0x80 {
			t.Errorf("e2 subscribing to %s got %#x, want 0x80", filter, r)
		}
	}
	// e2 publishes to e1's cmd topic, and e1 to its own: neither reaches
	// the broker's subscribers. (mochi drops the publish and closes a 3.1.1
	// connection that tries, so each forger logs in anew; e1's forger takes
	// over e1's session, so an internal witness listens for e1 here.)
	witness, err := connect(t, b, "witness", broker.InternalUser, b.InternalPassword())
	if err != nil {
		t.Fatal(err)
	}
	var heard []string
	if tok := witness.Subscribe("outpost/v1/edge/+/cmd", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		heard = append(heard, string(m.Payload()))
		mu.Unlock()
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	login("e2").Publish("outpost/v1/edge/e1/cmd", 1, false, []byte("forged by e2")).WaitTimeout(2 * time.Second)
	// The cloud's own connection does reach e1, after the forgeries.
	internal, err := connect(t, b, "ingest", broker.InternalUser, b.InternalPassword())
	if err != nil {
		t.Fatal(err)
	}
	if tok := internal.Publish("outpost/v1/edge/e1/cmd", 1, false, []byte("from the cloud")); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("the cloud's publish: %v", tok.Error())
	}
	poll.Until(t, 10*time.Second, "the cloud's command at e1", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && got[len(got)-1] == "from the cloud"
	})
	login("e1").Publish("outpost/v1/edge/e1/cmd", 1, false, []byte("forged by e1")).WaitTimeout(2 * time.Second)
	if tok := internal.Publish("outpost/v1/edge/e1/cmd", 1, false, []byte("marker")); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("the cloud's publish: %v", tok.Error())
	}
	poll.Until(t, 10*time.Second, "the marker at the witness", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(heard) > 0 && heard[len(heard)-1] == "marker"
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Errorf("e1 got %q on its cmd topic; want only the cloud's", got)
	}
	if len(heard) != 2 || heard[0] != "from the cloud" {
		t.Errorf("the witness heard %q on the cmd topics; want only the cloud's two", heard)
	}
}
