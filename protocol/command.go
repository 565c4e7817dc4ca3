package protocol

import "strings"

// A command is the cloud telling one edge to do something (DESIGN.md
// topics: .../cmd), signed by the cloud key the edge pinned:
//
//	payload = {edge, seq, expires, kind, body, kid}   COSE_Sign1, EdDSA
//
// It is bound to the edge (another edge refuses it), carries the edge's
// next sequence number (the edge accepts only a number above the last it
// accepted, so a command works once and in order) and an expiry (Unix ms;
// a command delivered late is refused). Kind names what to do
// ("ota.assign", ...); Body is its arguments, opaque here.

// ContentTypeCommand is the COSE content type of a signed command.
const ContentTypeCommand = "application/vnd.outpost.command+cbor"

// MaxCommandBodyBytes bounds a command's body.
const MaxCommandBodyBytes = 4096

// Command is a signed cloud-to-edge command.
type Command struct {
	Edge    string `cbor:"edge" json:"edge"`
	Seq     uint64 `cbor:"seq" json:"seq"`
	Expires int64  `cbor:"expires" json:"expires"` // Unix ms
	Kind    string `cbor:"kind" json:"kind"`
	Body    []byte `cbor:"body,omitempty" json:"body,omitempty"`
	KID     KeyID  `cbor:"kid" json:"kid"`
}

// SignCommand fills c.KID and returns the signed command.
func (s *Signer) SignCommand(c Command) []byte {
	c.KID = s.kid
	return s.sign(ContentTypeCommand, marshal(&c))
}

// VerifyCommand checks a signed command against the cloud's keys and that
// it is well formed, and returns it. Whether it is for this edge, fresh
// and not replayed is the receiver's to check (edge/ota.CommandGate).
func VerifyCommand(msg []byte, keys Keys) (Command, error) {
	var c Command
	if len(msg) > MaxSignedBytes {
		return c, tooLarge("command", len(msg), MaxSignedBytes)
	}
	m, err := openSign1("command", msg)
	if err == nil {
		err = verifySigned("command", ContentTypeCommand, m, keys, &c)
	}
	if err != nil {
		return c, err
	}
	if err := ValidateName("edge", c.Edge); err != nil {
		return c, prefixField("command", err)
	}
	if c.Seq == 0 {
		return c, fieldf("command.seq", "is 0; sequence numbers start at 1")
	}
	if c.Expires <= 0 {
		return c, fieldf("command.expires", "is %d; want a Unix time in ms", c.Expires)
	}
	if c.Kind == "" || len(c.Kind) > 64 || strings.Trim(c.Kind, "abcdefghijklmnopqrstuvwxyz0123456789._-") != "" {
		return c, fieldf("command.kind", "%q is not 1 to 64 of a-z 0-9 . _ -", c.Kind)
	}
	if len(c.Body) > MaxCommandBodyBytes {
		return c, fieldf("command.body", "is %d bytes; the limit is %d", len(c.Body), MaxCommandBodyBytes)
	}
	return c, nil
}
