package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/internal/tlstest"
)

// `cloud serve --mqtt-tls-cert --mqtt-tls-key --mqtt-client-ca` serves
// edges over TLS with client certificates required, and its own ingest
// still connects (so /readyz turns 200).
func TestServeMQTTTLS(t *testing.T) {
	pki := tlstest.New(t, "e1")
	var logs bytes.Buffer
	m := NewMain(&logs, &logs)
	if err := m.ParseFlags([]string{"--database-url", pgtest.New(t), "--migrate", "--data-dir", filepath.Join(t.TempDir(), "cloud"),
		"--http", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--log-level", "warn",
		"--mqtt-tls-cert", pki.ServerCert, "--mqtt-tls-key", pki.ServerKey, "--mqtt-client-ca", pki.CAFile}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Ready:
	case err := <-done:
		t.Fatalf("serve stopped: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve not ready within 30s")
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v", err)
		}
		_ = m.Close()
	}()
	poll.Until(t, 15*time.Second, "/readyz 200 (ingest connected to the TLS broker)", func() bool {
		resp, err := http.Get("http://" + m.APIAddr() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	// The edges' listener speaks TLS and wants a client certificate.
	cert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", m.BrokerAddr(),
		&tls.Config{RootCAs: pki.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS handshake with a client certificate: %v", err)
	}
	_ = c.Close()
}

func TestServeMQTTTLSUsage(t *testing.T) {
	pki := tlstest.New(t, "e1")
	cases := map[string]struct {
		args []string
		want string
	}{
		"client CA alone": {[]string{"--mqtt-client-ca", pki.CAFile}, "--mqtt-client-ca needs"},
		"cert, no key":    {[]string{"--mqtt-tls-cert", pki.ServerCert}, "--mqtt-tls-key"},
		"external broker": {[]string{"--mqtt", "tcp://broker:1883", "--mqtt-tls-cert", pki.ServerCert, "--mqtt-tls-key", pki.ServerKey}, "for the embedded broker"},
	}
	db := pgtest.New(t)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"serve", "--database-url", db, "--migrate", "--data-dir", filepath.Join(t.TempDir(), "cloud"),
				"--http", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"}, c.args...)
			if code := Run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.want) {
				t.Fatalf("exit %d, %q; want 2 and a message with %q", code, errb.String(), c.want)
			}
		})
	}
}
