package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestHealthzProvesOutboxCommit: /healthz answers ok only while the outbox
// commits (a probe write that adds no record: the head does not move) and
// the intake listens; an outbox that cannot commit makes it 503, naming
// the outbox. Before, /healthz said ok whatever the outbox did.
func TestHealthzProvesOutboxCommit(t *testing.T) {
	dir := t.TempDir()
	m, _, _ := startEdge(t, "--data-dir", dir, "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0", "--log-level", "warn")
	get := func() (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + m.StatusAddr() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for range 3 {
		if code, body := get(); code != http.StatusOK {
			t.Fatalf("healthz %d: %s", code, body)
		}
	}
	st := m.ob.State()
	if st.Head != 0 {
		t.Fatalf("the health probes added records: head %d", st.Head)
	}
	resp, err := http.Get("http://" + m.StatusAddr() + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var s Status
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if s.NextSeq != 1 {
		t.Fatalf("next seq %d after health probes, want 1", s.NextSeq)
	}

	m.ob.Close() // the outbox can no longer commit
	code, body := get()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "outbox") {
		t.Fatalf("healthz with a closed outbox: %d %s", code, body)
	}
}
