package main

import (
	"context"
	"crypto/ed25519"
	"io"
	"net/http"
	"path/filepath"
	"strings"
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

// readyz returns the status and body of GET /readyz.
func readyz(t *testing.T, m *Main) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + m.APIAddr() + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /readyz is 503 while every commit fails, though the database answers
// and the schema is current, and 200 again once commits succeed. The
// failure is the database's disk full (SQLSTATE 53100), raised by a
// trigger on the streams table.
func TestReadyzReflectsCommits(t *testing.T) {
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
	stream.AddN(t, 5)
	if _, err := ledger.New(conn, ledger.Options{}).AddEdge(ctx, "shop-1", stream.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `
		CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; END $$;
		CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON streams FOR EACH ROW EXECUTE FUNCTION disk_full()`); err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	m, _ := startServe(t, runCtx, logs, "--database-url", url, "--log-level", "warn")
	poll.Until(t, 30*time.Second, "/readyz 200 before any commit", func() bool { c, _ := readyz(t, m); return c == 200 })

	cloudKey, err := keyfile.Load(filepath.Join(m.Config.DataDir, "cloud.key"))
	if err != nil {
		t.Fatal(err)
	}
	receipt := make(chan protocol.Receipt, 16)
	edge := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + m.BrokerAddr()).
		SetClientID(brokermqtt.EdgeClientPrefix + "shop-1").SetUsername("shop-1").
		SetPassword(stream.Signer.BrokerToken(protocol.BrokerAudience(protocol.BrokerMQTT, string(protocol.KeyIDOf(cloudKey.Public().(ed25519.PublicKey)))), "shop-1", 1)).SetAutoReconnect(false))
	if tok := edge.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("edge connect: %v", tok.Error())
	}
	defer edge.Disconnect(0)
	rcpt, _ := protocol.EdgeTopic("shop-1", protocol.KindReceipt)
	segTopic, _ := protocol.EdgeTopic("shop-1", protocol.KindSegment)
	keys := protocol.NewKeyMap(cloudKey.Public().(ed25519.PublicKey))
	if tok := edge.Subscribe(rcpt, 1, func(_ paho.Client, msg paho.Message) {
		if r, err := protocol.VerifyReply(msg.Payload(), keys); err == nil && r.Receipt != nil {
			receipt <- *r.Receipt
		}
	}); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := edge.Publish(segTopic, 1, false, protocoltest.Encode(t, stream.Segment(1, 5), false)); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}

	var body string
	poll.Until(t, 30*time.Second, "/readyz 503 while commits fail", func() bool {
		var c int
		c, body = readyz(t, m)
		return c == 503
	})
	for _, want := range []string{"commits are failing", "SQLSTATE 53100", "disk full"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz says %s; want it to say %q", body, want)
		}
	}
	if strings.Contains(body, "No space left") {
		t.Errorf("/readyz shows the driver's message to anyone: %s", body)
	}

	// Space again: the retried commit goes through and readiness returns.
	if _, err := conn.Exec(ctx, `DROP TRIGGER disk_full ON streams`); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "the receipt of the retried commit", func() bool {
		select {
		case r := <-receipt:
			if r.HWM != 5 {
				t.Fatalf("receipt hwm %d, want 5", r.HWM)
			}
			return true
		default:
			return false
		}
	})
	poll.Until(t, 30*time.Second, "/readyz 200 once commits succeed", func() bool { c, _ := readyz(t, m); return c == 200 })
}
