package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// recordLogins accepts every login and keeps the passwords.
type recordLogins struct {
	mochi.HookBase
	mu    sync.Mutex
	users []string
	pass  []string
}

func (h *recordLogins) ID() string { return "record" }
func (h *recordLogins) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (h *recordLogins) OnACLCheck(*mochi.Client, string, bool) bool { return true }
func (h *recordLogins) OnConnectAuthenticate(_ *mochi.Client, pk packets.Packet) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.users = append(h.users, string(pk.Connect.Username))
	h.pass = append(h.pass, string(pk.Connect.Password))
	return true
}

func (h *recordLogins) last() (string, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pass) == 0 {
		return "", 0
	}
	return h.pass[len(h.pass)-1], len(h.pass)
}

// `edge run` logs in with broker tokens for MQTT on the cloud whose key it
// pins, with a counter kept in <data-dir>/broker-counter: after a restart,
// and when its clock is 8 days behind its last login, the counter still
// goes up, so the cloud accepts it.
func TestRunBrokerTokens(t *testing.T) {
	srv := mochi.New(&mochi.Options{InlineClient: true})
	rec := &recordLogins{}
	if err := srv.AddHook(rec, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "cloud", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Close() })

	_, cloudPriv, err := protocol.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cloud, _ := protocol.NewSigner(cloudPriv)
	dir := t.TempDir()
	counterFile := filepath.Join(dir, "broker-counter")
	run := func() (token string) {
		t.Helper()
		_, before := rec.last()
		var logs bytes.Buffer
		m := NewMain(&logs, &logs)
		if err := m.ParseFlags([]string{"--data-dir", dir, "--edge-id", "shop-1", "--cloud-key", hex.EncodeToString(cloud.Public()),
			"--cloud-mqtt", "tcp://" + l.Address(), "--mqtt-listen", "127.0.0.1:0", "--http-listen", "",
			"--status-listen", "127.0.0.1:0", "--log-level", "warn"}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		poll.Until(t, 30*time.Second, "a login at the broker", func() bool { _, n := rec.last(); return n > before })
		token, _ = rec.last()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run: %v\n%s", err, logs.String())
		}
		_ = m.Close()
		return token
	}
	signer, _, err := loadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	aud := protocol.BrokerAudience(protocol.BrokerMQTT, string(cloud.KeyID()))
	check := func(token string) uint64 {
		t.Helper()
		tok, err := protocol.VerifyBrokerToken(aud, "shop-1", token, protocol.NewKeyMap(signer.Public()))
		if err != nil {
			t.Fatalf("token %q: %v", token, err)
		}
		b, err := os.ReadFile(counterFile)
		if err != nil || strings.TrimSpace(string(b)) != strconv.FormatUint(tok.Counter, 10) {
			t.Fatalf("counter file %q (%v), token counter %d", b, err, tok.Counter)
		}
		return tok.Counter
	}
	first := check(run())
	second := check(run())
	if second <= first {
		t.Fatalf("counter after a restart %d, not above %d", second, first)
	}
	// The last login was 8 days after what this clock says now.
	ahead := uint64(time.Now().Add(8 * 24 * time.Hour).UnixMilli())
	if err := os.WriteFile(counterFile, []byte(strconv.FormatUint(ahead, 10)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := check(run()); got != ahead+1 {
		t.Fatalf("with the clock 8 days behind the last login: counter %d, want %d", got, ahead+1)
	}
}
