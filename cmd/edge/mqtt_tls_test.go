package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/tlstest"
)

// A mistake in the MQTT uplink's TLS flags stops `edge run` with a usage
// error naming the flags.
func TestRunCloudMQTTTLSUsage(t *testing.T) {
	pki := tlstest.New(t, "shop-1")
	seed := sha256.Sum256([]byte("cloud"))
	cloudKey := hex.EncodeToString(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey))
	cases := map[string][]string{
		"cert without key": {"--cloud-mqtt-cert", pki.ClientCert},
		"missing CA file":  {"--cloud-mqtt-ca", "/nonexistent/ca.pem"},
		"CA not PEM":       {"--cloud-mqtt-ca", pki.ClientKey},
	}
	for name, flags := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"run", "--data-dir", t.TempDir(), "--edge-id", "shop-1", "--cloud-key", cloudKey,
				"--cloud-mqtt", "ssl://127.0.0.1:1", "--mqtt-listen", "127.0.0.1:0", "--http-listen", "", "--status-listen", "127.0.0.1:0"}, flags...)
			if code := Run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--cloud-mqtt-ca, --cloud-mqtt-cert and --cloud-mqtt-key") {
				t.Fatalf("exit %d, %q; want 2 and the flags named", code, errb.String())
			}
		})
	}
}
