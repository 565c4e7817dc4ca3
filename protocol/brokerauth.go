package protocol

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// An edge logs in to the cloud's brokers (MQTT and NATS) with its edge id as
// user name and a broker token as password: an Ed25519 signature by one of
// its registered keys, so there is no extra shared secret to provision or
// leak (docs/PROTOCOL.md, "Broker tokens").
//
//	token    = "v2." kid "." counter "." base64url(signature)
//	message  = "outpost-broker-auth/v2" 0x00 audience 0x00 edge 0x00 counter
//	audience = broker [":" cluster]      broker is "mqtt" or "nats"
//
// counter is a decimal uint64 that the edge makes strictly increasing
// (max(now in Unix ms, last used + 1), persisted before use), and the cloud
// accepts a token only if its counter is above the highest it has accepted
// for that edge (one atomic update in Postgres, so every replica agrees).
// A token therefore works once, on one kind of broker of one cloud, and no
// clock has to agree with any other: an edge whose clock is days off still
// logs in. Version 1 tokens (a timestamp checked against the broker's clock
// within ±10 minutes, and valid for every broker) are refused by
// ParseBrokerToken: they could be replayed for their whole window and
// across brokers. A cloud may still accept them while edges are upgraded
// (VerifyBrokerTokenV1).

// Brokers an audience names.
const (
	BrokerMQTT = "mqtt"
	BrokerNATS = "nats"
)

// MaxBrokerTokenBytes bounds a broker token; a longer password is refused
// before anything else is done with it.
const MaxBrokerTokenBytes = 256

// brokerTokenV2 is the version prefix of the tokens made and accepted.
const brokerTokenV2 = "v2"

// ErrBrokerTokenVersion: a broker token of a version this side does not
// accept (v1, or one from the future). It wraps ErrBadSignature.
var ErrBrokerTokenVersion = fmt.Errorf("broker token version not accepted: %w", ErrBadSignature)

// BrokerAudience is the audience of a token for broker ("mqtt" or "nats")
// of the cloud called cluster. The cloud uses its signing key's id as
// cluster and the edge the id of the cloud key it pinned, so a token made
// for one cloud's NATS server is refused by its MQTT broker and by every
// other cloud. An empty cluster gives the bare broker name.
func BrokerAudience(broker, cluster string) string {
	if cluster == "" {
		return broker
	}
	return broker + ":" + cluster
}

// BrokerToken is a parsed broker token.
type BrokerToken struct {
	KID       KeyID
	Counter   uint64
	Signature []byte
}

func brokerAuthMessage(audience, edge string, counter uint64) []byte {
	return []byte("outpost-broker-auth/v2\x00" + audience + "\x00" + edge + "\x00" + strconv.FormatUint(counter, 10))
}

// BrokerToken returns a broker password for edge on audience, with the
// given counter. The caller keeps counters strictly increasing per edge and
// never reuses one (edge/uplink.Tokens does).
func (s *Signer) BrokerToken(audience, edge string, counter uint64) string {
	sig := ed25519.Sign(s.key, brokerAuthMessage(audience, edge, counter))
	return brokerTokenV2 + "." + string(s.kid) + "." + strconv.FormatUint(counter, 10) + "." +
		base64.RawURLEncoding.EncodeToString(sig)
}

// ParseBrokerToken parses a broker token without verifying it: cheap
// checks that come before any lookup. Errors wrap ErrBadSignature
// (ErrBrokerTokenVersion for another version) and say what is wrong.
func ParseBrokerToken(token string) (BrokerToken, error) {
	if len(token) > MaxBrokerTokenBytes {
		return BrokerToken{}, badSig("broker token: %d bytes, limit %d", len(token), MaxBrokerTokenBytes)
	}
	parts := strings.Split(token, ".")
	if v := parts[0]; v != brokerTokenV2 && len(v) >= 2 && v[0] == 'v' && strings.Trim(v[1:], "0123456789") == "" {
		return BrokerToken{}, fmt.Errorf("broker token %s: this cloud accepts only v2 (v1 tokens can be replayed and work on every broker): upgrade the edge: %w",
			strconv.Quote(parts[0]), ErrBrokerTokenVersion)
	}
	if len(parts) != 4 || parts[0] != brokerTokenV2 {
		return BrokerToken{}, badSig("broker token: want v2.<kid>.<counter>.<signature>")
	}
	if err := ValidateName("key id", parts[1]); err != nil {
		return BrokerToken{}, badSig("broker token: %v", err)
	}
	// ParseUint accepts no sign; refuse leading zeros too, so that one
	// counter has one spelling.
	c, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil || (len(parts[2]) > 1 && parts[2][0] == '0') {
		return BrokerToken{}, badSig("broker token: counter %q is not a decimal number below 2^64", parts[2])
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(parts[3])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return BrokerToken{}, badSig("broker token: signature is not %d bytes of unpadded base64url", ed25519.SignatureSize)
	}
	return BrokerToken{KID: KeyID(parts[1]), Counter: c, Signature: sig}, nil
}

