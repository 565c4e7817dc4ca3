package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"filippo.io/edwards25519"
)

// ValidatePublicKey checks that pub is an Ed25519 public key a signature can
// be trusted under: 32 bytes, the canonical encoding of a point on the
// curve, and not of small order. A small-order key (such as 01 00…00, the
// identity) lets anyone make signatures that verify without a private key,
// so such a key is refused wherever a key enters: the API, the CLIs, key
// files, and every verification. The error wraps ErrBadKey.
func ValidatePublicKey(pub []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("Ed25519 public key is %d bytes, want %d: %w", len(pub), ed25519.PublicKeySize, ErrBadKey)
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return fmt.Errorf("Ed25519 public key %x is not a point on the curve: %w", pub, ErrBadKey)
	}
	// SetBytes accepts non-canonical encodings (y ≥ p, or x = 0 with the
	// sign bit set); a key has exactly one encoding.
	if !bytes.Equal(p.Bytes(), pub) {
		return fmt.Errorf("Ed25519 public key %x is not canonically encoded: %w", pub, ErrBadKey)
	}
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return fmt.Errorf("Ed25519 public key %x is of small order (signatures under it can be forged): %w", pub, ErrBadKey)
	}
	return nil
}

// ParsePublicKey reads an Ed25519 public key written as 64 hex digits or as
// base64 (standard or URL alphabet, padded or not) of its 32 bytes, and
// validates it (ValidatePublicKey). Errors wrap ErrBadKey.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	if s == "" {
		return nil, fmt.Errorf("no key given; want the 32-byte Ed25519 public key as 64 hex digits or base64: %w", ErrBadKey)
	}
	var b []byte
	if len(s) == 2*ed25519.PublicKeySize {
		if d, err := hex.DecodeString(s); err == nil {
			b = d
		}
	}
	if b == nil {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
			if d, err := enc.DecodeString(s); err == nil && len(d) == ed25519.PublicKeySize {
				b = d
				break
			}
		}
	}
	if b == nil {
		return nil, fmt.Errorf("%q is not a 32-byte Ed25519 public key as 64 hex digits or base64 (44 characters): %w", s, ErrBadKey)
	}
	if err := ValidatePublicKey(b); err != nil {
		return nil, err
	}
	return ed25519.PublicKey(b), nil
}
