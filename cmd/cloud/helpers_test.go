package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"

	brokermqtt "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/keyfile"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startServe runs `cloud serve` in-process with args (and free ports) until
// ctx ends, and returns it once ready with its done channel.
func startServe(t *testing.T, ctx context.Context, logs *syncBuffer, args ...string) (*Main, <-chan error) {
	t.Helper()
	m := NewMain(logs, logs)
	args = append([]string{"--data-dir", filepath.Join(t.TempDir(), "cloud"), "--http", "127.0.0.1:0",
		"--mqtt-listen", "127.0.0.1:0"}, args...)
	if err := m.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Ready:
	case err := <-done:
		t.Fatalf("serve stopped: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second): // a hang guard, not a timing check
		t.Fatalf("serve not ready within 30s\n%s", logs.String())
	}
	t.Cleanup(func() { _ = m.Close() })
	return m, done
}

// mustEdgeDB returns a migrated database with edge shop-1 registered, a
// connection to it, and shop-1's stream of n records.
func mustEdgeDB(t *testing.T, n int) (string, *pgx.Conn, *protocoltest.Stream) {
	t.Helper()
	ctx := context.Background()
	url := pgtest.New(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if err := ledger.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	stream := protocoltest.NewStream(t, "shop-1", protocoltest.NewSigner(t))
	stream.AddN(t, n)
	if _, err := ledger.New(conn, ledger.Options{}).AddEdge(ctx, "shop-1", stream.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	return url, conn, stream
}

// mqttEdge is an edge on serve's embedded broker, logged in with its key,
// collecting the receipts it gets (verified with the cloud's key).
type mqttEdge struct {
	t      *testing.T
	client paho.Client
	stream *protocoltest.Stream

	mu        sync.Mutex
	receipts  []protocol.Receipt
	published uint64 // the highest seq published
}

func mustMQTTEdge(t *testing.T, m *Main, stream *protocoltest.Stream) *mqttEdge {
	t.Helper()
	cloudKey, err := keyfile.Load(filepath.Join(m.Config.DataDir, "cloud.key"))
	if err != nil {
		t.Fatal(err)
	}
	keys := protocol.NewKeyMap(cloudKey.Public().(ed25519.PublicKey))
	edge := stream.Stream.Edge
	e := &mqttEdge{t: t, stream: stream}
	e.client = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + m.BrokerAddr()).
		SetClientID(brokermqtt.EdgeClientPrefix + edge).SetUsername(edge).
		SetPassword(mqttToken(stream.Signer, cloudKey.Public().(ed25519.PublicKey), edge)).SetAutoReconnect(false))
	if tok := e.client.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("edge connect: %v", tok.Error())
	}
	t.Cleanup(func() { e.client.Disconnect(0) })
	rcpt, _ := protocol.EdgeTopic(edge, protocol.KindReceipt)
	if tok := e.client.Subscribe(rcpt, 1, func(_ paho.Client, msg paho.Message) {
		r, err := protocol.VerifyReply(msg.Payload(), keys)
		if err == nil && r.Nack != nil && r.Nack.Code == protocol.NackGap {
			// A pipelined segment that reached a commit worker before the
			// one it follows (under load, past the cloud's gap wait):
			// resend from the watermark, as a real edge rewinds.
			e.mu.Lock()
			last := e.published
			e.mu.Unlock()
			if r.Nack.HWM < last {
				seg, _ := protocol.EdgeTopic(edge, protocol.KindSegment)
				e.client.Publish(seg, 1, false, protocoltest.Encode(t, e.stream.Segment(r.Nack.HWM+1, last), false))
			}
			return
		}
		if err != nil || r.Receipt == nil {
			t.Errorf("reply %+v: %v", r, err)
			return
		}
		e.mu.Lock()
		e.receipts = append(e.receipts, *r.Receipt)
		e.mu.Unlock()
	}); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return e
}

// publish sends records first..last as one segment, at QoS 1.
func (e *mqttEdge) publish(first, last uint64) {
	e.t.Helper()
	topic, _ := protocol.EdgeTopic(e.stream.Stream.Edge, protocol.KindSegment)
	tok := e.client.Publish(topic, 1, false, protocoltest.Encode(e.t, e.stream.Segment(first, last), false))
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		e.t.Fatalf("publish %d..%d: %v", first, last, tok.Error())
	}
	e.mu.Lock()
	e.published = max(e.published, last)
	e.mu.Unlock()
}

// waitReceipted waits until the cloud has receipted through last. Like a
// real edge after its ack timeout, every 10 s while it waits it sends what
// is not receipted again and says hello (the cloud answers a hello with a
// receipt of its watermark), so a receipt the cloud dropped, as it may
// under load (a reply's publish that timed out), is asked for again rather
// than waited for forever.
func (e *mqttEdge) waitReceipted(last uint64, logs *syncBuffer) {
	e.t.Helper()
	topic, _ := protocol.EdgeTopic(e.stream.Stream.Edge, protocol.KindHello)
	nextHello := time.Now().Add(10 * time.Second)
	poll.For(e.t, 90*time.Second, func() error {
		hwm, n := e.receipted()
		if hwm == last {
			return nil
		}
		if time.Now().After(nextHello) {
			// What is not receipted is sent again (a duplicate is
			// receipted too), then hello asks for the watermark.
			nextHello = time.Now().Add(10 * time.Second)
			seg, _ := protocol.EdgeTopic(e.stream.Stream.Edge, protocol.KindSegment)
			e.client.Publish(seg, 1, false, protocoltest.Encode(e.t, e.stream.Segment(hwm+1, last), false))
			e.client.Publish(topic, 1, false, protocol.EncodeHello(protocol.Hello{Edge: e.stream.Stream.Edge,
				Epoch: e.stream.Stream.Epoch, Seq: last, SentAt: time.Now().UnixMilli()}))
		}
		return fmt.Errorf("receipted through %d (%d receipts), want %d\n%s", hwm, n, last, logs.String())
	})
}

// receipted returns the highest hwm receipted so far and how many
// receipts came.
func (e *mqttEdge) receipted() (hwm uint64, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range e.receipts {
		hwm = max(hwm, r.HWM)
	}
	return hwm, len(e.receipts)
}

// mqttToken is a broker token for edge on the embedded MQTT broker of the
// cloud whose key is cloud, with the clock as its counter.
func mqttToken(s *protocol.Signer, cloud ed25519.PublicKey, edge string) string {
	aud := protocol.BrokerAudience(protocol.BrokerMQTT, string(protocol.KeyIDOf(cloud)))
	return s.BrokerToken(aud, edge, uint64(time.Now().UnixMilli()))
}
