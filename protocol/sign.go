package protocol

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/veraison/go-cose"
)

// KeyID names a signing key: the first 8 bytes of SHA-256 of the Ed25519
// public key, as 16 lower-case hex digits. It travels in the COSE kid header
// (as those 16 ASCII bytes) and in every signed payload, so keys can be
// rotated and an old signature still names the key that made it.
type KeyID string

// KeyIDOf derives the key id of a public key.
func KeyIDOf(pub ed25519.PublicKey) KeyID {
	s := sha256.Sum256(pub)
	return KeyID(hex.EncodeToString(s[:8]))
}

// Content types of the signed messages, in the COSE protected header. They
// keep one kind of message from being taken for another.
const (
	ContentTypeCheckpoint = "application/vnd.outpost.checkpoint+cbor"
	ContentTypeReceipt    = "application/vnd.outpost.receipt+cbor"
	ContentTypeNack       = "application/vnd.outpost.nack+cbor"
)

// Signer signs protocol messages with an Ed25519 key.
type Signer struct {
	kid  KeyID
	key  ed25519.PrivateKey
	cose cose.Signer
}

// NewSigner returns a signer for key, whose key id is derived from its
// public half.
func NewSigner(key ed25519.PrivateKey) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signer: Ed25519 private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	cs, err := cose.NewSigner(cose.AlgorithmEdDSA, key)
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	return &Signer{kid: KeyIDOf(key.Public().(ed25519.PublicKey)), key: key, cose: cs}, nil
}

// KeyID returns the id of the signer's key.
func (s *Signer) KeyID() KeyID { return s.kid }

// Public returns the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// sign returns a tagged COSE_Sign1 message over payload, with alg EdDSA,
// the content type and the key id in the protected header.
func (s *Signer) sign(contentType string, payload []byte) []byte {
	hdr := cose.Headers{Protected: cose.ProtectedHeader{
		cose.HeaderLabelAlgorithm:   cose.AlgorithmEdDSA,
		cose.HeaderLabelContentType: contentType,
		cose.HeaderLabelKeyID:       []byte(s.kid),
	}}
	// Ed25519 needs no randomness; its signatures are deterministic, which
	// is what makes the test vectors fixed.
	b, err := cose.Sign1(nil, s.cose, hdr, payload, nil)
	if err != nil {
		panic(fmt.Sprintf("protocol: sign: %v", err))
	}
	return b
}

// Keys finds the public key for a key id. It returns an error (wrapped in
// ErrBadSignature by the verifier) for an unknown or revoked key.
type Keys interface {
	PublicKey(kid KeyID) (ed25519.PublicKey, error)
}

// KeyMap is a fixed set of keys by id.
type KeyMap map[KeyID]ed25519.PublicKey

// NewKeyMap returns a KeyMap holding pubs under their derived ids.
func NewKeyMap(pubs ...ed25519.PublicKey) KeyMap {
	m := KeyMap{}
	for _, p := range pubs {
		m[KeyIDOf(p)] = p
	}
	return m
}

func (m KeyMap) PublicKey(kid KeyID) (ed25519.PublicKey, error) {
	if p, ok := m[kid]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("unknown key id %q", kid)
}

func badSig(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrBadSignature)
}

// openSign1 checks a message's size and well-formedness against the
// package's limits (go-cose's own decoder has none) and parses it.
func openSign1(what string, msg []byte) (*cose.Sign1Message, error) {
	if len(msg) > MaxSignedBytes {
		return nil, tooLarge(what, len(msg), MaxSignedBytes)
	}
	if err := coseMode.Wellformed(msg); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", what, err, ErrMalformed)
	}
	var m cose.Sign1Message
	if err := m.UnmarshalCBOR(msg); err != nil {
		return nil, fmt.Errorf("%s: not a COSE_Sign1 message: %v: %w", what, err, ErrMalformed)
	}
	return &m, nil
}

