package mqtt_test

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	broker "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	"github.com/outpost-edge/outpost/internal/tlstest"
	"github.com/outpost-edge/outpost/protocol"
)

func startTLSBroker(t *testing.T, conf *tls.Config) *broker.Broker {
	t.Helper()
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", TLS: conf, Keys: func(_ context.Context, edge string) (protocol.Keys, error) {
		if edge == "e1" {
			return protocol.NewKeyMap(signer("e1").Public()), nil
		}
		return nil, errors.New("unknown edge")
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// dialTLS logs in as e1 at url with conf (nil: plain TCP).
func dialTLS(t *testing.T, url string, conf *tls.Config, user, pass string) error {
	t.Helper()
	if user == "" {
		user, pass = "e1", token(signer("e1"), "e1")
	}
	o := paho.NewClientOptions().AddBroker(url).SetClientID("outpost-edge-e1").SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	if conf != nil {
		o.SetTLSConfig(conf)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return errors.New("connect timed out")
	}
	if tok.Error() != nil {
		return tok.Error()
	}
	c.Disconnect(0)
	return nil
}

func TestTLSListener(t *testing.T) {
	pki := tlstest.New(t, "e1")
	clientCert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := &tls.Config{RootCAs: pki.Pool(), MinVersion: tls.VersionTLS12}
	withCert := &tls.Config{RootCAs: pki.Pool(), Certificates: []tls.Certificate{clientCert}, MinVersion: tls.VersionTLS12}
	other := tlstest.New(t, "e1") // a certificate from a CA the broker does not trust
	strangerCert, err := tls.LoadX509KeyPair(other.ClientCert, other.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	stranger := &tls.Config{RootCAs: pki.Pool(), Certificates: []tls.Certificate{strangerCert}, MinVersion: tls.VersionTLS12}

	t.Run("server certificate only", func(t *testing.T) {
		conf, err := broker.ServerTLS(pki.ServerCert, pki.ServerKey, "")
		if err != nil {
			t.Fatal(err)
		}
		b := startTLSBroker(t, conf)
		if err := dialTLS(t, "ssl://"+b.Addr(), roots, "", ""); err != nil {
			t.Fatalf("a TLS login was refused: %v", err)
		}
		if err := dialTLS(t, "tcp://"+b.Addr(), nil, "", ""); err == nil {
			t.Fatal("a plaintext login on the TLS listener was accepted")
		}
		if err := dialTLS(t, "ssl://"+b.Addr(), roots, "e1", "hunter2"); err == nil {
			t.Fatal("TLS with a bad broker token was accepted")
		}
	})
	t.Run("client certificates required", func(t *testing.T) {
		conf, err := broker.ServerTLS(pki.ServerCert, pki.ServerKey, pki.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		b := startTLSBroker(t, conf)
		if err := dialTLS(t, "ssl://"+b.Addr(), withCert, "", ""); err != nil {
			t.Fatalf("a login with a client certificate was refused: %v", err)
		}
		if err := dialTLS(t, "ssl://"+b.Addr(), roots, "", ""); err == nil {
			t.Fatal("a login without a client certificate was accepted")
		}
		if err := dialTLS(t, "ssl://"+b.Addr(), stranger, "", ""); err == nil {
			t.Fatal("a client certificate from an unknown CA was accepted")
		}
		// The cloud's own clients use the plain loopback listener.
		if b.InternalAddr() == b.Addr() {
			t.Fatalf("InternalAddr %s is the TLS listener", b.InternalAddr())
		}
		if err := dialTLS(t, "tcp://"+b.InternalAddr(), nil, broker.InternalUser, b.InternalPassword()); err != nil {
			t.Fatalf("the internal user could not log in on %s: %v", b.InternalAddr(), err)
		}
	})
}

func TestServerTLSErrors(t *testing.T) {
	pki := tlstest.New(t, "e1")
	cases := map[string][3]string{
		"no key":            {pki.ServerCert, "", ""},
		"missing cert file": {"/nonexistent.pem", pki.ServerKey, ""},
		"client CA missing": {pki.ServerCert, pki.ServerKey, "/nonexistent.pem"},
		"client CA not PEM": {pki.ServerCert, pki.ServerKey, pki.ServerKey + "x"},
		"key as client CA":  {pki.ServerCert, pki.ServerKey, pki.ServerKey},
	}
	for name, c := range cases {
		if _, err := broker.ServerTLS(c[0], c[1], c[2]); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
