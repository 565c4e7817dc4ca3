package nats_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	brokernats "github.com/outpost-edge/outpost/cloud/broker/nats"
	"github.com/outpost-edge/outpost/cloud/edgeauth"
	"github.com/outpost-edge/outpost/protocol"
)

// slowStore answers after a delay, as Postgres does behind a storm's
// commits.
type slowStore struct {
	edgeauth.Store
	delay time.Duration
}

func (s slowStore) UseCounter(ctx context.Context, edge string, kid protocol.KeyID, counter uint64) error {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.UseCounter(ctx, edge, kid, counter)
}

// TestSlowLoginStillConnects: a login whose check takes longer than
// nats-server's short first PING (about 2 s after the connection) still
// connects a client that waits for it. nats.go reads the server's answer to
// its CONNECT expecting PONG, and the server's first PING, sent while the
// check still ran, ended the handshake ("nats: expected 'PONG', got
// 'PING'"): in a reconnect storm, where logins wait behind commits, edges
// failed to connect over and over (5,511 failed connects, 454 of 1,000
// edges never connected in a saturation run). The check is as strict as
// before: a replay of the same token is still refused.
func TestSlowLoginStillConnects(t *testing.T) {
	e1 := signer("e1")
	keys := edgeauth.KeysStore(func(_ context.Context, edge string) (protocol.Keys, error) {
		return protocol.NewKeyMap(e1.Public()), nil
	})
	auth, err := edgeauth.New(edgeauth.Options{Store: slowStore{keys, 3500 * time.Millisecond}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := brokernats.Start(brokernats.Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Auth: auth, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	tok := natsToken(e1, "e1")
	connect := func() (*natsgo.Conn, error) {
		// The client waits up to 30 s: a guard against a hang, not a
		// measure of speed.
		return natsgo.Connect(s.ClientURL(), natsgo.UserInfo("e1", tok), natsgo.NoReconnect(), natsgo.Timeout(30*time.Second),
			natsgo.CustomInboxPrefix(protocol.NATSInboxPrefix("e1")))
	}
	nc, err := connect()
	if err != nil {
		t.Fatalf("a login that takes 3.5 s: %v", err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if nc2, err := connect(); err == nil {
		nc2.Close()
		t.Fatal("the same token was accepted twice")
	}
}
