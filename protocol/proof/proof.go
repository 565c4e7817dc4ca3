// Package proof is the proof file of one committed record: everything
// needed to check, offline and without trusting whoever hands it over,
// that the record is what its edge signed and that the cloud committed it.
//
// A file holds the record's bytes, the records after it up to the covering
// checkpoint (the first one at or after the record), the edge's COSE_Sign1
// checkpoint, the edge's public key, the cloud's signed proof statement
// (the key's registration and where the record sits in the ledger), the
// cloud's signed receipt for the record (as the cloud sends edges) and the
// cloud's public key. docs/PROTOCOL.md ("Proof files") specifies it.
//
// The file is deterministic CBOR and Decode refuses any other encoding of
// the same content, so every byte of a valid file is either signed, hashed
// into something signed, or fixed by the format: changing any one of them
// makes Verify fail. The package is pure (no I/O) and imports only
// protocol and the CBOR library; it decodes outside bytes, so it is fuzzed.
package proof

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/outpost-edge/outpost/protocol"
)

// Version is the proof file version this package writes and reads.
const Version = 1

// ContentType is the media type of a proof file.
const ContentType = "application/vnd.outpost.proof+cbor"

// Limits of Decode. A checkpoint covers one durable group commit of the
// edge, which never holds more records than a segment may.
const (
	MaxFileBytes  = 32 << 20
	MaxChainRecs  = protocol.MaxSegmentRecs
	maxNesting    = 4
	maxMapPairs   = 16
	maxArrayElems = MaxChainRecs
)

// ErrInvalid is wrapped by every error of Decode and Verify: the file is
// not a valid proof. The message names what failed.
var ErrInvalid = errors.New("invalid proof")

// File is a proof file's content. Its CBOR form is a map with these text
// keys, in core deterministic order.
type File struct {
	V          uint64   `cbor:"v"`
	Record     []byte   `cbor:"record"`     // the record's bytes as stored
	Chain      [][]byte `cbor:"chain"`      // records seq+1 .. checkpoint seq, as stored (empty when the checkpoint is at seq)
	Checkpoint []byte   `cbor:"checkpoint"` // the edge's COSE_Sign1 checkpoint covering the record
	EdgeKey    []byte   `cbor:"edge_key"`   // the edge's Ed25519 public key that signed it
	Statement  []byte   `cbor:"statement"`  // the cloud's COSE_Sign1 protocol.ProofStatement
	Receipt    []byte   `cbor:"receipt"`    // the cloud's COSE_Sign1 protocol.Receipt through the record
	CloudKey   []byte   `cbor:"cloud_key"`  // the cloud's Ed25519 public key
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	eo := cbor.CoreDetEncOptions()
	eo.NilContainers = cbor.NilContainerAsEmpty
	var err error
	if encMode, err = eo.EncMode(); err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   maxNesting,
		MaxArrayElements:  maxArrayElems,
		MaxMapPairs:       maxMapPairs,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}

// Encode returns the file's bytes: core deterministic CBOR.
func Encode(f File) []byte {
	b, err := encMode.Marshal(&f)
	if err != nil {
		panic(fmt.Sprintf("proof: encode: %v", err)) // only []byte and uint64 fields
	}
	return b
}

// Decode reads a proof file. It refuses a file over MaxFileBytes, one that
// is not a CBOR map of exactly File's keys, a version other than Version,
// and any encoding that is not the core deterministic one (so one content
// has exactly one file). It checks nothing cryptographic; Verify does.
func Decode(b []byte) (File, error) {
	var f File
	if len(b) > MaxFileBytes {
		// Not len(b): a caller reads at most one byte past the limit.
		return f, invalid("file holds more than %d bytes, the most a proof file may: it is not a proof file (get one from GET /v1/events/{edge}/{epoch}/{seq}/proof)", MaxFileBytes)
	}
	if len(b) == 0 {
		return f, invalid("file is empty")
	}
	if err := decMode.Unmarshal(b, &f); err != nil {
		return f, invalid("file is not a proof file (a CBOR map of v, record, chain, checkpoint, edge_key, statement, receipt, cloud_key): %v", err)
	}
	if f.V != Version {
		return f, invalid("file version is %d; this verifier reads version %d", f.V, Version)
	}
	if !bytes.Equal(Encode(f), b) {
		return f, invalid("file is not in core deterministic CBOR, or lacks a field (a proof file has exactly one encoding; this one was altered or made by another tool)")
	}
	return f, nil
}

