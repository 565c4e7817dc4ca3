package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/protocol"
)

// fakeFleet is the part of the cloud API that edge key rotate talks to.
type fakeFleet struct {
	mu       sync.Mutex
	keys     map[protocol.KeyID]bool
	failList bool // GET /v1/edges/{id} answers 503
}

func (f *fakeFleet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer admin-token" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/edges/shop-1/keys":
		var req struct {
			PublicKey string `json:"public_key"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		pub, err := protocol.ParsePublicKey(req.PublicKey)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		kid := protocol.KeyIDOf(pub)
		if f.keys[kid] {
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"error":"rotate key: key ` + string(kid) + `: key already registered"}`))
			return
		}
		f.keys[kid] = true
		w.WriteHeader(http.StatusCreated)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/edges/shop-1":
		if f.failList {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var ks []map[string]string
		for k := range f.keys {
			ks = append(ks, map[string]string{"kid": string(k), "status": "active"})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "shop-1", "keys": ks})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// A rotation that fails after registering the key switches nothing; run
// again, it finishes with the same new key, and the old one is in the
// history that outbox verify reads.
func TestKeyRotateResumes(t *testing.T) {
	dir := t.TempDir()
	old, _, err := loadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	fleet := &fakeFleet{keys: map[protocol.KeyID]bool{old.KeyID(): true}, failList: true}
	srv := httptest.NewServer(fleet)
	defer srv.Close()
	if err := saveIdentity(dir, identity{Edge: "shop-1", Cloud: srv.URL}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := rotateKey(context.Background(), dir, "", "admin-token", &out); err == nil {
		t.Fatal("rotate succeeded though the cloud could not confirm the key")
	}
	if s, _, _ := loadSigner(dir); s.KeyID() != old.KeyID() {
		t.Fatal("switched to a key the cloud had not confirmed")
	}
	if _, err := os.Stat(nextKeyPath(dir)); err != nil {
		t.Fatalf("the pending key is gone: %v", err)
	}
	fleet.mu.Lock()
	fleet.failList = false
	fleet.mu.Unlock()
	out.Reset()
	if err := rotateKey(context.Background(), dir, "", "admin-token", &out); err != nil {
		t.Fatalf("resumed rotate: %v\n%s", err, out.String())
	}
	cur, _, _ := loadSigner(dir)
	if cur.KeyID() == old.KeyID() || !fleet.keys[cur.KeyID()] || len(fleet.keys) != 2 {
		t.Fatalf("now %s; cloud has %v", cur.KeyID(), fleet.keys)
	}
	keys, err := verifyKeys(dir)
	if err != nil || keys[old.KeyID()] == nil || keys[cur.KeyID()] == nil {
		t.Fatalf("verify keys %v, %v", keys, err)
	}
	if err := rotateKey(context.Background(), dir, "", "wrong", &out); err == nil {
		t.Fatal("rotate with a wrong token succeeded")
	}
}

// outbox verify after a key replaced by hand (not through edge key rotate)
// says what happened and what to do, rather than just "corrupt"; with the
// old key in the history it verifies.
func TestVerifyKeyReplacedByHand(t *testing.T) {
	dir := t.TempDir()
	secret, err := intake.AddDevice(filepath.Join(dir, "devices.json"), "till-1", "")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(&bytes.Buffer{}, &bytes.Buffer{})
	if err := m.ParseFlags([]string{"--data-dir", dir, "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0", "--log-level", "error"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	<-m.Ready
	req, _ := http.NewRequest(http.MethodPost, "http://"+m.HTTPAddr()+"/v1/events",
		strings.NewReader(`{"id":"a1","type":"inventory.adjusted","ts":1795340000000,"body":{"store":"s1","sku":"x","qty_delta":1000,"reason":"received"}}`))
	req.SetBasicAuth("till-1", secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	old, _, _ := loadSigner(dir)
	if err := os.Rename(keyPath(dir), filepath.Join(t.TempDir(), "old.key")); err != nil {
		t.Fatal(err)
	}
	if _, created, err := loadSigner(dir); err != nil || !created {
		t.Fatalf("new key: %v", err)
	}
	var out, errb bytes.Buffer
	if code := Run([]string{"outbox", "verify", "--data-dir", dir}, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), "neither") || !strings.Contains(errb.String(), "edge-keys.json") {
		t.Fatalf("verify with the key replaced by hand: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if err := saveKeyHistory(dir, keyHistory{Retired: []retiredKey{{KID: old.KeyID(), PublicKey: hex.EncodeToString(old.Public())}}}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if code := Run([]string{"outbox", "verify", "--data-dir", dir}, &out, &errb); code != 0 || !strings.Contains(out.String(), "ok: chain and checkpoints verify") {
		t.Fatalf("verify with the old key in the history: exit %d\n%s%s", code, out.String(), errb.String())
	}
}
