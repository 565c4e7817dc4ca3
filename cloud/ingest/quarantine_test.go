package ingest_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ingest"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// lockedBuffer is a log sink safe for the workers.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// A quarantined segment is logged once and counted once, by the ledger
// that keeps it (with its quarantine row's id), and nacked by ingest.
func TestQuarantineLoggedOnce(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := ledger.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	led := ledger.New(conn, ledger.Options{Logger: log})
	stream := protocoltest.NewStream(t, "shop-1", protocoltest.NewSigner(t))
	stream.AddN(t, 3)
	if _, err := led.AddEdge(ctx, "shop-1", stream.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	svc, cloud := start(t, led, func(o *ingest.Options) { o.Logger = log })
	rp := &replies{msgs: map[string][][]byte{}}
	acked := make(chan struct{})
	forged := stream.SignedBy(protocoltest.NewSigner(t)).Segment(1, 3) // not shop-1's key
	if err := svc.Handle(ctx, ingest.Delivery{TopicEdge: "shop-1", Payload: protocoltest.Encode(t, forged, false), Replier: rp,
		Ack: func() { close(acked) }}); err != nil {
		t.Fatal(err)
	}
	<-acked
	reps := rp.verified(t, "shop-1", protocol.NewKeyMap(cloud.Public()))
	if len(reps) != 1 || reps[0].Nack == nil {
		t.Fatalf("replies %+v, want one nack", reps)
	}
	if n := strings.Count(logs.String(), "segment quarantined"); n != 1 {
		t.Fatalf("the quarantine is logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "quarantine_id=1") || !strings.Contains(logs.String(), "first=1 last=3") {
		t.Errorf("the quarantine's log line lacks its id or range:\n%s", logs.String())
	}
	if q := led.Stats().Quarantined; q != 1 {
		t.Fatalf("ledger counted %d quarantines, want 1", q)
	}
}
