package protocol

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"unicode/utf8"
)

// MaxIDLen is the longest edge id, device id or event id, in bytes.
const MaxIDLen = 64

// ValidateName checks an edge or device id. Such ids appear inside MQTT
// topics and NATS subjects, so they are limited to ASCII letters, digits,
// '-' and '_' (no separators such as '/', '.' or ':', and no wildcards),
// 1 to MaxIDLen bytes. what names the field in the error ("edge", "device").
func ValidateName(what, s string) error {
	if s == "" {
		return &FieldError{Field: what, Msg: "is empty; use 1 to 64 characters from [A-Za-z0-9_-]"}
	}
	if len(s) > MaxIDLen {
		return &FieldError{Field: what, Msg: fmt.Sprintf("is %d bytes; the limit is %d", len(s), MaxIDLen)}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			continue
		}
		return &FieldError{Field: what, Msg: fmt.Sprintf("%q has %q at byte %d; use only [A-Za-z0-9_-] (no separators or wildcards)", s, c, i)}
	}
	return nil
}

// ValidateEventID checks a device-chosen idempotency key: 1 to MaxIDLen bytes
// of UTF-8 without control characters.
func ValidateEventID(s string) error {
	if s == "" {
		return &FieldError{Field: "id", Msg: "is required: a device-chosen idempotency key of 1 to 64 bytes"}
	}
	if len(s) > MaxIDLen {
		return &FieldError{Field: "id", Msg: fmt.Sprintf("is %d bytes; the limit is %d", len(s), MaxIDLen)}
	}
	if !utf8.ValidString(s) {
		return &FieldError{Field: "id", Msg: "is not valid UTF-8"}
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return &FieldError{Field: "id", Msg: fmt.Sprintf("contains control character %U", r)}
		}
	}
	return nil
}

// Epoch identifies one life of an edge's outbox: a random 128-bit value made
// when the outbox is created. A wiped disk means a new epoch.
type Epoch [16]byte

// NewEpoch returns a random epoch read from r (crypto/rand when r is nil).
func NewEpoch(r io.Reader) (Epoch, error) {
	if r == nil {
		r = rand.Reader
	}
	var e Epoch
	if _, err := io.ReadFull(r, e[:]); err != nil {
		return Epoch{}, fmt.Errorf("new epoch: %w", err)
	}
	return e, nil
}

// String returns the epoch as 32 lower-case hex digits.
func (e Epoch) String() string { return hex.EncodeToString(e[:]) }

// IsZero reports whether e is the zero epoch (never a valid stream).
func (e Epoch) IsZero() bool { return e == Epoch{} }

// ParseEpoch parses 32 hex digits.
func ParseEpoch(s string) (Epoch, error) {
	var e Epoch
	if err := parseHexFixed(e[:], s); err != nil {
		return Epoch{}, &FieldError{Field: "epoch", Msg: err.Error()}
	}
	return e, nil
}

// MarshalText and UnmarshalText make an Epoch hex in JSON.
func (e Epoch) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

func (e *Epoch) UnmarshalText(b []byte) error {
	v, err := ParseEpoch(string(b))
	if err != nil {
		return err
	}
	*e = v
	return nil
}

// MarshalCBOR encodes an Epoch as a 16-byte byte string.
func (e Epoch) MarshalCBOR() ([]byte, error) { return encodeFixedBytes(e[:]), nil }

// UnmarshalCBOR refuses anything but a byte string of exactly 16 bytes.
func (e *Epoch) UnmarshalCBOR(b []byte) error { return decodeFixedBytes("epoch", e[:], b) }

// Hash is a SHA-256 digest: a record's hash, a chain head.
type Hash [32]byte

// HashBytes returns SHA-256 of b.
func HashBytes(b []byte) Hash { return sha256.Sum256(b) }

// String returns the hash as 64 lower-case hex digits.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is all zeros, the prev of a stream's first record.
func (h Hash) IsZero() bool { return h == Hash{} }

// ParseHash parses 64 hex digits.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if err := parseHexFixed(h[:], s); err != nil {
		return Hash{}, &FieldError{Field: "hash", Msg: err.Error()}
	}
	return h, nil
}

func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

func (h *Hash) UnmarshalText(b []byte) error {
	v, err := ParseHash(string(b))
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// MarshalCBOR encodes a Hash as a 32-byte byte string.
func (h Hash) MarshalCBOR() ([]byte, error) { return encodeFixedBytes(h[:]), nil }

// UnmarshalCBOR refuses anything but a byte string of exactly 32 bytes.
func (h *Hash) UnmarshalCBOR(b []byte) error { return decodeFixedBytes("hash", h[:], b) }

func parseHexFixed(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("want %d hex digits, got %d", 2*len(dst), len(s))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("not hex: %v", err)
	}
	return nil
}

// encodeFixedBytes encodes b (at most 255 bytes) as a CBOR byte string.
func encodeFixedBytes(b []byte) []byte {
	var out []byte
	switch {
	case len(b) < 24:
		out = append(make([]byte, 0, 1+len(b)), 0x40|byte(len(b)))
	default:
		out = append(make([]byte, 0, 2+len(b)), 0x58, byte(len(b)))
	}
	return append(out, b...)
}

func decodeFixedBytes(what string, dst []byte, data []byte) error {
	var b []byte
	if err := decMode.Unmarshal(data, &b); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if len(data) == 0 || data[0]>>5 != 2 {
		return &FieldError{Field: what, Msg: "must be a CBOR byte string"}
	}
	if len(b) != len(dst) {
		return &FieldError{Field: what, Msg: fmt.Sprintf("is %d bytes; want %d", len(b), len(dst))}
	}
	copy(dst, b)
	return nil
}
