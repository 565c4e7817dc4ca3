package api

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

type storedRecordJSON struct {
	Seq         uint64    `json:"seq"`
	Pos         int64     `json:"pos"`
	CommittedAt time.Time `json:"committed_at"`
	Raw         []byte    `json:"raw"` // base64
}

type storedCheckpointJSON struct {
	Seq         uint64    `json:"seq"`
	CommittedAt time.Time `json:"committed_at"`
	Signature   []byte    `json:"signature"` // base64 of the COSE_Sign1 message
}

type recordsBody struct {
	Edge        string                 `json:"edge"`
	Epoch       protocol.Epoch         `json:"epoch"`
	HWM         uint64                 `json:"hwm"`
	LastSeq     uint64                 `json:"last_seq"`
	From        uint64                 `json:"from"`
	To          uint64                 `json:"to"`
	Records     []storedRecordJSON     `json:"records"`
	Checkpoints []storedCheckpointJSON `json:"checkpoints"`
	Next        uint64                 `json:"next"`
}

// streamRecords serves GET /v1/streams/{edge}/{epoch}/records: the raw
// record bytes of seqs from..from+limit-1, as stored, with the signed
// checkpoints that cover them, for offline proofs and audits.
func (s *server) streamRecords(w http.ResponseWriter, r *http.Request) error {
	edge := r.PathValue("edge")
	if err := checkEdgeID("edge in the path", edge); err != nil {
		return err
	}
	epoch, err := protocol.ParseEpoch(r.PathValue("epoch"))
	if err != nil {
		return badRequest("epoch in the path must be 32 hex digits (an epoch from GET /v1/streams): %v", err)
	}
	from := uint64(1)
	if v := r.URL.Query().Get("from"); v != "" {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil || n < 1 {
			return badRequest("parameter from must be a seq, an integer from 1 to %d, got %q", uint64(math.MaxInt64), v)
		}
		from = n
	}
	limit, err := parseLimit(r)
	if err != nil {
		return err
	}
	// Seqs are stored as bigint: the page ends at the last one that exists
	// rather than wrapping around (from=9223372036854775807 used to make a
	// negative to, and a checkpoint below from).
	to := from + min(uint64(limit)-1, math.MaxInt64-from)
	var p ledger.Proof
	if mine(r, edge) {
		p, err = s.led(r).StreamProof(r.Context(), protocol.Stream{Edge: edge, Epoch: epoch}, from, to)
	} else {
		err = ledger.ErrNotFound
	}
	if errors.Is(err, ledger.ErrNotFound) {
		return errorf(http.StatusNotFound, "stream %s/%s: not found; GET /v1/streams lists the streams", edge, epoch)
	}
	if err != nil {
		return err
	}
	out := recordsBody{Edge: edge, Epoch: epoch, HWM: p.HWM, LastSeq: p.LastSeq, From: from, To: to,
		Records: make([]storedRecordJSON, 0, len(p.Records)), Checkpoints: make([]storedCheckpointJSON, 0, len(p.Checkpoints))}
	for _, rec := range p.Records {
		out.Records = append(out.Records, storedRecordJSON{Seq: rec.Seq, Pos: rec.Pos, CommittedAt: rec.CommittedAt.UTC(), Raw: rec.Raw})
	}
	for _, c := range p.Checkpoints {
		out.Checkpoints = append(out.Checkpoints, storedCheckpointJSON{Seq: c.Seq, CommittedAt: c.CommittedAt.UTC(), Signature: c.Signature})
	}
	if to < max(p.HWM, p.LastSeq) && to < math.MaxInt64 {
		out.Next = to + 1
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
