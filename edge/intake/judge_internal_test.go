package intake

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
	"github.com/outpost-edge/outpost/protocol"
)

func newJudge() *Server {
	s := New(nil, nil)
	s.log = s.Logger
	s.RejectedPayloadCap = maxRejectedPayloadCap
	s.RejectedPerMinute = 1 << 30
	s.Now = func() time.Time { return time.UnixMilli(1767225600000) }
	return s
}

// FuzzJudge feeds device payloads through the intake's decoding and
// rejected-record building: it must not panic, must account for every
// item, and every record it builds must be a valid event within limits.
func FuzzJudge(f *testing.F) {
	for _, seed := range []string{
		`{"id":"a","type":"sale.note","ts":1}`,
		`[{"id":"a","type":"sale.note","ts":1},{"id":"b","type":"BAD","ts":1},{"id":"c"}]`,
		`[]`, `[1,2,3]`, `{`, `"x"`, ``, `{"id":"a","type":"intake.rejected","ts":1}`,
		`[{"id":"a","type":"sale.note","ts":"2026-01-01T00:00:00Z","body":{"x":[1,2,{"y":null}]}}]`,
	} {
		f.Add([]byte(seed), true)
	}
	cb, _ := cbor.Marshal([]any{map[string]any{"id": "c1", "type": "sale.note", "ts": 1}, map[string]any{"id": 5}})
	f.Add(cb, true)
	f.Add([]byte(`{"id":"a","type":"sale.note","ts":1}`), false)
	s := newJudge()
	f.Fuzz(func(t *testing.T, payload []byte, topicOK bool) {
		v := s.judge("dev-1", "outpost/v1/dev/dev-1/ev", "mqtt", payload, topicOK)
		if v.refusal == ReasonNone && len(v.events) == 0 {
			t.Fatalf("accepted with no event")
		}
		if v.refusal != ReasonNone && len(v.events) > 0 && v.refusal != ReasonInvalid {
			t.Fatalf("refused (%s) with events", v.refusal)
		}
		if (v.refusal != ReasonNone || len(v.items) > 0) && len(v.rejects) == 0 {
			t.Fatalf("refusal kept no record")
		}
		if len(v.rejects) > maxItemRejects {
			t.Fatalf("%d rejected records for one payload", len(v.rejects))
		}
		for _, ev := range v.events {
			if err := ev.Validate(); err != nil || isReserved(ev.Type) {
				t.Fatalf("accepted invalid event %+v: %v", ev, err)
			}
		}
		for _, r := range v.rejects {
			if err := r.Validate(); err != nil {
				t.Fatalf("rejected record is not a valid event: %v", err)
			}
			if r.Type != protocol.TypeIntakeRejected || len(r.Body) > protocol.MaxBodyBytes {
				t.Fatalf("rejected record %s: %d body bytes", r.Type, len(r.Body))
			}
		}
		// The same payload makes the same records (ids), so a repeat
		// deduplicates.
		again := s.judge("dev-1", "outpost/v1/dev/dev-1/ev", "mqtt", bytes.Clone(payload), topicOK)
		for i := range v.rejects {
			if again.rejects[i].ID != v.rejects[i].ID {
				t.Fatalf("rejected record ids differ for the same payload")
			}
		}
	})
}

// clip shortens error text for records and err messages without cutting a
// UTF-8 character in two (the record's text must stay valid UTF-8).
func TestClipKeepsUTF8(t *testing.T) {
	for pad := range 4 {
		s := strings.Repeat("x", maxErrorText-pad) + strings.Repeat("é€😀", 40)
		got := clip(s)
		if !utf8.ValidString(got) {
			t.Fatalf("pad %d: clip cut a character: %q", pad, got[len(got)-8:])
		}
		if !strings.HasSuffix(got, "…") || len(got) > maxErrorText+len("…") {
			t.Fatalf("pad %d: %d bytes, %q", pad, len(got), got[len(got)-8:])
		}
	}
	if got := clip("short é"); got != "short é" {
		t.Fatalf("%q", got)
	}
}

func isReserved(t string) bool { _, ok := protocol.ReservedType(t); return ok }
