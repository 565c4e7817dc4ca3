package api

import (
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// onlyParams refuses query parameters other than allowed, and repeated
// ones: a misspelt filter must not quietly select everything.
func onlyParams(r *http.Request, allowed ...string) error {
	for k, vs := range r.URL.Query() {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return badRequest("parameter %s: this endpoint takes no query parameters", k)
			}
			return badRequest("parameter %s is not known here; the parameters are %v", k, allowed)
		}
		if len(vs) > 1 {
			return badRequest("parameter %s is given %d times; give it once", k, len(vs))
		}
	}
	return nil
}

// parseCursor reads a non-negative integer parameter (a cursor).
func parseCursor(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest("parameter %s must be the next cursor of a previous page: a non-negative integer, got %q", name, v)
	}
	return n, nil
}

// parseLimit reads the page size: default ledger.DefaultLimit, at most
// ledger.MaxLimit.
func parseLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return ledger.DefaultLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > ledger.MaxLimit {
		return 0, badRequest("parameter limit must be an integer from 1 to %d (default %d), got %q", ledger.MaxLimit, ledger.DefaultLimit, v)
	}
	return n, nil
}

func parseTime(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, badRequest("parameter %s must be an RFC 3339 time such as 2026-01-02T15:04:05Z or 2026-01-02T16:04:05.5+01:00, got %q", name, v)
	}
	return t, nil
}

type streamJSON struct {
	Edge       string          `json:"edge"`
	Epoch      protocol.Epoch  `json:"epoch"`
	HWM        uint64          `json:"hwm"`
	Head       protocol.Hash   `json:"head"`
	LastCommit *time.Time      `json:"last_commit,omitempty"`
	EdgeSeq    uint64          `json:"edge_seq"`
	Lag        uint64          `json:"lag"`
	FirstSeen  time.Time       `json:"first_seen"`
	LastSeen   time.Time       `json:"last_seen"`
	PrevEpoch  *protocol.Epoch `json:"prev_epoch,omitempty"`
	NextEpoch  *protocol.Epoch `json:"next_epoch,omitempty"`
	EndedAt    *time.Time      `json:"ended_at,omitempty"`
	EndedAtSeq *uint64         `json:"ended_at_seq,omitempty"`
	// LagHistory is the lag as the scheduled audit sampled it, oldest
	// first (ledger.LagSamplesKept at most); absent before a sample.
	LagHistory []ledger.LagSample `json:"lag_history,omitempty"`
}

type streamsBody struct {
	Streams []streamJSON `json:"streams"`
}

func (s *server) streams(w http.ResponseWriter, r *http.Request) error {
	ss, err := s.led(r).Streams(r.Context())
	if err != nil {
		return err
	}
	out := streamsBody{Streams: make([]streamJSON, 0, len(ss))}
	for _, st := range ss {
		if !s.visible(r, st.Stream.Edge) {
			continue
		}
		j := streamJSON{
			Edge: st.Stream.Edge, Epoch: st.Stream.Epoch, HWM: st.HWM, Head: st.Head,
			LastCommit: timePtr(st.CommittedAt), EdgeSeq: st.EdgeSeq, Lag: st.Lag,
			FirstSeen: st.FirstSeen.UTC(), LastSeen: st.LastSeen.UTC(),
			PrevEpoch: st.PrevEpoch, NextEpoch: st.NextEpoch, EndedAt: timePtr(st.EndedAt),
			LagHistory: st.LagHistory,
		}
		if !st.EndedAt.IsZero() {
			j.EndedAtSeq = &st.EndedAtSeq
		}
		out.Streams = append(out.Streams, j)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// events serves GET /v1/events: ledger.Page as it is, whose JSON is the
// documented wire form (pos, committed_at and protocol.RecordJSON's
// fields per event; next).
func (s *server) events(w http.ResponseWriter, r *http.Request) error {
	f, err := eventFilter(r)
	if err != nil {
		return err
	}
	if f.Limit, err = parseLimit(r); err != nil {
		return err
	}
	p, err := s.led(r).Events(r.Context(), f)
	if err != nil {
		return err
	}
	kept := p.Events[:0]
	for _, e := range p.Events {
		if s.visible(r, e.Edge) {
			kept = append(kept, e)
		}
	}
	p.Events = kept
	writeJSON(w, http.StatusOK, p)
	return nil
}

// validateTypeParam checks the type filter of the event endpoints.
func validateTypeParam(t string) error {
	if err := protocol.ValidateType(t); err != nil {
		return badRequest("parameter type must be an event type in dotted lower case such as sale.completed: %v", err)
	}
	return nil
}

type quarantineJSON struct {
	ID           int64           `json:"id"`
	Edge         string          `json:"edge"`
	Epoch        *protocol.Epoch `json:"epoch,omitempty"`
	First        uint64          `json:"first"`
	Last         uint64          `json:"last"`
	Code         string          `json:"code"`
	Reason       string          `json:"reason"`
	ReceivedAt   time.Time       `json:"received_at"`
	PayloadBytes int             `json:"payload_bytes"`       // bytes kept (a prefix when truncated)
	Size         int64           `json:"size"`                // bytes of the payload as received
	Truncated    bool            `json:"truncated,omitempty"` // only a prefix was kept: the sender was over its cap
	Copies       int64           `json:"copies"`              // arrivals of this same payload from this sender
	LastAt       time.Time       `json:"last_at"`
	Payload      []byte          `json:"payload,omitempty"` // base64; only from GET /v1/quarantine/{id}
}

type quarantineBody struct {
	Entries []quarantineJSON `json:"entries"`
	Next    int64            `json:"next"`
}

func quarantineOf(q ledger.QuarantineEntry, payload bool) quarantineJSON {
	j := quarantineJSON{ID: q.ID, Edge: q.Edge, Epoch: q.Epoch, First: q.First, Last: q.Last, Code: q.Code,
		Reason: q.Reason, ReceivedAt: q.ReceivedAt.UTC(), PayloadBytes: len(q.Payload),
		Size: q.Size, Truncated: q.Truncated, Copies: q.Copies, LastAt: q.LastAt.UTC()}
	if payload {
		j.Payload = q.Payload
	}
	return j
}

// quarantine lists quarantined segments, oldest first, without their
// payloads (a page of them could be large); GET /v1/quarantine/{id} has it.
func (s *server) quarantine(w http.ResponseWriter, r *http.Request) error {
	after, err := parseCursor(r, "after")
	if err != nil {
		return err
	}
	limit, err := parseLimit(r)
	if err != nil {
		return err
	}
	qs, err := s.led(r).Quarantine(r.Context(), after, limit)
	if err != nil {
		return err
	}
	out := quarantineBody{Entries: make([]quarantineJSON, 0, len(qs)), Next: after}
	for _, q := range qs {
		if s.visible(r, q.Edge) {
			out.Entries = append(out.Entries, quarantineOf(q, false))
		}
		out.Next = q.ID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) quarantineEntry(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		return badRequest("quarantine id in the path must be a positive integer (an id from GET /v1/quarantine)")
	}
	qs, err := s.led(r).Quarantine(r.Context(), id-1, 1)
	if err != nil {
		return err
	}
	if len(qs) == 0 || qs[0].ID != id || !s.visible(r, qs[0].Edge) {
		return errorf(http.StatusNotFound, "quarantine entry %d: not found", id)
	}
	writeJSON(w, http.StatusOK, quarantineOf(qs[0], true))
	return nil
}
