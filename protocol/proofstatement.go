package protocol

import (
	"crypto/ed25519"
	"time"
)

// ContentTypeProofStatement is the COSE content type of a ProofStatement.
const ContentTypeProofStatement = "application/vnd.outpost.proof-statement+cbor"

// ProofStatementVersion is the version of the proof statement this
// package signs and reads.
const ProofStatementVersion = 1

// ProofStatement is the cloud's signed statement, made for a proof file
// (docs/PROTOCOL.md, "Proof files"), of where it committed one record and
// how it had registered the edge key whose checkpoint covers that record.
// The receipt in the same file says the stream is committed through the
// record; this says what only the cloud's books know: the ledger position,
// the commit times and the key's registration.
//
// Times are Unix microseconds (the resolution Postgres keeps), so the
// verifier can compare a commit with a revocation exactly.
type ProofStatement struct {
	V     uint64 `cbor:"v"`
	Edge  string `cbor:"edge"`
	Epoch Epoch  `cbor:"epoch"`
	Seq   uint64 `cbor:"seq"`
	Hash  Hash   `cbor:"hash"` // the record's link hash
	// Records is SHA-256 over the SHA-256 of each record's bytes in the
	// proof, the record's first and then the chain's, as the cloud stores
	// them. The hash chain proves what the edge signed; this makes the
	// cloud vouch for every byte besides, which matters for tombstones,
	// whose fields other than prev and shed no signature covers.
	Records       Hash   `cbor:"records"`
	Pos           int64  `cbor:"pos"`            // the record's ledger position (global commit offset)
	CommittedAt   int64  `cbor:"committed_at"`   // when the record was committed
	CheckpointSeq uint64 `cbor:"checkpoint_seq"` // the covering checkpoint: the first at or after Seq
	CheckpointAt  int64  `cbor:"checkpoint_at"`  // when that checkpoint was committed
	// The registration of the key that signed the checkpoint, as the
	// cloud records it: registered at KeyValidFrom, valid until
	// KeyValidUntil (the key's or its edge's revocation, whichever came
	// first; 0 while neither is revoked).
	EdgeKID       KeyID  `cbor:"edge_kid"`
	EdgeKey       []byte `cbor:"edge_key"`
	KeyValidFrom  int64  `cbor:"key_valid_from"`
	KeyValidUntil int64  `cbor:"key_valid_until"`
	At            int64  `cbor:"at"`  // when the cloud made the statement
	KID           KeyID  `cbor:"kid"` // the cloud's key
}

// SignProofStatement fills p.V and p.KID and returns the signed statement.
func (s *Signer) SignProofStatement(p ProofStatement) []byte {
	p.V, p.KID = ProofStatementVersion, s.kid
	return s.sign(ContentTypeProofStatement, marshal(&p))
}

// VerifyProofStatement checks a signed proof statement against the cloud's
// keys and returns it.
func VerifyProofStatement(msg []byte, keys Keys) (ProofStatement, error) {
	var p ProofStatement
	m, err := openSign1("proof statement", msg)
	if err == nil {
		err = verifySigned("proof statement", ContentTypeProofStatement, m, keys, &p)
	}
	if err != nil {
		return p, err
	}
	if p.V != ProofStatementVersion {
		return p, fieldf("proof statement.v", "is %d; this version reads proof statement version %d", p.V, ProofStatementVersion)
	}
	if err := ValidateName("edge", p.Edge); err != nil {
		return p, prefixField("proof statement", err)
	}
	if p.Seq == 0 || p.CheckpointSeq < p.Seq {
		return p, fieldf("proof statement.checkpoint_seq", "is %d for seq %d; a covering checkpoint is at or after the record", p.CheckpointSeq, p.Seq)
	}
	if len(p.EdgeKey) != ed25519.PublicKeySize {
		return p, fieldf("proof statement.edge_key", "is %d bytes, want %d", len(p.EdgeKey), ed25519.PublicKeySize)
	}
	return p, nil
}

// UnixMicroTime returns the time of a Unix-microsecond count, in UTC.
func UnixMicroTime(us int64) time.Time { return time.UnixMicro(us).UTC() }