// Options tune Verify.
type Options struct {
	// CloudKey, when set, pins the cloud's public key: the file's must be
	// it. Unpinned, the file's own key is used, and the result says that
	// the receipt shows only that the holder of that key vouches.
	CloudKey ed25519.PublicKey
}

// Result is what a verified proof proves.
type Result struct {
	Record     protocol.Record
	Hash       protocol.Hash // the record's link hash
	Checkpoint protocol.Checkpoint
	ChainLen   int // records after the record up to the checkpoint
	Statement  protocol.ProofStatement
	Receipt    protocol.Receipt
	EdgeKey    ed25519.PublicKey
	CloudKey   ed25519.PublicKey
	CloudKID   protocol.KeyID
	Pinned     bool // the cloud key was pinned by Options.CloudKey
}

// Verify decodes a proof file and checks it: the edge key is a valid
// Ed25519 key and signs the checkpoint; the record and the chain after it
// hash-chain to the checkpoint's signed head; the cloud key (pinned, when
// Options.CloudKey is set) signs the proof statement and the receipt; the
// statement and the receipt name this record (stream, seq, hash) and this
// checkpoint and key; and the key's registration covers the moment the
// cloud committed the checkpoint. Every error wraps ErrInvalid and names
// the first check that failed.
func Verify(b []byte, o Options) (*Result, error) {
	f, err := Decode(b)
	if err != nil {
		return nil, err
	}
	return f.Verify(o)
}

