package tlsconf

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"
)

// NotAfter returns when the first certificate in certFile (the leaf, in a
// chain file) expires, for the certificate-expiry metrics: the programs
// load their certificates once at start-up, so the metric is read then too
// and says what is being served, not what was put on disk since.
func NotAfter(certFile string) (time.Time, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return time.Time{}, fmt.Errorf("read the certificate %s: %w", certFile, err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return time.Time{}, fmt.Errorf("certificate %s: no PEM CERTIFICATE block in it", certFile)
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return time.Time{}, fmt.Errorf("certificate %s: %w", certFile, err)
		}
		return c.NotAfter, nil
	}
}
