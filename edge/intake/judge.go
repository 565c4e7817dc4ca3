package intake

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/outpost-edge/outpost/protocol"
)

// itemError is one refused item (or, without Index, a refused payload) as
// devices see it in an HTTP 400 body, on the err topic and in a rejected
// record.
type itemError struct {
	Index *int   `json:"index,omitempty"`
	ID    string `json:"id,omitempty"`
	Field string `json:"field,omitempty"`
	Error string `json:"error"`
}

// verdict is what the intake made of one payload before appending it.
type verdict struct {
	events  []protocol.Event // the valid device events, in payload order
	rejects []protocol.Event // intake.rejected records to keep
	refusal Reason           // the payload's refusal as a whole, or ReasonNone
	err     string           // what was wrong with the payload as a whole
	items   []itemError      // what was wrong, per item
}

// Limits on what a rejected record holds, so that a device sending garbage
// fills the ledger slowly and each record stays far below MaxBodyBytes.
const (
	maxItemRejects = 32  // bad items of one batch kept one record each; more are kept as one record of the payload
	maxBodyItems   = 32  // item errors listed in one record or err message
	maxErrorText   = 256 // bytes of one error text in a record
	// maxRejectedPayloadCap keeps a record's body (the bytes as base64,
	// plus up to maxBodyItems errors) under protocol.MaxBodyBytes.
	maxRejectedPayloadCap = 16 << 10
)

// judge decodes a payload from device, received on where (the MQTT topic,
// or "POST /v1/events"), and builds the rejected records for what it refuses.
// topicOK is false when the device published outside its own ev topic.
func (s *Server) judge(device, where, transport string, payload []byte, topicOK bool) *verdict {
	v := &verdict{}
	if !topicOK {
		ev, _ := protocol.DeviceTopic(device, protocol.KindEvent)
		v.refusal = ReasonNotAuthorized
		v.err = fmt.Sprintf("topic %q is not this device's event topic; publish to %q", where, ev)
		v.items = []itemError{{Error: v.err}}
		v.rejects = s.rejects(device, where, transport, v.refusal, [][]byte{payload}, []*int{nil}, v.err, nil)
		return v
	}
	evs, ierrs, batch, err := protocol.DecodeEvents(payload)
	if err != nil {
		v.refusal = ReasonInvalid
		if errors.Is(err, protocol.ErrTooLarge) {
			v.refusal = ReasonTooLarge
		}
		v.err = err.Error()
		v.items = []itemError{{Error: v.err}}
		v.rejects = s.rejects(device, where, transport, v.refusal, [][]byte{payload}, []*int{nil}, v.err, nil)
		return v
	}
	v.events = evs
	if len(ierrs) == 0 {
		return v
	}
	for _, ie := range ierrs {
		v.items = append(v.items, toItemError(ie))
	}
	switch {
	case !batch:
		v.refusal = ReasonInvalid
		v.err = ierrs[0].Err.Error()
		v.items[0].Index = nil
	case len(evs) == 0:
		v.refusal = ReasonInvalid
		v.err = fmt.Sprintf("all %d events of the batch are invalid", len(ierrs))
	default:
		v.err = fmt.Sprintf("%d of %d events of the batch are invalid; the other %d were accepted", len(ierrs), len(ierrs)+len(evs), len(evs))
	}
	// Keep each bad item's own bytes when there are few; otherwise the
	// payload as a whole, so one batch makes a bounded number of records.
	if batch && len(ierrs) <= maxItemRejects {
		var items [][]byte
		var idx []*int
		for _, ie := range ierrs {
			items = append(items, ie.Raw)
			idx = append(idx, &ie.Index)
		}
		v.rejects = s.rejects(device, where, transport, ReasonInvalid, items, idx, "", v.items)
	} else {
		v.rejects = s.rejects(device, where, transport, ReasonInvalid, [][]byte{payload}, []*int{nil}, v.err, v.items)
	}
	return v
}

func toItemError(ie *protocol.ItemError) itemError {
	i := ie.Index
	out := itemError{Index: &i, ID: ie.ID, Error: ie.Err.Error()}
	var fe *protocol.FieldError
	if errors.As(ie.Err, &fe) {
		out.Field, out.Error = fe.Field, fe.Msg
	}
	return out
}

