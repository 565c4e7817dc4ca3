package tlsconf_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/tlsconf"
	"github.com/outpost-edge/outpost/internal/tlstest"
)

func TestNotAfter(t *testing.T) {
	pki := tlstest.New(t, "e1")
	b, err := os.ReadFile(pki.ServerCert)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	want, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	// A chain file: the leaf first, then the CA; a key before them is skipped.
	ca, _ := os.ReadFile(pki.CAFile)
	key, _ := os.ReadFile(pki.ServerKey)
	chain := filepath.Join(t.TempDir(), "chain.pem")
	if err := os.WriteFile(chain, append(append(append([]byte{}, key...), b...), ca...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{pki.ServerCert, chain} {
		got, err := tlsconf.NotAfter(f)
		if err != nil || !got.Equal(want.NotAfter) {
			t.Errorf("%s: %v, %v; want %v", f, got, err, want.NotAfter)
		}
	}
	for name, content := range map[string]string{"empty.pem": "", "key.pem": string(key), "junk.pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"} {
		f := filepath.Join(t.TempDir(), name)
		os.WriteFile(f, []byte(content), 0o600)
		if _, err := tlsconf.NotAfter(f); err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("%s: error %v, want one naming the file", name, err)
		}
	}
	if _, err := tlsconf.NotAfter(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("a missing file: no error")
	}
}
