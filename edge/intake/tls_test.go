package intake_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/edge/intake/intaketest"
)

// testPKI is a throwaway CA that issues server and device certificates.
type testPKI struct {
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	pool  *x509.CertPool
}

func newPKI(tb testing.TB) *testPKI {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "outpost test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{ca: ca, caKey: key, pool: pool}
}

func (p *testPKI) issue(tb testing.TB, cn string, server bool) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestClientCertificates(t *testing.T) {
	pki := newPKI(t)
	serverCfg := &tls.Config{
		Certificates: []tls.Certificate{pki.issue(t, "edge", true)},
		ClientCAs:    pki.pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS12,
	}
	f := newFake(t)
	h := intaketest.MustStart(t, f, func(s *intake.Server) {
		s.MQTTTLS = serverCfg
		s.HTTPTLS = serverCfg
	})
	clientCfg := func(cn string) *tls.Config {
		c := &tls.Config{RootCAs: pki.pool, MinVersion: tls.VersionTLS12}
		if cn != "" {
			c.Certificates = []tls.Certificate{pki.issue(t, cn, false)}
		}
		return c
	}
	connect := func(cn, user, pass string) error {
		o := paho.NewClientOptions().
			AddBroker("tls://" + h.MQTTAddr()).
			SetClientID("tls-" + cn + user).
			SetUsername(user).
			SetPassword(pass).
			SetTLSConfig(clientCfg(cn)).
			SetAutoReconnect(false).
			SetProtocolVersion(4)
		c := paho.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(waitLimit) {
			t.Fatal("connect timed out")
		}
		if tok.Error() != nil {
			return tok.Error()
		}
		defer c.Disconnect(0)
		tok = c.Publish(evTopic(firstNonEmpty(cn, user)), 1, false, eventJSON("tls-"+cn, "sale.note"))
		waitToken(t, tok)
		return nil
	}

	t.Run("mqtt", func(t *testing.T) {
		if err := connect("dev-1", "", ""); err != nil {
			t.Fatalf("certificate of a listed device: %v", err)
		}
		if err := connect("dev-2", "dev-2", ""); err != nil {
			t.Fatalf("certificate and matching user name: %v", err)
		}
		if err := connect("dev-9", "", ""); err == nil || !strings.Contains(err.Error(), "not Authorized") {
			t.Fatalf("certificate of an unlisted device: %v", err)
		}
		if err := connect("dev-1", "dev-2", h.Secret("dev-2")); err == nil || !strings.Contains(err.Error(), "not Authorized") {
			t.Fatalf("certificate of dev-1 with dev-2's credentials: %v", err)
		}
		if err := connect("", "dev-3", h.Secret("dev-3")); err != nil {
			t.Fatalf("TLS without a certificate, with a secret: %v", err)
		}
		recs := f.Records()
		if len(recs) != 3 || recs[0].Device != "dev-1" || recs[1].Device != "dev-2" || recs[2].Device != "dev-3" {
			t.Fatalf("records %+v", recs)
		}
	})

	t.Run("https", func(t *testing.T) {
		do := func(cn, user, pass string) int {
			cl := &http.Client{Transport: &http.Transport{TLSClientConfig: clientCfg(cn)}}
			defer cl.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodPost, "https://"+h.Server.HTTPAddrActual()+"/v1/events", bytes.NewReader(eventJSON("https-"+cn+user, "sale.note")))
			req.Header.Set("Content-Type", ctJSON)
			if user != "" {
				req.SetBasicAuth(user, pass)
			}
			res, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			return res.StatusCode
		}
		for _, c := range []struct {
			cn, user, pass string
			want           int
		}{
			{"dev-1", "", "", http.StatusCreated},
			{"dev-1", "dev-2", h.Secret("dev-2"), http.StatusForbidden},
			{"dev-9", "", "", http.StatusForbidden},
			{"", "dev-3", h.Secret("dev-3"), http.StatusCreated},
			{"", "", "", http.StatusUnauthorized},
		} {
			if got := do(c.cn, c.user, c.pass); got != c.want {
				t.Errorf("cert %q user %q: %d, want %d", c.cn, c.user, got, c.want)
			}
		}
	})
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
