package protocol

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrTooLarge: an input is over a size limit. The error text names the
	// limit and the size seen.
	ErrTooLarge = errors.New("too large")

	// ErrMalformed: bytes that are not a well-formed message of the kind
	// expected (bad CBOR or JSON, a missing or unknown field, a limit on
	// nesting or count exceeded).
	ErrMalformed = errors.New("malformed")

	// ErrBadSignature: a COSE_Sign1 message whose signature does not verify,
	// whose key id is unknown, or whose algorithm or content type is wrong.
	ErrBadSignature = errors.New("bad signature")

	// ErrBadKey: bytes that are not a trustworthy Ed25519 public key (wrong
	// length, not on the curve, not canonically encoded, or of small order).
	ErrBadKey = errors.New("bad public key")
)

// FieldError says which field of a message broke which rule. It wraps
// ErrMalformed so that callers can tell bad input from other failures.
type FieldError struct {
	Field string // dotted path, such as "body.lines[2].amount"
	Msg   string // the rule broken, with the values seen
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap makes errors.Is(err, ErrMalformed) true.
func (e *FieldError) Unwrap() error { return ErrMalformed }

// fieldf returns a FieldError with a formatted message.
func fieldf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// prefixField returns err with its field path placed under prefix. Errors
// that are not FieldErrors are wrapped with the prefix as context.
func prefixField(prefix string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		f := fe.Field
		switch {
		case f == "":
			f = prefix
		case f[0] == '[':
			f = prefix + f
		default:
			f = prefix + "." + f
		}
		return &FieldError{Field: f, Msg: fe.Msg}
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

func tooLarge(what string, n, limit int) error {
	return fmt.Errorf("%s is %d bytes; the limit is %d: %w", what, n, limit, ErrTooLarge)
}
