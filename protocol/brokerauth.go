package protocol

import (
	"crypto/ed25519"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// An edge logs in to the cloud's MQTT broker with its edge id as user name
// and a broker token as password: a fresh Ed25519 signature by its
// registered key, so there is no extra shared secret to provision or leak.
//
//	token   = "v1." kid "." unix_ms "." base64url(signature)
//	message = "outpost-broker-auth/v1\x00" edge "\x00" unix_ms
//
// The broker accepts a token whose time is within BrokerTokenSkew of its own
// clock and whose signature verifies with one of the edge's active keys.

// BrokerTokenSkew is how far a broker token's time may be from the broker's.
const BrokerTokenSkew = 10 * time.Minute

func brokerAuthMessage(edge string, ms int64) []byte {
	return []byte("outpost-broker-auth/v1\x00" + edge + "\x00" + strconv.FormatInt(ms, 10))
}

// BrokerToken returns a broker password for edge, signed now.
func (s *Signer) BrokerToken(edge string, now time.Time) string {
	ms := now.UnixMilli()
	sig := ed25519.Sign(s.key, brokerAuthMessage(edge, ms))
	return "v1." + string(s.kid) + "." + strconv.FormatInt(ms, 10) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// VerifyBrokerToken checks a broker password presented by edge.
func VerifyBrokerToken(edge, token string, keys Keys, now time.Time) error {
	parts := strings.Split(token, ".")
	if len(parts) != 4 || parts[0] != "v1" {
		return badSig("broker token: want v1.<kid>.<unix ms>.<signature>")
	}
	ms, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return badSig("broker token: time %q is not Unix milliseconds", parts[2])
	}
	if d := now.Sub(time.UnixMilli(ms)); d > BrokerTokenSkew || d < -BrokerTokenSkew {
		return badSig("broker token: signed at %s, %s from the broker's clock (limit %s): check the edge's clock",
			time.UnixMilli(ms).UTC().Format(time.RFC3339), d.Round(time.Second), BrokerTokenSkew)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[3])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return badSig("broker token: signature is not %d bytes of base64url", ed25519.SignatureSize)
	}
	pub, err := keys.PublicKey(KeyID(parts[1]))
	if err != nil {
		return badSig("broker token: key %s: %v", parts[1], err)
	}
	if err := ValidatePublicKey(pub); err != nil {
		return badSig("broker token: key %s: %v", parts[1], err)
	}
	if !ed25519.Verify(pub, brokerAuthMessage(edge, ms), sig) {
		return badSig("broker token: signature by key %s does not verify for edge %q", parts[1], edge)
	}
	return nil
}
