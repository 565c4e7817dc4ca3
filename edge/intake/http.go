package intake

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/outpost-edge/outpost/protocol"
)

// HTTP content types of a device payload.
const (
	ContentTypeJSON = "application/json"
	ContentTypeCBOR = "application/cbor"
)

// EventsPath is the HTTP intake's one endpoint.
const EventsPath = "/v1/events"

const httpWhere = "POST " + EventsPath

// Handler returns the HTTP intake: POST /v1/events. Start serves it on
// HTTPAddr; it may also be mounted elsewhere.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(EventsPath, s.serveEvents)
	return mux
}

// itemResult is one stored (or already stored) event in a response.
type itemResult struct {
	Index     int    `json:"index"`
	ID        string `json:"id"`
	Seq       uint64 `json:"seq,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Error     string `json:"error,omitempty"` // this event was not stored
}

// httpBody is every response body of the HTTP intake.
type httpBody struct {
	Results  []itemResult `json:"results,omitempty"`
	Error    string       `json:"error,omitempty"`
	Reason   string       `json:"reason,omitempty"`
	WhatToDo string       `json:"what_to_do,omitempty"`
	Errors   []itemError  `json:"errors,omitempty"`
	Rejected []string     `json:"rejected,omitempty"` // ids of intake.rejected records keeping refused bytes
}

func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, statusBadMethod, httpBody{Error: "method " + r.Method + " is not allowed", WhatToDo: "POST one event or an array of events"})
		return
	}
	device, rr, why := s.authHTTP(r)
	if rr != ReasonNone {
		s.metrics.refuse(rr)
		if rr == ReasonAuth {
			w.Header().Set("WWW-Authenticate", `Basic realm="outpost-edge", charset="UTF-8"`)
		}
		s.refuseHTTP(w, rr, why, nil, nil)
		return
	}
	s.metrics.Published.Add(1)

	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != ContentTypeJSON && ct != ContentTypeCBOR {
		s.metrics.refuse(ReasonInvalid)
		writeJSON(w, statusBadMedia, httpBody{
			Error:    fmt.Sprintf("content type %q is not accepted", r.Header.Get("Content-Type")),
			Reason:   ReasonInvalid.String(),
			WhatToDo: "send Content-Type: application/json or application/cbor",
		})
		return
	}
	if r.ContentLength > protocol.MaxBatchBytes {
		s.metrics.refuse(ReasonTooLarge)
		s.refuseHTTP(w, ReasonTooLarge, fmt.Sprintf("body is %d bytes; the limit is %d", r.ContentLength, protocol.MaxBatchBytes), nil, nil)
		return
	}
	// Refuse before reading the body when the edge is saturated. The slot
	// is given back when the append completes, not when the handler
	// returns, so that a client that hangs up cannot free it early.
	if s.metrics.Inflight.Load() >= int64(s.MaxInflightAppends) {
		s.metrics.refuse(ReasonBusy)
		w.Header().Set("Retry-After", "1")
		s.refuseHTTP(w, ReasonBusy, fmt.Sprintf("%d appends are in flight; the limit is %d", s.metrics.Inflight.Load(), s.MaxInflightAppends), nil, nil)
		return
	}
	payload, err := io.ReadAll(http.MaxBytesReader(w, r.Body, protocol.MaxBatchBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.metrics.refuse(ReasonTooLarge)
			s.refuseHTTP(w, ReasonTooLarge, fmt.Sprintf("body is over %d bytes", protocol.MaxBatchBytes), nil, nil)
			return
		}
		writeJSON(w, statusUnreadable, httpBody{Error: "read body: " + err.Error(), WhatToDo: "send the whole body"})
		return
	}
	if f, err := protocol.DetectFormat(payload); err == nil && (f == protocol.FormatJSON) != (ct == ContentTypeJSON) {
		s.metrics.refuse(ReasonInvalid)
		writeJSON(w, ReasonInvalid.httpStatus(), httpBody{
			Error:    fmt.Sprintf("the body is %s but Content-Type says %s", f, ct),
			Reason:   ReasonInvalid.String(),
			WhatToDo: "send Content-Type: application/" + f.String() + " for this body",
		})
		return
	}

	v := s.judge(device, httpWhere, "http", payload, true)
	if v.refusal != ReasonNone || len(v.items) > 0 {
		// All or nothing: a 4xx stores no event of the request, so a client
		// can fix the listed items and resend the same request. Only the
		// rejected records are stored.
		if v.refusal != ReasonNone {
			s.metrics.refuse(v.refusal)
		} else {
			s.metrics.refused[ReasonInvalid].Add(uint64(len(v.items)))
		}
		kept := s.keepRejects(r, device, v)
		why := v.err
		if v.refusal == ReasonNone {
			why = fmt.Sprintf("%d of %d events are invalid; no event of this request was stored", len(v.items), len(v.items)+len(v.events))
		}
		reason := v.refusal
		if reason == ReasonNone {
			reason = ReasonInvalid
		}
		s.refuseHTTP(w, reason, why, v.items, kept)
		return
	}

	type done struct {
		res []Result
		err error
	}
	ch := make(chan done, 1)
	s.metrics.Events.Add(uint64(len(v.events)))
	s.appendEvents(device, v.events, func(res []Result, err error) {
		s.account(v, res, err)
		ch <- done{res, err}
	})
	var d done
	select {
	case d = <-ch:
	case <-r.Context().Done():
		return // the client left; the events are stored or not as the append decides
	}
	rr, why = outcome(v, d.res, d.err)
	if rr != ReasonNone {
		s.metrics.refuse(rr)
		if rr == ReasonDiskFull {
			w.Header().Set("Retry-After", "60")
		}
		b := httpBody{Error: why, Reason: rr.String(), WhatToDo: rr.advice()}
		b.Results = results(v, d.res)
		writeJSON(w, rr.httpStatus(), b)
		return
	}
	status := statusAllRepeats
	for _, x := range d.res {
		if !x.Duplicate {
			status = statusStored
		}
	}
	s.metrics.Acked.Add(1)
	writeJSON(w, status, httpBody{Results: results(v, d.res)})
}

func results(v *verdict, res []Result) []itemResult {
	if res == nil {
		return nil
	}
	out := make([]itemResult, len(v.events))
	for i, ev := range v.events {
		out[i] = itemResult{Index: i, ID: ev.ID, Seq: res[i].Seq, Duplicate: res[i].Duplicate}
		if res[i].Err != nil {
			out[i] = itemResult{Index: i, ID: ev.ID, Error: res[i].Err.Error()}
		}
	}
	return out
}

// keepRejects stores a refused request's rejected records and returns the
// ids of those kept. It waits for them (they are durable before the 4xx),
// unless the client leaves.
func (s *Server) keepRejects(r *http.Request, device string, v *verdict) []string {
	if len(v.rejects) == 0 {
		return nil
	}
	ch := make(chan []string, 1)
	s.appendEvents(device, v.rejects, func(res []Result, err error) {
		var kept []string
		for i, x := range res {
			if err == nil && x.Err == nil {
				kept = append(kept, v.rejects[i].ID)
			}
		}
		s.metrics.RejectedKept.Add(uint64(len(kept)))
		s.metrics.RejectedDropped.Add(uint64(len(v.rejects) - len(kept)))
		ch <- kept
	})
	select {
	case kept := <-ch:
		return kept
	case <-r.Context().Done():
		return nil
	}
}

func (s *Server) refuseHTTP(w http.ResponseWriter, r Reason, why string, items []itemError, kept []string) {
	writeJSON(w, r.httpStatus(), httpBody{Error: why, Reason: r.String(), WhatToDo: r.advice(), Errors: items, Rejected: kept})
}

// authHTTP authenticates a request by a verified client certificate or
// HTTP Basic (user = device id, password = secret), or both when they agree.
func (s *Server) authHTTP(r *http.Request) (string, Reason, string) {
	user, secret, basic := r.BasicAuth()
	if r.TLS != nil {
		if cn, ok := tlsCN(*r.TLS); ok {
			return s.authCert(cn, user)
		}
	}
	if !basic {
		return "", ReasonAuth, "no credentials: send HTTP Basic authentication with the device id and its secret"
	}
	if err := protocol.ValidateName("device", user); err != nil {
		return "", ReasonAuth, err.Error()
	}
	return s.authSecret(user, secret)
}

func writeJSON(w http.ResponseWriter, status int, body httpBody) {
	b, err := json.Marshal(body)
	if err != nil {
		b = []byte(`{"error":"encode response"}`)
		status = statusCannotWrite
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
