package api

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/proof"
)

// eventProof serves GET /v1/events/{edge}/{epoch}/{seq}/proof: the proof
// file of one committed record (protocol/proof, docs/PROTOCOL.md section
// 11), signed now by the cloud's key. It is read like /v1/events (the same
// access and, through authorize, the same token scope).
func (s *server) eventProof(w http.ResponseWriter, r *http.Request) error {
	edge := r.PathValue("edge")
	if err := checkEdgeID("edge in the path", edge); err != nil {
		return err
	}
	epoch, err := protocol.ParseEpoch(r.PathValue("epoch"))
	if err != nil {
		return badRequest("epoch in the path must be 32 hex digits (an event's epoch from GET /v1/events): %v", err)
	}
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 63)
	if err != nil || seq < 1 {
		return badRequest("seq in the path must be an event's seq, an integer from 1 to %d, got %q", uint64(math.MaxInt64), r.PathValue("seq"))
	}
	if s.opts.Signer == nil {
		return errorf(http.StatusNotImplemented, "this server was started without the cloud's signing key, so it cannot sign proofs; ask the operator to serve the API from cloud serve")
	}
	st := protocol.Stream{Edge: edge, Epoch: epoch}
	var rp ledger.RecordProof
	if mine(r, edge) {
		rp, err = s.led(r).RecordProof(r.Context(), st, seq)
	} else {
		err = ledger.ErrNotFound // another tenant's: as if it were not there
	}
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return errorf(http.StatusNotFound, "event %d of stream %s/%s is not committed; GET /v1/events lists the committed events with their edge, epoch and seq", seq, edge, epoch)
	case errors.Is(err, ledger.ErrNoCheckpoint), errors.Is(err, ledger.ErrUnknownKey):
		return errorf(http.StatusInternalServerError, "cannot prove event %d of stream %s/%s: %v; the stored ledger is damaged, run cloud audit", seq, edge, epoch, err)
	case err != nil:
		return err
	}
	rec, err := protocol.DecodeRecord(rp.Raw)
	if err != nil {
		return errorf(http.StatusInternalServerError, "cannot prove event %d of stream %s/%s: its stored bytes do not decode (%v); the stored ledger is damaged, run cloud audit", seq, edge, epoch, err)
	}
	var until int64
	if !rp.KeyValidUntil.IsZero() {
		until = rp.KeyValidUntil.UnixMicro()
	}
	b, _, err := proof.Build(proof.Parts{
		Record: rp.Raw, Chain: rp.Chain, Checkpoint: rp.Checkpoint.Signature, EdgeKey: rp.Key.Public,
		Statement: protocol.ProofStatement{
			Edge: edge, Epoch: epoch, Seq: seq, Hash: rec.LinkHash(rp.Raw), Pos: rp.Pos,
			CommittedAt: rp.CommittedAt.UnixMicro(), CheckpointSeq: rp.Checkpoint.Seq, CheckpointAt: rp.Checkpoint.CommittedAt.UnixMicro(),
			EdgeKID: rp.Key.KID, EdgeKey: rp.Key.Public, KeyValidFrom: rp.Key.CreatedAt.UnixMicro(), KeyValidUntil: until,
			At: s.opts.Now().UnixMicro(),
		},
	}, s.opts.Signer)
	if err != nil {
		return errorf(http.StatusInternalServerError, "cannot prove event %d of stream %s/%s: the stored record or checkpoint does not verify: %v; the stored ledger is damaged, run cloud audit", seq, edge, epoch, err)
	}
	h := w.Header()
	h.Set("Content-Type", proof.ContentType)
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, ProofFileName(st, seq)))
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return nil
}

// ProofFileName is the file name GET .../proof suggests for a proof of
// record seq of s.
func ProofFileName(s protocol.Stream, seq uint64) string {
	return fmt.Sprintf("proof-%s-%s-%d.outpost-proof", s.Edge, s.Epoch, seq)
}
