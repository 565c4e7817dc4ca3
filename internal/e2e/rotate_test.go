package e2e_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKeyRotation rotates an edge's key the one documented way, `edge key
// rotate`, with a backlog signed by the old key still waiting: the backlog
// verifies offline under the key history, nothing is quarantined, uploads
// never stall (the documented order used to freeze them for 10 minutes),
// and after the old key is revoked the edge goes on with the new one.
func TestKeyRotation(t *testing.T) {
	s := newSite(t)
	e := s.addEdge("shop-r", "till-1")
	dir := filepath.Join(s.dir, "shop-r")
	o := newOracle()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := httpDevice(ctx, e, "till-1", 20, o, 0); err != nil {
		t.Fatal(err)
	}
	s.drained(30 * time.Second)
	oldKID := keyID(t, dir)

	// A backlog signed by the old key, then the edge stops.
	s.cloud.stop()
	if err := httpDevice(ctx, e, "till-1", 30, o, 20); err != nil {
		t.Fatal(err)
	}
	e.stop()
	s.startCloud()

	out := run(t, bin.edge, "key", "rotate", "--data-dir", dir, "--token", s.admin)
	newKID := keyID(t, dir)
	if newKID == oldKID || !strings.Contains(out, "now signs with key "+newKID) {
		t.Fatalf("rotate: key %s -> %s:\n%s", oldKID, newKID, out)
	}
	// The backlog was signed by the old key: verify uses the history.
	if v := run(t, bin.edge, "outbox", "verify", "--data-dir", dir); !strings.Contains(v, "ok: chain and checkpoints verify") {
		t.Fatalf("verify after the rotation: %s", v)
	}
	// A second rotation before the edge ever used the first new key: the
	// history keeps both, and the backlog still verifies.
	if again := run(t, bin.edge, "key", "rotate", "--data-dir", dir, "--token", s.admin); !strings.Contains(again, "now signs with key") {
		t.Fatalf("second rotate: %s", again)
	}
	if newKID = keyID(t, dir); newKID == oldKID {
		t.Fatal("the second rotation kept the old key")
	}
	if v := run(t, bin.edge, "outbox", "verify", "--data-dir", dir); !strings.Contains(v, "ok: chain and checkpoints verify") {
		t.Fatalf("verify after the second rotation: %s", v)
	}

	// The edge restarts with the new key: the old backlog and new records
	// both go up, well within the 10 minutes the old order stalled for.
	e.startEdge()
	if err := httpDevice(ctx, e, "till-1", 30, o, 50); err != nil {
		t.Fatal(err)
	}
	s.drained(45 * time.Second)
	if n := quarantined(t, s); n != 0 {
		t.Fatalf("%d segments quarantined during the rotation", n)
	}

	// Revoke the old key once the backlog is acknowledged; the edge goes on.
	run(t, bin.cloud, "edges", "revoke-key", "--id", "shop-r", "--kid", oldKID, "--database-url", s.dbURL, "--data-dir", filepath.Join(s.dir, "cloud"))
	if err := httpDevice(ctx, e, "till-1", 20, o, 80); err != nil {
		t.Fatal(err)
	}
	s.drained(45 * time.Second)
	if n := quarantined(t, s); n != 0 {
		t.Fatalf("%d segments quarantined after revoking the old key", n)
	}
	verifyLedger(t, ledgerRows(t, s.dbURL), o)
	e.stop()
	if v := run(t, bin.edge, "outbox", "verify", "--data-dir", dir); !strings.Contains(v, "ok") {
		t.Fatalf("verify at the end: %s", v)
	}
}

func keyID(t *testing.T, dir string) string {
	t.Helper()
	var k struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal([]byte(run(t, bin.edge, "key", "show", "--json", "--data-dir", dir)), &k); err != nil || k.KID == "" {
		t.Fatalf("key show: %v", err)
	}
	return k.KID
}

func quarantined(t *testing.T, s *site) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.api+"/v1/quarantine", nil)
	req.Header.Set("Authorization", "Bearer "+s.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var q struct {
		Entries []json.RawMessage `json:"entries"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&q); err != nil {
		t.Fatal(err)
	}
	return len(q.Entries)
}
