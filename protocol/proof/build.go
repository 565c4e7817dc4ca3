package proof

import (
	"crypto/ed25519"
	"fmt"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Parts is what the cloud makes a proof of one record from.
type Parts struct {
	Record     []byte   // the record's bytes as stored
	Chain      [][]byte // records seq+1 .. the checkpoint's seq, as stored
	Checkpoint []byte   // the covering checkpoint as the edge signed it
	EdgeKey    ed25519.PublicKey
	// Statement is what the cloud states about the record; Records, V and
	// KID are filled when it is signed.
	Statement protocol.ProofStatement
}

// Build signs the statement and a receipt through the record with the
// cloud's key, assembles the file, and verifies it (with the cloud key
// pinned) before returning it: a cloud never hands out a proof that does
// not verify, so a stored record or checkpoint that was altered turns into
// an error here, naming what failed.
func Build(p Parts, cloud *protocol.Signer) ([]byte, *Result, error) {
	st := p.Statement
	st.Records = RecordsDigest(p.Record, p.Chain)
	receipt := cloud.SignReceipt(protocol.Receipt{
		Edge: st.Edge, Epoch: st.Epoch, HWM: st.Seq, Head: st.Hash, CommittedAt: st.CommittedAt / 1000,
	})
	f := File{
		V: Version, Record: p.Record, Chain: p.Chain, Checkpoint: p.Checkpoint, EdgeKey: p.EdgeKey,
		Statement: cloud.SignProofStatement(st), Receipt: receipt, CloudKey: cloud.Public(),
	}
	if f.Chain == nil {
		f.Chain = [][]byte{}
	}
	b := Encode(f)
	res, err := Verify(b, Options{CloudKey: cloud.Public()})
	if err != nil {
		return nil, nil, fmt.Errorf("build proof of %s/%s seq %d: %w", st.Edge, st.Epoch, st.Seq, err)
	}
	return b, res, nil
}

// Summary is a verified proof's result as JSON, for scripts.
type Summary struct {
	OK            bool           `json:"ok"`
	Edge          string         `json:"edge"`
	Epoch         protocol.Epoch `json:"epoch"`
	Seq           uint64         `json:"seq"`
	Type          string         `json:"type"`
	ID            string         `json:"id"`
	Device        string         `json:"device"`
	Tombstone     bool           `json:"tombstone,omitempty"`
	Hash          protocol.Hash  `json:"hash"`
	CheckpointSeq uint64         `json:"checkpoint_seq"`
	EdgeTime      time.Time      `json:"edge_time"` // the checkpoint's
	EdgeKID       protocol.KeyID `json:"edge_kid"`
	KeyValidFrom  time.Time      `json:"key_valid_from"`
	KeyValidUntil *time.Time     `json:"key_valid_until,omitempty"`
	CloudKID      protocol.KeyID `json:"cloud_kid"`
	CloudPinned   bool           `json:"cloud_pinned"`
	Pos           int64          `json:"pos"`
	CommittedAt   time.Time      `json:"committed_at"`
	CheckpointAt  time.Time      `json:"checkpoint_committed_at"`
	ProofMadeAt   time.Time      `json:"proof_made_at"`
}

// Summary returns r as a Summary.
func (r *Result) Summary() Summary {
	st := &r.Statement
	s := Summary{
		OK: true, Edge: r.Record.Edge, Epoch: r.Record.Epoch, Seq: r.Record.Seq, Type: r.Record.Type, ID: r.Record.ID,
		Device: r.Record.Device, Tombstone: r.Record.IsTombstone(), Hash: r.Hash, CheckpointSeq: r.Checkpoint.Seq,
		EdgeTime: r.Checkpoint.EdgeTime.Time(), EdgeKID: r.Checkpoint.KID, KeyValidFrom: protocol.UnixMicroTime(st.KeyValidFrom),
		CloudKID: r.CloudKID, CloudPinned: r.Pinned, Pos: st.Pos, CommittedAt: protocol.UnixMicroTime(st.CommittedAt),
		CheckpointAt: protocol.UnixMicroTime(st.CheckpointAt), ProofMadeAt: protocol.UnixMicroTime(st.At),
	}
	if st.KeyValidUntil != 0 {
		t := protocol.UnixMicroTime(st.KeyValidUntil)
		s.KeyValidUntil = &t
	}
	return s
}

// Text says in plain words what the verified proof proves.
func (r *Result) Text() string {
	var b strings.Builder
	rec, st, cp := &r.Record, &r.Statement, &r.Checkpoint
	what := "type " + rec.Type
	if rec.IsTombstone() {
		what += " (a tombstone: its body was shed at the edge; the edge signed the shed record's hash and prev, the other fields are as the cloud stored them)"
	}
	// Unpinned, every key is the file's own: anyone can make a file that
	// passes, for any edge's name, with an edge key and a cloud key of
	// their own (the edge key is tied to the edge only by the cloud key's
	// statement). So it does not start with OK, and says why first.
	status := "OK"
	if !r.Pinned {
		fmt.Fprintf(&b, "UNPINNED: the cloud key was not pinned, so this file proves nothing yet: anyone can make one that passes these checks with an edge key and a cloud key of their own. "+
			"Run again with --cloud-key set to your cloud's key (cloud key show, or GET /v1/cloud-key); this file's cloud key is %s.\n", r.CloudKID)
		status = "Consistent, as the file's own keys say"
	}
	fmt.Fprintf(&b, "%s: record seq %d of edge %s epoch %s, %s, id %q from device %s, hash %s,\n",
		status, rec.Seq, rec.Edge, rec.Epoch, what, rec.ID, rec.Device, r.Hash)
	fmt.Fprintf(&b, "was signed by edge key %s in the checkpoint at seq %d (edge time %s, %d later record(s) chained to it),\n",
		cp.KID, cp.Seq, cp.EdgeTime.Time().Format(time.RFC3339Nano), r.ChainLen)
	until := "and still valid when the proof was made"
	if st.KeyValidUntil != 0 {
		until = "revoked " + fmtUs(st.KeyValidUntil) + ", after that checkpoint was committed"
	}
	fmt.Fprintf(&b, "a key the cloud registered to edge %s on %s, %s,\n", st.Edge, fmtUs(st.KeyValidFrom), until)
	fmt.Fprintf(&b, "and committed by cloud key %s at ledger position %d on %s (checkpoint committed %s);\n",
		r.CloudKID, st.Pos, fmtUs(st.CommittedAt), fmtUs(st.CheckpointAt))
	fmt.Fprintf(&b, "the cloud's receipt says stream %s is committed through seq %d with head %s.\n",
		r.Receipt.Stream(), r.Receipt.HWM, r.Receipt.Head)
	fmt.Fprintf(&b, "Proof made %s.\n", fmtUs(st.At))
	if r.Pinned {
		fmt.Fprintf(&b, "Cloud key %s is the pinned key.\n", r.CloudKID)
	}
	return b.String()
}
