package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/poll"
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
	url, conn, stream := mustEdgeDB(t, 5)
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

	edge := mustMQTTEdge(t, m, stream)
	edge.publish(1, 5)

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
		hwm, _ := edge.receipted()
		return hwm == 5
	})
	poll.Until(t, 30*time.Second, "/readyz 200 once commits succeed", func() bool { c, _ := readyz(t, m); return c == 200 })
}
