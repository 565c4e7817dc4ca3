package protocol_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

func TestDecodeEventsJSONEqualsCBOR(t *testing.T) {
	j := `[{"id":"a","type":"sale.voided","ts":"2026-11-22T10:00:00Z","body":{"store":"s1","terminal":"t1","business_day":"2026-11-22","txn":"v1","voided_txn":"t1-1","currency":"USD","total":1000,"tenders":[{"type":"card","amount":1000}]}},
	       {"id":"b","type":"telemetry.reading","ts":1795340000000,"body":{"sensor":"s","metric":"m","value":-0.25,"nested":{"list":[1,2.5,"x",true,null]}}}]`
	evs, errs, batch, err := protocol.DecodeEvents([]byte(j))
	if err != nil || len(errs) > 0 || !batch || len(evs) != 2 {
		t.Fatalf("decode: %v %v %v %d", err, errs, batch, len(evs))
	}
	for _, ev := range evs {
		cb, err := ev.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		ev2, err := protocol.DecodeEvent(cb)
		if err != nil {
			t.Fatal(err)
		}
		if !eventsEqual(ev, ev2) {
			t.Fatalf("JSON %+v != CBOR %+v", ev, ev2)
		}
	}
	if !evs[0].TS.Equal(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("ts %v", evs[0].TS)
	}
	// Key order and white space do not matter: the body is canonical.
	a, _ := protocol.DecodeEvent([]byte(`{"id":"x","type":"a.b","ts":1,"body":{"z":1,"a":{"y":2,"b":3}}}`))
	b, _ := protocol.DecodeEvent([]byte(`{ "body" : {"a":{"b":3,"y":2.0},"z":1}, "ts":1, "type":"a.b", "id":"x" }`))
	if !eventsEqual(a, b) {
		t.Fatal("key order changed the body")
	}
}

func TestDecodeEventsRefusals(t *testing.T) {
	cases := []struct {
		name, in, field string
	}{
		{"missing id", `{"type":"a.b","ts":1}`, "id"},
		{"long id", `{"id":"` + strings.Repeat("x", 65) + `","type":"a.b","ts":1}`, "id"},
		{"missing type", `{"id":"a","ts":1}`, "type"},
		{"upper-case type", `{"id":"a","type":"Sale.Completed","ts":1}`, "type"},
		{"undotted type", `{"id":"a","type":"sale","ts":1}`, "type"},
		{"reserved type", `{"id":"a","type":"intake.rejected","ts":1}`, "type"},
		{"reserved ota type", `{"id":"a","type":"ota.committed","ts":1}`, "type"},
		{"missing ts", `{"id":"a","type":"a.b"}`, "ts"},
		{"negative ts", `{"id":"a","type":"a.b","ts":-5}`, "ts"},
		{"bad ts string", `{"id":"a","type":"a.b","ts":"yesterday"}`, "ts"},
		{"unknown field", `{"id":"a","type":"a.b","ts":1,"device":"d"}`, "device"},
		{"body not a map", `{"id":"a","type":"a.b","ts":1,"body":[1]}`, "body"},
		{"duplicate key", `{"id":"a","type":"a.b","ts":1,"body":{"k":1,"k":2}}`, "body.k"},
		{"bad sale arithmetic", `{"id":"a","type":"sale.completed","ts":1,"body":{"store":"s","terminal":"t","business_day":"2026-11-22","txn":"1","currency":"EUR","lines":[{"sku":"x","qty":1000,"unit_price":100,"tax":0,"amount":90}],"subtotal":90,"tax":0,"total":90,"tenders":[{"type":"cash","amount":90}]}}`, "body.lines[0].amount"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, errs, _, err := protocol.DecodeEvents([]byte(c.in))
			if err == nil && len(errs) == 1 {
				err = errs[0].Err
			}
			var fe *protocol.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("want a FieldError for %s, got %v", c.field, err)
			}
			if fe.Field != c.field {
				t.Fatalf("field %q, want %q (%v)", fe.Field, c.field, err)
			}
			if !errors.Is(err, protocol.ErrMalformed) {
				t.Fatalf("not ErrMalformed: %v", err)
			}
		})
	}
}

func TestDecodeEventsLimits(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 20) + "1" + strings.Repeat("}", 20)
	_, errs, _, err := protocol.DecodeEvents([]byte(`{"id":"a","type":"a.b","ts":1,"body":` + deep + `}`))
	if err == nil && len(errs) == 0 {
		t.Fatal("nesting of 20 accepted")
	}
	big := `{"id":"a","type":"a.b","ts":1,"body":{"s":"` + strings.Repeat("x", protocol.MaxEventBytes) + `"}}`
	if _, _, _, err := protocol.DecodeEvents([]byte(big)); !errors.Is(err, protocol.ErrTooLarge) {
		t.Fatalf("oversized event: %v", err)
	}
	many := "[" + strings.Repeat(`{"id":"a","type":"a.b","ts":1},`, protocol.MaxBatchEvents) + `{"id":"a","type":"a.b","ts":1}]`
	if _, _, _, err := protocol.DecodeEvents([]byte(many)); !errors.Is(err, protocol.ErrTooLarge) {
		t.Fatalf("batch over the count limit: %v", err)
	}
	for _, in := range []string{"", "   ", "hello", "\x00"} {
		if _, _, _, err := protocol.DecodeEvents([]byte(in)); !errors.Is(err, protocol.ErrMalformed) {
			t.Fatalf("%q: %v", in, err)
		}
	}
	// CBOR with a byte string in the body is refused: bodies are JSON-shaped.
	cb := []byte{0xa4, 0x62, 'i', 'd', 0x61, 'a', 0x64, 't', 'y', 'p', 'e', 0x63, 'a', '.', 'b', 0x62, 't', 's', 0x01,
		0x64, 'b', 'o', 'd', 'y', 0xa1, 0x61, 'k', 0x41, 0x00}
	_, errs, _, err = protocol.DecodeEvents(cb)
	if err != nil || len(errs) != 1 || !strings.Contains(errs[0].Error(), "byte strings") {
		t.Fatalf("byte string body: %v %v", err, errs)
	}
}

