package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"path/filepath"
	"strings"
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
// the test ends, and returns it once ready with its done channel.
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
	}
	t.Cleanup(func() { _ = m.Close() })
	return m, done
}

// A SIGTERM while a commit is in progress lets the commit finish and its
// receipt reach the edge before serve stops (when --drain-timeout allows):
// no commit is left without its receipt. The commit is held in the
// database (a lock the test holds on the edge's row) until serve has begun
// to shut down, so the test does not depend on timing.
func TestShutdownDrainsIngest(t *testing.T) {
	ctx := context.Background()
	url := pgtest.New(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := ledger.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	stream := protocoltest.NewStream(t, "shop-1", protocoltest.NewSigner(t))
	stream.AddN(t, 10)
	if _, err := ledger.New(conn, ledger.Options{}).AddEdge(ctx, "shop-1", stream.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	runCtx, sigterm := context.WithCancel(ctx)
	defer sigterm()
	m, done := startServe(t, runCtx, logs, "--database-url", url, "--drain-timeout", "2m", "--log-level", "info")
	cloudKey, err := keyfile.Load(filepath.Join(m.Config.DataDir, "cloud.key"))
	if err != nil {
		t.Fatal(err)
	}
	cloudKeys := protocol.NewKeyMap(cloudKey.Public().(ed25519.PublicKey))

	// The edge: logged in with its key, listening for its receipts.
	var mu sync.Mutex
	var receipts []protocol.Receipt
	opts := paho.NewClientOptions().AddBroker("tcp://" + m.BrokerAddr()).
		SetClientID(brokermqtt.EdgeClientPrefix + "shop-1").SetUsername("shop-1").
		SetPassword(stream.Signer.BrokerToken(protocol.BrokerAudience(protocol.BrokerMQTT, string(protocol.KeyIDOf(cloudKey.Public().(ed25519.PublicKey)))), "shop-1", 1)).SetAutoReconnect(false)
	edge := paho.NewClient(opts)
	if tok := edge.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("edge connect: %v", tok.Error())
	}
	defer edge.Disconnect(0)
	rcpt, _ := protocol.EdgeTopic("shop-1", protocol.KindReceipt)
	segTopic, _ := protocol.EdgeTopic("shop-1", protocol.KindSegment)
	if tok := edge.Subscribe(rcpt, 1, func(_ paho.Client, msg paho.Message) {
		r, err := protocol.VerifyReply(msg.Payload(), cloudKeys)
		if err != nil || r.Receipt == nil {
			t.Errorf("reply %+v: %v", r, err)
			return
		}
		mu.Lock()
		receipts = append(receipts, *r.Receipt)
		mu.Unlock()
	}); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	publish := func(first, last uint64) {
		t.Helper()
		tok := edge.Publish(segTopic, 1, false, protocoltest.Encode(t, stream.Segment(first, last), false))
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d..%d: %v", first, last, tok.Error())
		}
	}

	// Hold the edge's row: the commit's recheck of the key (FOR SHARE)
	// waits for it. (Only after the login, which uses the row too: it
	// records the broker token's counter.)
	hold, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `SELECT 1 FROM edges WHERE id = 'shop-1' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	publish(1, 5)
	poll.Until(t, 30*time.Second, "the commit waiting on the held row", func() bool {
		var n int
		_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		return n > 0
	})
	sigterm() // what the first SIGTERM does
	poll.Until(t, 30*time.Second, "serve to begin its drain", func() bool {
		return strings.Contains(logs.String(), "shutting down: draining")
	})
	select {
	case err := <-done:
		t.Fatalf("serve returned (%v) with a commit in hand\n%s", err, logs.String())
	default:
	}
	publish(6, 10) // arrives while draining: must not be committed without a receipt either
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v\n%s", err, logs.String())
	}

	var hwm int64
	if err := conn.QueryRow(ctx, `SELECT hwm FROM streams WHERE edge = 'shop-1'`).Scan(&hwm); err != nil {
		t.Fatalf("the segment in hand was not committed: %v\n%s", err, logs.String())
	}
	// The broker acknowledged the receipt before serve returned; its
	// delivery to the edge follows.
	var got uint64
	var n int
	poll.Until(t, 30*time.Second, "the receipt of the committed segment at the edge", func() bool {
		mu.Lock()
		defer mu.Unlock()
		got, n = 0, len(receipts)
		for _, r := range receipts {
			got = max(got, r.HWM)
		}
		return got >= uint64(hwm)
	})
	if hwm != 5 || got != uint64(hwm) {
		t.Fatalf("committed up to %d, receipts up to %d (%d receipts); want both 5\n%s", hwm, got, n, logs.String())
	}
}
