package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"

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