// signedPayload is a payload type of a signed message: it names the key
// that signed it, which must be the key in the protected header.
type signedPayload interface {
	Checkpoint | Receipt | Nack | ProofStatement | Command
}

// verifySigned checks a parsed COSE_Sign1 message and decodes its payload
// into v. It refuses any algorithm but EdDSA, a content type other than
// wantCT, a key id outside the protected header or unknown to keys, a bad
// signature, and a payload whose kid differs from the header's.
func verifySigned[T signedPayload](what, wantCT string, m *cose.Sign1Message, keys Keys, v *T) error {
	alg, err := m.Headers.Protected.Algorithm()
	if err != nil {
		return badSig("%s: no algorithm in the protected header: %v", what, err)
	}
	if alg != cose.AlgorithmEdDSA {
		return badSig("%s: algorithm %v; only EdDSA (-8) is accepted", what, alg)
	}
	if ct, _ := m.Headers.Protected[cose.HeaderLabelContentType].(string); ct != wantCT {
		return badSig("%s: content type %q, want %q", what, ct, wantCT)
	}
	if _, ok := m.Headers.Unprotected[cose.HeaderLabelKeyID]; ok {
		return badSig("%s: key id must be in the protected header only", what)
	}
	kidb, ok := m.Headers.Protected[cose.HeaderLabelKeyID].([]byte)
	if !ok || len(kidb) == 0 {
		return badSig("%s: no key id in the protected header", what)
	}
	kid := KeyID(kidb)
	pub, err := keys.PublicKey(kid)
	if err != nil {
		// Both wrapped: callers tell "revoked" from "unknown" by the cause.
		return fmt.Errorf("%s: key %s: %w: %w", what, kid, err, ErrBadSignature)
	}
	// Strict: a key that is not a canonical point of large order would let
	// anyone forge signatures, whatever Keys returned it.
	if err := ValidatePublicKey(pub); err != nil {
		return badSig("%s: key %s: %v", what, kid, err)
	}
	ver, err := cose.NewVerifier(cose.AlgorithmEdDSA, pub)
	if err != nil {
		return badSig("%s: key %s: %v", what, kid, err)
	}
	if err := m.Verify(nil, ver); err != nil {
		return badSig("%s: signature by key %s does not verify: %v", what, kid, err)
	}
	if err := unmarshal(what+" payload", m.Payload, v); err != nil {
		return err
	}
	var payloadKID KeyID
	switch p := any(v).(type) {
	case *Checkpoint:
		payloadKID = p.KID
	case *Receipt:
		payloadKID = p.KID
	case *Nack:
		payloadKID = p.KID
	case *ProofStatement:
		payloadKID = p.KID
	case *Command:
		payloadKID = p.KID
	}
	if payloadKID != kid {
		return badSig("%s: payload kid %q differs from header kid %q", what, payloadKID, kid)
	}
	return nil
}

// Checkpoint is the edge's signed statement of its stream's head. The edge
// signs one in every durable group commit, so every stored record is covered
// by a signature at rest; a segment ends on one.
type Checkpoint struct {
	Edge     string  `cbor:"edge" json:"edge"`
	Epoch    Epoch   `cbor:"epoch" json:"epoch"`
	Seq      uint64  `cbor:"seq" json:"seq"`
	Head     Hash    `cbor:"head" json:"head"`
	EdgeTime HLCTime `cbor:"edge_time" json:"edge_time"`
	KID      KeyID   `cbor:"kid" json:"kid"`
}

// Stream returns the checkpoint's stream.
func (c *Checkpoint) Stream() Stream { return Stream{Edge: c.Edge, Epoch: c.Epoch} }

// SignCheckpoint fills c.KID and returns the signed checkpoint.
func (s *Signer) SignCheckpoint(c Checkpoint) []byte {
	c.KID = s.kid
	return s.sign(ContentTypeCheckpoint, marshal(&c))
}