// Verify checks a decoded file; see the package-level Verify.
func (f *File) Verify(o Options) (*Result, error) {
	res := &Result{}
	if len(f.Chain) > MaxChainRecs {
		return nil, invalid("chain holds %d records; at most %d", len(f.Chain), MaxChainRecs)
	}

	// Keys.
	if err := protocol.ValidatePublicKey(f.EdgeKey); err != nil {
		return nil, invalid("edge_key: %v", err)
	}
	if err := protocol.ValidatePublicKey(f.CloudKey); err != nil {
		return nil, invalid("cloud_key: %v", err)
	}
	res.EdgeKey, res.CloudKey = ed25519.PublicKey(f.EdgeKey), ed25519.PublicKey(f.CloudKey)
	res.CloudKID = protocol.KeyIDOf(res.CloudKey)
	if o.CloudKey != nil {
		if !bytes.Equal(o.CloudKey, f.CloudKey) {
			return nil, invalid("cloud key: the file carries key %s, but the pinned cloud key is %s; this proof was not made by the cloud you trust",
				res.CloudKID, protocol.KeyIDOf(o.CloudKey))
		}
		res.Pinned = true
	}

	// The edge's signature and the chain under it.
	edgeKID := protocol.KeyIDOf(res.EdgeKey)
	cp, err := protocol.VerifyCheckpoint(f.Checkpoint, protocol.NewKeyMap(res.EdgeKey))
	if err != nil {
		return nil, invalid("checkpoint (signed by the edge, key %s in the file): %v", edgeKID, err)
	}
	res.Checkpoint = cp
	rec, err := protocol.DecodeRecord(f.Record)
	if err != nil {
		return nil, invalid("record: %v", err)
	}
	res.Record, res.Hash, res.ChainLen = rec, rec.LinkHash(f.Record), len(f.Chain)
	raws := make([][]byte, 0, 1+len(f.Chain))
	raws = append(raws, f.Record)
	raws = append(raws, f.Chain...)
	from := protocol.ChainState{Stream: rec.Stream(), Seq: rec.Seq - 1, Head: rec.Prev}
	if _, _, err := protocol.VerifyChain(from, raws, &protocol.ChainState{Stream: cp.Stream(), Seq: cp.Seq, Head: cp.Head}); err != nil {
		return nil, invalid("hash chain from record seq %d to the checkpoint at seq %d: %v", rec.Seq, cp.Seq, err)
	}

	// The cloud's statement and receipt.
	cloudKeys := protocol.NewKeyMap(res.CloudKey)
	st, err := protocol.VerifyProofStatement(f.Statement, cloudKeys)
	if err != nil {
		return nil, invalid("proof statement (signed by the cloud, key %s): %v", res.CloudKID, err)
	}
	res.Statement = st
	switch {
	case st.Edge != rec.Edge || st.Epoch != rec.Epoch || st.Seq != rec.Seq || st.Hash != res.Hash:
		return nil, invalid("proof statement is about record %d of %s/%s with hash %s, not this record (%d of %s, hash %s)",
			st.Seq, st.Edge, st.Epoch, st.Hash, rec.Seq, rec.Stream(), res.Hash)
	case st.Records != RecordsDigest(f.Record, f.Chain):
		return nil, invalid("proof statement's records digest %s is not that of the file's record and chain: the cloud did not store these bytes", st.Records)
	case st.CheckpointSeq != cp.Seq:
		return nil, invalid("proof statement names the checkpoint at seq %d, the file's is at seq %d", st.CheckpointSeq, cp.Seq)
	case st.EdgeKID != cp.KID || !bytes.Equal(st.EdgeKey, f.EdgeKey):
		return nil, invalid("proof statement registers key %s, but the checkpoint is signed by key %s", st.EdgeKID, cp.KID)
	case st.KeyValidFrom > st.CheckpointAt:
		return nil, invalid("key %s was registered at %s, after the checkpoint was committed at %s",
			st.EdgeKID, fmtUs(st.KeyValidFrom), fmtUs(st.CheckpointAt))
	case st.KeyValidUntil != 0 && st.KeyValidUntil <= st.CheckpointAt:
		return nil, invalid("key %s was revoked at %s, before the checkpoint was committed at %s",
			st.EdgeKID, fmtUs(st.KeyValidUntil), fmtUs(st.CheckpointAt))
	case st.CommittedAt > st.CheckpointAt:
		return nil, invalid("proof statement says the record was committed at %s, after its covering checkpoint (%s); a record is committed with or before it",
			fmtUs(st.CommittedAt), fmtUs(st.CheckpointAt))
	case st.Pos < 1:
		return nil, invalid("proof statement gives ledger position %d; positions start at 1", st.Pos)
	}
	reply, err := protocol.VerifyReply(f.Receipt, cloudKeys)
	if err != nil {
		return nil, invalid("receipt (signed by the cloud, key %s): %v", res.CloudKID, err)
	}
	if reply.Receipt == nil {
		return nil, invalid("receipt is a nack, not a receipt")
	}
	rc := *reply.Receipt
	res.Receipt = rc
	switch {
	case rc.Stream() != rec.Stream() || rc.HWM != rec.Seq || rc.Head != res.Hash:
		return nil, invalid("receipt is for %s through seq %d with head %s, not through this record (%d, hash %s)",
			rc.Stream(), rc.HWM, rc.Head, rec.Seq, res.Hash)
	case rc.CommittedAt != st.CommittedAt/1000:
		return nil, invalid("receipt says committed at %d ms, the proof statement at %d µs", rc.CommittedAt, st.CommittedAt)
	}
	return res, nil
}

// RecordsDigest is the ProofStatement.Records of a proof of record with
// chain: SHA-256 over the SHA-256 of each one's bytes, in order.
func RecordsDigest(record []byte, chain [][]byte) protocol.Hash {
	h := sha256.New()
	for _, raw := range append([][]byte{record}, chain...) {
		s := sha256.Sum256(raw)
		h.Write(s[:])
	}
	var d protocol.Hash
	h.Sum(d[:0])
	return d
}

func fmtUs(us int64) string {
	return protocol.UnixMicroTime(us).Format("2006-01-02T15:04:05.000000Z07:00")
}
