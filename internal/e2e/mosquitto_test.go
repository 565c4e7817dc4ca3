package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestMosquittoInterop runs edges and the cloud through a real Mosquitto
// broker (an independent MQTT implementation) instead of the embedded one:
// shared subscriptions, manual acks and QoS 1 must work there too. It
// restarts Mosquitto mid-stream. Skipped, with a note, when mosquitto is not
// installed.
func TestMosquittoInterop(t *testing.T) {
	path, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, e := os.Stat(p); e == nil {
				path, err = p, nil
			}
		}
	}
	if err != nil {
		t.Skip("mosquitto is not installed (apt-get install mosquitto): skipping the interop test against a real Mosquitto")
	}
	addr := freePort(t)
	_, port, _ := splitHostPort(addr)
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	// Mosquitto cannot check Outpost broker tokens, so this test broker
	// admits anyone; production deployments give each edge a password or
	// a client certificate and an ACL (deploy/mosquitto).
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n", port)), 0o644); err != nil {
		t.Fatal(err)
	}
	mq := &proc{t: t, name: path, args: []string{"-c", conf}, log: filepath.Join(dir, "mosquitto.log")}
	startMosquitto := func() {
		mq.start()
		waitFor(t, "mosquitto listening", 10*time.Second, func() bool { return dialOK(addr) }, mq)
	}
	startMosquitto()
	t.Cleanup(mq.kill)

	s := newSiteOn(t, addr)
	e1 := s.addEdge("e1", "till-1")
	o := newOracle()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var derr error
	wg.Add(1)
	go func() { defer wg.Done(); derr = mqttDevice(ctx, t, e1, "till-1", 300, o) }()
	waitFor(t, "100 acknowledged", 60*time.Second, func() bool { return o.ackedCount() >= 100 }, e1.proc, s.cloud)
	mq.kill()
	t.Logf("killed mosquitto after %d acks", o.ackedCount())
	startMosquitto()
	wg.Wait()
	if derr != nil {
		t.Fatal(derr)
	}
	s.drained(60 * time.Second)
	verifyLedger(t, ledgerRows(t, s.dbURL), o)
}