// VerifyCheckpoint checks a signed checkpoint against keys and returns it.
func VerifyCheckpoint(msg []byte, keys Keys) (Checkpoint, error) {
	var c Checkpoint
	m, err := openSign1("checkpoint", msg)
	if err == nil {
		err = verifySigned("checkpoint", ContentTypeCheckpoint, m, keys, &c)
	}
	if err != nil {
		return c, err
	}
	if err := ValidateName("edge", c.Edge); err != nil {
		return c, prefixField("checkpoint", err)
	}
	if c.Seq == 0 {
		return c, fieldf("checkpoint.seq", "is 0")
	}
	return c, nil
}

// Receipt is the cloud's signed statement that a stream is committed up to
// HWM, whose record hash is Head. Only a verified receipt lets the edge trim.
type Receipt struct {
	Edge        string `cbor:"edge" json:"edge"`
	Epoch       Epoch  `cbor:"epoch" json:"epoch"`
	HWM         uint64 `cbor:"hwm" json:"hwm"`
	Head        Hash   `cbor:"head" json:"head"`
	CommittedAt int64  `cbor:"committed_at" json:"committed_at"` // Unix ms
	KID         KeyID  `cbor:"kid" json:"kid"`
}

// Stream returns the receipt's stream.
func (r *Receipt) Stream() Stream { return Stream{Edge: r.Edge, Epoch: r.Epoch} }

// SignReceipt fills r.KID and returns the signed receipt.
func (s *Signer) SignReceipt(r Receipt) []byte {
	r.KID = s.kid
	return s.sign(ContentTypeReceipt, marshal(&r))
}

// NackCode says why the cloud refused a segment. In every case the edge
// resends from HWM+1 (after a backoff for the codes that are not gaps).
type NackCode uint8

const (
	NackGap         NackCode = 1 // records after HWM+1 arrived before HWM+1
	NackChain       NackCode = 2 // the chain does not continue from the stored head
	NackSignature   NackCode = 3 // the checkpoint does not verify
	NackUnknown     NackCode = 4 // the edge or key is not registered
	NackRevoked     NackCode = 5 // the edge or key is revoked
	NackMalformed   NackCode = 6 // the segment does not decode
	NackUnavailable NackCode = 7 // the cloud cannot commit now; retry later
)

var nackNames = map[NackCode]string{
	NackGap: "gap", NackChain: "chain", NackSignature: "signature", NackUnknown: "unknown",
	NackRevoked: "revoked", NackMalformed: "malformed", NackUnavailable: "unavailable",
}

func (c NackCode) String() string {
	if s, ok := nackNames[c]; ok {
		return s
	}
	return fmt.Sprintf("nack(%d)", uint8(c))
}

// NackVersion is the version of the nack payload this package signs.
// Version 2 binds a nack to the segment it refuses: its range, the key id
// of its checkpoint and the hash of its bytes as published. Version 1 (no
// "v" key) named only the stream, so a replayed nack, a nack about a forged
// segment on the edge's topic or about another key could stall an edge;
// the uplink counts and ignores nacks of any other version.
const NackVersion = 2

// Nack is the cloud's signed refusal of one segment. It carries the cloud's
// watermark, from which the edge resends, and (version 2) the segment it
// refuses, so that the edge acts only on nacks about segments it sent.
type Nack struct {
	V      uint64   `cbor:"v,omitempty" json:"v,omitempty"` // NackVersion; absent in version 1
	Edge   string   `cbor:"edge" json:"edge"`
	Epoch  Epoch    `cbor:"epoch" json:"epoch"`
	HWM    uint64   `cbor:"hwm" json:"hwm"`
	Head   Hash     `cbor:"head" json:"head"`
	Code   NackCode `cbor:"code" json:"code"`
	Reason string   `cbor:"reason" json:"reason"`
	At     int64    `cbor:"at" json:"at"` // Unix ms, the cloud's clock
	KID    KeyID    `cbor:"kid" json:"kid"`
	// The refused segment (version 2): first and last as the segment said
	// (0 when it did not decode), the kid in its checkpoint's protected
	// header ("" when there was none to read), and SHA-256 of its bytes as
	// the broker delivered them.
	First   uint64 `cbor:"first,omitempty" json:"first,omitempty"`
	Last    uint64 `cbor:"last,omitempty" json:"last,omitempty"`
	SegKID  KeyID  `cbor:"seg_kid,omitempty" json:"seg_kid,omitempty"`
	SegHash Hash   `cbor:"seg_hash,omitzero" json:"seg_hash,omitzero"`
}

