package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// TestRunOffline drives `edge run` in-process with no uplink: a device's
// event is acknowledged (201) once durable and waits in the outbox; the
// status page shows it; a graceful stop leaves an outbox that verifies.
func TestRunOffline(t *testing.T) {
	dir := t.TempDir()
	secret, err := intake.AddDevice(filepath.Join(dir, "devices.json"), "till-1", "")
	if err != nil {
		t.Fatal(err)
	}
	m, logs, stop := startEdge(t, "--data-dir", dir, "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0", "--log-level", "warn")
	req, _ := http.NewRequest(http.MethodPost, "http://"+m.HTTPAddr()+"/v1/events",
		strings.NewReader(`{"id":"a1","type":"inventory.adjusted","ts":1795340000000,"body":{"store":"s1","sku":"x","qty_delta":1000,"reason":"received"}}`))
	req.SetBasicAuth("till-1", secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/events: %s", resp.Status)
	}
	resp, err = http.Get("http://" + m.StatusAddr() + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || st.Edge != "shop-1" || st.Backlog != 1 || st.NextSeq != 2 || st.Uplink != nil {
		t.Fatalf("status %+v (%v)", st, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v\n%s", err, logs.String())
	}
	var out, errb bytes.Buffer
	if code := Run([]string{"outbox", "verify", "--data-dir", dir}, &out, &errb); code != 0 || !strings.Contains(out.String(), "ok: chain and checkpoints verify") {
		t.Fatalf("outbox verify: exit %d\n%s%s", code, out.String(), errb.String())
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run([]string{"run", "--data-dir", t.TempDir()}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "edge enroll") {
		t.Fatalf("no edge id: exit %d, %q", code, errb.String())
	}
	if code := Run([]string{"devices"}, &out, &errb); code != 2 {
		t.Fatalf("devices without a subcommand: exit %d", code)
	}
}

// An edge pinned to a small-order cloud key would trim on receipts anyone
// can forge (the attack trimmed 3 acknowledged events with --cloud-key
// 00…00): it refuses to start, naming the flag.
func TestRunRefusesSmallOrderCloudKey(t *testing.T) {
	for _, k := range []string{strings.Repeat("00", 32), "01" + strings.Repeat("00", 31)} {
		var out, errb bytes.Buffer
		code := Run([]string{"run", "--data-dir", t.TempDir(), "--edge-id", "shop-1", "--cloud-mqtt", "tcp://127.0.0.1:1",
			"--cloud-key", k, "--mqtt-listen", "127.0.0.1:0", "--http-listen", "", "--status-listen", "127.0.0.1:0"}, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), "--cloud-key") || !strings.Contains(errb.String(), "small order") {
			t.Fatalf("--cloud-key %s: exit %d, %q; want 2 and a message naming the flag and the reason", k, code, errb.String())
		}
	}
}

// TestRunStartErrorStopsUplink: when start-up fails after the uplink has
// started (here the status address is taken), Run stops the uplink and
// waits for it before it returns, so that nothing uses the outbox Close
// then closes.
func TestRunStartErrorStopsUplink(t *testing.T) {
	dir := t.TempDir()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	var logs bytes.Buffer
	m := NewMain(&logs, &logs)
	if err := m.ParseFlags([]string{"--data-dir", dir, "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0",
		"--http-listen", "", "--status-listen", taken.Addr().String(), "--log-level", "error",
		"--cloud-mqtt", "tcp://" + taken.Addr().String(), "--cloud-key", hex.EncodeToString(protocoltest.Signer(t, "cloud").Public()),
		// A static password: a broker token would be made (and its counter
		// file written) by paho's connect, which can outlive Run.
		"--cloud-password", "x"}); err != nil {
		t.Fatal(err)
	}
	err = m.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--status-listen") {
		t.Fatalf("run: %v, want the --status-listen error", err)
	}
	if s := m.up.Stats().State; s != "stopped" {
		t.Fatalf("uplink state %q after Run returned, want stopped", s)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}