// rejectedBody is the body of an intake.rejected record.
type rejectedBody struct {
	Reason     string      `json:"reason"`    // Reason.String()
	Code       int         `json:"code"`      // the MQTT 5 reason code of the refusal
	Transport  string      `json:"transport"` // mqtt or http
	Topic      string      `json:"topic"`     // the MQTT topic, or "POST /v1/events"
	Size       int         `json:"size"`      // bytes of the refused payload or item
	Truncated  bool        `json:"truncated"` // payload_b64 holds only the first RejectedPayloadCap bytes
	PayloadB64 string      `json:"payload_b64"`
	Error      string      `json:"error,omitempty"`
	Index      *int        `json:"index,omitempty"` // the item's position in its batch
	Items      []itemError `json:"items,omitempty"` // the item errors, for a payload kept whole
	ItemsTotal int         `json:"items_total,omitempty"`
}

// rejects builds the intake.rejected records for refused raws (a payload,
// or the bad items of a batch, with their indexes), within the device's
// rate limit. Each record's id is a hash of where and the bytes, so a device
// repeating a refused payload makes no new record.
func (s *Server) rejects(device, where, transport string, r Reason, raws [][]byte, idx []*int, errText string, items []itemError) []protocol.Event {
	n := s.allowRejects(device, len(raws))
	s.metrics.RejectedDropped.Add(uint64(len(raws) - n))
	out := make([]protocol.Event, 0, n)
	now := s.Now().UTC().Truncate(time.Millisecond)
	for i := range n {
		raw := raws[i]
		b := rejectedBody{
			Reason:    r.String(),
			Code:      int(r.mqtt5().Code),
			Transport: transport,
			Topic:     where,
			Size:      len(raw),
			Index:     idx[i],
			Error:     clip(errText),
		}
		keep := raw
		if len(keep) > s.RejectedPayloadCap {
			keep, b.Truncated = keep[:s.RejectedPayloadCap], true
		}
		b.PayloadB64 = base64.StdEncoding.EncodeToString(keep)
		if idx[i] != nil {
			for _, it := range items {
				if it.Index != nil && *it.Index == *idx[i] {
					b.Error = clip(it.Error)
					if it.Field != "" {
						b.Error = clip(it.Field + ": " + it.Error)
					}
				}
			}
		} else if len(items) > 0 {
			b.ItemsTotal = len(items)
			for _, it := range items[:min(len(items), maxBodyItems)] {
				it.Error = clip(it.Error)
				b.Items = append(b.Items, it)
			}
		}
		body, err := protocol.NewBody(b)
		if err != nil { // cannot happen: the body is plain JSON data
			s.log.Error("build rejected record", "device", device, "err", err)
			s.metrics.RejectedDropped.Add(1)
			continue
		}
		h := sha256.New()
		h.Write([]byte(where))
		h.Write([]byte{0})
		h.Write(raw)
		out = append(out, protocol.Event{
			ID:   "rej-" + hex.EncodeToString(h.Sum(nil))[:40],
			Type: protocol.TypeIntakeRejected,
			TS:   now,
			Body: body,
		})
	}
	return out
}

// clip cuts s to maxErrorText bytes, at a character boundary.
func clip(s string) string {
	if len(s) <= maxErrorText {
		return s
	}
	n := maxErrorText
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// allowRejects returns how many of n rejected records device may still make
// in the current minute (RejectedPerMinute per device).
func (s *Server) allowRejects(device string, n int) int {
	now := s.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.rejectWindows[device]
	if w == nil || now.Sub(w.start) >= time.Minute || now.Before(w.start) {
		if len(s.rejectWindows) > 4096 { // forget stale windows, bounded by the number of devices
			clear(s.rejectWindows)
		}
		w = &rejectWindow{start: now}
		s.rejectWindows[device] = w
	}
	allowed := max(0, min(n, s.RejectedPerMinute-w.count))
	w.count += allowed
	return allowed
}

type rejectWindow struct {
	start time.Time
	count int
}
