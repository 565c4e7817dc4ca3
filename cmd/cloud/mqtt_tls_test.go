package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	brokermqtt "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/internal/tlstest"
	"github.com/outpost-edge/outpost/protocol"
)

// `cloud serve --mqtt-tls-cert --mqtt-tls-key --mqtt-client-ca` serves
// edges over TLS with client certificates required, and its own ingest
// still connects (so /readyz turns 200).
func TestServeMQTTTLS(t *testing.T) {
	pki := tlstest.New(t, "e1")
	m := serveUntilReady(t, "/readyz 200 (ingest connected to the TLS broker)",
		"--database-url", pgtest.New(t), "--migrate", "--log-level", "warn",
		"--mqtt-tls-cert", pki.ServerCert, "--mqtt-tls-key", pki.ServerKey, "--mqtt-client-ca", pki.CAFile)
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

// `cloud serve --mqtt ssl://… --mqtt-ca --mqtt-cert --mqtt-key`: ingest on
// an external broker that speaks TLS and requires client certificates
// (here a second cloud's embedded broker, logged into as its internal user).
func TestServeExternalMQTTTLS(t *testing.T) {
	pki := tlstest.New(t, "ingest")
	conf, err := brokermqtt.ServerTLS(pki.ServerCert, pki.ServerKey, pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := brokermqtt.Start(brokermqtt.Options{Addr: "127.0.0.1:0", TLS: conf,
		Keys: func(context.Context, string) (protocol.Keys, error) { return nil, errors.New("no edges here") }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ext.Close() })
	serveUntilReady(t, "/readyz 200 (ingest subscribed on the external TLS broker)",
		"--database-url", pgtest.New(t), "--migrate", "--log-level", "warn",
		"--mqtt", "ssl://"+ext.Addr(), "--mqtt-user", brokermqtt.InternalUser, "--mqtt-password", ext.InternalPassword(),
		"--mqtt-ca", pki.CAFile, "--mqtt-cert", pki.ClientCert, "--mqtt-key", pki.ClientKey)
}

func TestServeMQTTTLSUsage(t *testing.T) {
	pki := tlstest.New(t, "e1")
	cases := map[string]struct {
		args []string
		want string
	}{
		"client CA alone":             {[]string{"--mqtt-client-ca", pki.CAFile}, "--mqtt-client-ca needs"},
		"cert, no key":                {[]string{"--mqtt-tls-cert", pki.ServerCert}, "--mqtt-tls-key"},
		"external broker":             {[]string{"--mqtt", "tcp://broker:1883", "--mqtt-tls-cert", pki.ServerCert, "--mqtt-tls-key", pki.ServerKey}, "for the embedded broker"},
		"client TLS, embedded broker": {[]string{"--mqtt-ca", pki.CAFile}, "are for an external broker"},
		"client cert, no key":         {[]string{"--mqtt", "ssl://broker:8883", "--mqtt-cert", pki.ClientCert}, "--mqtt-ca, --mqtt-cert, --mqtt-key"},
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

// serveUntilReady runs `cloud serve` with args (startServe) until its
// /readyz answers 200, and stops it when the test ends, checking that it
// stopped cleanly.
func serveUntilReady(t *testing.T, what string, args ...string) *Main {
	t.Helper()
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	m, done := startServe(t, ctx, logs, args...)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v\n%s", err, logs.String())
		}
	})
	poll.Until(t, 15*time.Second, what, func() bool {
		code, _ := readyz(t, m)
		return code == http.StatusOK
	})
	return m
}