func TestBatchPerItemErrors(t *testing.T) {
	evs, errs, batch, err := protocol.DecodeEvents([]byte(`[{"id":"ok1","type":"a.b","ts":1},{"id":"bad","type":"B","ts":1},{"id":"ok2","type":"a.b","ts":2}]`))
	if err != nil || !batch {
		t.Fatal(err)
	}
	if len(evs) != 2 || len(errs) != 1 || errs[0].Index != 1 || errs[0].ID != "bad" {
		t.Fatalf("events %d, errs %+v", len(evs), errs)
	}
	if !strings.Contains(errs[0].Error(), `event [1] (id "bad"): type:`) {
		t.Fatalf("message %q", errs[0].Error())
	}
}

func TestHLCNeverGoesBack(t *testing.T) {
	wall := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := protocol.HLC{Now: func() time.Time { return wall }}
	last := c.Next()
	steps := []time.Duration{time.Second, -time.Hour, 0, 0, time.Millisecond, -24 * time.Hour, 2 * time.Hour}
	for _, d := range steps {
		wall = wall.Add(d)
		n := c.Next()
		if n <= last {
			t.Fatalf("clock went from %d to %d after a wall step of %v", last, n, d)
		}
		last = n
	}
	// After a restart the clock continues past the last stored reading.
	c2 := protocol.HLC{Now: func() time.Time { return wall.Add(-48 * time.Hour) }}
	c2.Observe(last)
	if n := c2.Next(); n <= last {
		t.Fatalf("restarted clock %d not past %d", n, last)
	}
	if got := protocol.HLCFromTime(wall).Time(); !got.Equal(wall) {
		t.Fatalf("physical part %v, want %v", got, wall)
	}
}

func TestTopics(t *testing.T) {
	tp, err := protocol.DeviceTopic("till-1", protocol.KindEvent)
	if err != nil || tp != "outpost/v1/dev/till-1/ev" {
		t.Fatal(tp, err)
	}
	sub, err := protocol.EdgeSubject("edge_7", protocol.KindSegment)
	if err != nil || sub != "outpost.v1.edge.edge_7.seg" {
		t.Fatal(sub, err)
	}
	f, _ := protocol.SharedSegmentFilter("ingest")
	if f != "$share/ingest/outpost/v1/edge/+/seg" {
		t.Fatal(f)
	}
	p, err := protocol.ParseTopic("outpost/v1/edge/e1/rcpt")
	if err != nil || p != (protocol.Topic{Scope: protocol.ScopeEdge, ID: "e1", Kind: "rcpt"}) {
		t.Fatal(p, err)
	}
	for _, bad := range []string{"outpost/v1/dev/+/ev", "outpost/v1/dev/#/ev", "outpost/v1/dev/a.b/ev", "outpost/v1/dev//ev",
		"outpost/v1/dev/d/seg", "outpost/v1/edge/e/ev", "outpost/v2/dev/d/ev", "outpost/v1/dev/d/ev/x", "outpost/v1/dev/a*b/ev"} {
		if _, err := protocol.ParseTopic(bad); err == nil {
			t.Errorf("ParseTopic(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "a/b", "a.b", "a b", "*", ">", "a:b", strings.Repeat("x", 65)} {
		if _, err := protocol.DeviceTopic(bad, protocol.KindEvent); err == nil {
			t.Errorf("device id %q accepted", bad)
		}
	}
}

func TestSegmentLimits(t *testing.T) {
	s := stream(t, testStream, 5).SignedBy(mustSigner(t, edgeKeyName))
	seg := s.Segment(1, 5)
	for _, z := range []bool{false, true} {
		b, err := protocol.EncodeSegment(seg, z)
		if err != nil {
			t.Fatal(err)
		}
		got, err := protocol.DecodeSegment(b)
		if err != nil || got.Last != 5 || len(got.Records) != 5 {
			t.Fatalf("z=%v: %v", z, err)
		}
	}
	bad := *seg
	bad.Last = 6
	if _, err := protocol.EncodeSegment(&bad, false); err == nil {
		t.Fatal("first/last not matching the records accepted")
	}
	// A zstd bomb: a small frame that inflates past the limit is refused.
	huge := *seg
	filler := make([]byte, protocol.MaxRecordBytes)
	huge.Records = nil
	for i := 0; i < 30; i++ {
		huge.Records = append(huge.Records, filler)
	}
	huge.Last = huge.First + 29
	if _, err := protocol.EncodeSegment(&huge, true); !errors.Is(err, protocol.ErrTooLarge) {
		t.Fatalf("oversized segment encoded: %v", err)
	}
}