// Stream returns the nack's stream.
func (n *Nack) Stream() Stream { return Stream{Edge: n.Edge, Epoch: n.Epoch} }

// Refused returns the segment a version 2 nack refuses.
func (n *Nack) Refused() SegmentRef {
	return SegmentRef{First: n.First, Last: n.Last, KID: n.SegKID, Hash: n.SegHash}
}

// SignNack fills n.V and n.KID and returns the signed nack.
func (s *Signer) SignNack(n Nack) []byte {
	n.V, n.KID = NackVersion, s.kid
	return s.sign(ContentTypeNack, marshal(&n))
}

// SegmentRef names one segment as its sender published it: what a nack
// refuses. Two publishes of the same bytes have the same ref.
type SegmentRef struct {
	First, Last uint64
	KID         KeyID // the key id in the checkpoint's protected header
	Hash        Hash  // SHA-256 of the bytes as published (compressed or not)
}

// RefOf returns the ref of a segment published as raw. seg is raw decoded,
// or nil when it does not decode (then only Hash is set, and the KID when
// nothing but the checkpoint is missing).
func RefOf(raw []byte, seg *Segment) SegmentRef {
	ref := SegmentRef{Hash: HashBytes(raw)}
	if seg != nil {
		ref.First, ref.Last, ref.KID = seg.First, seg.Last, CheckpointKeyID(seg.Checkpoint)
	}
	return ref
}

// CheckpointKeyID reads the key id from a signed checkpoint's protected
// header without verifying anything: it names the key the sender claims,
// for binding a refusal to it. It returns "" when there is none to read.
func CheckpointKeyID(cp []byte) KeyID {
	m, err := openSign1("checkpoint", cp)
	if err != nil {
		return ""
	}
	kid, _ := m.Headers.Protected[cose.HeaderLabelKeyID].([]byte)
	if len(kid) > 64 {
		return ""
	}
	return KeyID(kid)
}

// Reply is what arrives on an edge's rcpt topic: a receipt or a nack.
type Reply struct {
	Receipt *Receipt
	Nack    *Nack
}

// VerifyReply checks a signed receipt or nack against the pinned cloud keys.
func VerifyReply(msg []byte, keys Keys) (Reply, error) {
	m, err := openSign1("reply", msg)
	if err != nil {
		return Reply{}, err
	}
	switch ct, _ := m.Headers.Protected[cose.HeaderLabelContentType].(string); ct {
	case ContentTypeReceipt:
		var r Receipt
		if err := verifySigned("receipt", ct, m, keys, &r); err != nil {
			return Reply{}, err
		}
		return Reply{Receipt: &r}, nil
	case ContentTypeNack:
		var n Nack
		if err := verifySigned("nack", ct, m, keys, &n); err != nil {
			return Reply{}, err
		}
		if n.V != 0 && n.V != NackVersion {
			return Reply{}, fieldf("nack.v", "is %d; this version reads nack versions 1 and %d", n.V, NackVersion)
		}
		return Reply{Nack: &n}, nil
	default:
		return Reply{}, badSig("reply: content type %q is neither a receipt nor a nack", ct)
	}
}

// GenerateKey returns a new Ed25519 key pair from crypto/rand.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(nil)
}