// Verify checks that t was signed for edge on audience by the key t names
// in keys. It does not check the counter against the ones seen before:
// that is the cloud's replay store (cloud/edgeauth). Errors wrap
// ErrBadSignature, and also the error keys returned for the key id (an
// unknown or revoked key).
func (t BrokerToken) Verify(audience, edge string, keys Keys) error {
	pub, err := keys.PublicKey(t.KID)
	if err != nil {
		return fmt.Errorf("broker token: key %s: %w: %w", t.KID, err, ErrBadSignature)
	}
	if err := ValidatePublicKey(pub); err != nil {
		return badSig("broker token: key %s: %v", t.KID, err)
	}
	if !ed25519.Verify(pub, brokerAuthMessage(audience, edge, t.Counter), t.Signature) {
		return badSig("broker token: signature by key %s does not verify for edge %q on %q (a token for another edge, broker or cloud?)",
			t.KID, edge, audience)
	}
	return nil
}

// VerifyBrokerToken parses and verifies a broker token presented by edge
// on audience, and returns it (for its counter and key id).
func VerifyBrokerToken(audience, edge, token string, keys Keys) (BrokerToken, error) {
	t, err := ParseBrokerToken(token)
	if err != nil {
		return BrokerToken{}, err
	}
	if err := t.Verify(audience, edge, keys); err != nil {
		return BrokerToken{}, err
	}
	return t, nil
}

// BrokerTokenV1Skew is how far a v1 token's time may be from the cloud's
// clock, when v1 is accepted at all (VerifyBrokerTokenV1).
const BrokerTokenV1Skew = 10 * time.Minute

// VerifyBrokerTokenV1 checks a version 1 token, which older edges send:
//
//	token   = "v1." kid "." unix_ms "." base64url(signature)
//	message = "outpost-broker-auth/v1" 0x00 edge 0x00 unix_ms
//
// accepted within BrokerTokenV1Skew of now. It is for a cloud that accepts
// them while its edges are upgraded (cloud serve --broker-tokens-v1): the
// returned token's Counter is unix_ms, which the cloud spends like a v2
// counter, so a v1 token too works once; but it is valid on either broker,
// and needs the edge's clock. Errors wrap ErrBadSignature.
func VerifyBrokerTokenV1(edge, token string, keys Keys, now time.Time) (BrokerToken, error) {
	if len(token) > MaxBrokerTokenBytes {
		return BrokerToken{}, badSig("broker token: %d bytes, limit %d", len(token), MaxBrokerTokenBytes)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 4 || parts[0] != "v1" {
		return BrokerToken{}, badSig("broker token v1: want v1.<kid>.<unix ms>.<signature>")
	}
	ms, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || ms <= 0 {
		return BrokerToken{}, badSig("broker token v1: time %q is not Unix milliseconds", parts[2])
	}
	if d := now.Sub(time.UnixMilli(ms)); d > BrokerTokenV1Skew || d < -BrokerTokenV1Skew {
		return BrokerToken{}, badSig("broker token v1: signed at %s, %s from the cloud's clock (limit %s): check the edge's clock, or upgrade the edge to v2 tokens, which need none",
			time.UnixMilli(ms).UTC().Format(time.RFC3339), d.Round(time.Second), BrokerTokenV1Skew)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[3])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return BrokerToken{}, badSig("broker token v1: signature is not %d bytes of base64url", ed25519.SignatureSize)
	}
	t := BrokerToken{KID: KeyID(parts[1]), Counter: uint64(ms), Signature: sig}
	pub, err := keys.PublicKey(t.KID)
	if err != nil {
		return BrokerToken{}, fmt.Errorf("broker token: key %s: %w: %w", t.KID, err, ErrBadSignature)
	}
	if err := ValidatePublicKey(pub); err != nil {
		return BrokerToken{}, badSig("broker token: key %s: %v", t.KID, err)
	}
	msg := []byte("outpost-broker-auth/v1\x00" + edge + "\x00" + strconv.FormatInt(ms, 10))
	if !ed25519.Verify(pub, msg, sig) {
		return BrokerToken{}, badSig("broker token v1: signature by key %s does not verify for edge %q", t.KID, edge)
	}
	return t, nil
}
