package intake_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/edge/intake/intaketest"
	"github.com/outpost-edge/outpost/protocol"
)

// Two events whose ids differ only in bytes that are not valid UTF-8 (or
// in a lone surrogate) must not become one: the second is refused naming
// its id, over MQTT 5, MQTT 3.1.1 and HTTP, and its bytes are kept exactly
// as sent in an intake.rejected record.
func TestInvalidTextRefusedNotRewritten(t *testing.T) {
	f := newFake(t)
	h := intaketest.MustStart(t, f, nil)
	first := []byte(`{"id":"coll-` + "\uFFFD" + `","type":"sale.note","ts":1}`)
	bad := [][]byte{
		[]byte(`{"id":"coll-` + "\xff" + `","type":"sale.note","ts":1}`),
		[]byte(`{"id":"coll-\ud800","type":"sale.note","ts":1}`),
	}
	rc5, _ := dialRaw(t, h.MQTTAddr(), 5, "text5", "dev-1", h.Secret("dev-1"))
	rc5.publish(evTopic("dev-1"), 1, 1, first)
	if pk := rc5.mustRead(nil); pk.ReasonCode != 0 {
		t.Fatalf("a valid id with U+FFFD in it: %#x %q", pk.ReasonCode, pk.Properties.ReasonString)
	}
	for i, b := range bad {
		rc5.publish(evTopic("dev-1"), 1, uint16(10+i), b)
		pk := rc5.mustRead(nil)
		if pk.FixedHeader.Type != packets.Puback || pk.ReasonCode != 0x99 || !strings.HasPrefix(pk.Properties.ReasonString, "id: ") {
			t.Fatalf("MQTT 5 %q: %#x %q, want 0x99 naming the id", b, pk.ReasonCode, pk.Properties.ReasonString)
		}
	}
	rc4, _ := dialRaw(t, h.MQTTAddr(), 4, "text4", "dev-2", h.Secret("dev-2"))
	rc4.publish(evTopic("dev-2"), 1, 1, bad[0])
	if pk := rc4.mustRead(nil); pk.FixedHeader.Type != packets.Puback { // bad input is acknowledged on 3.1.1
		t.Fatalf("MQTT 3.1.1: %+v", pk)
	}
	r := post(t, h, "dev-3", h.Secret("dev-3"), ctJSON, bad[1])
	if r.Status != 400 || len(r.Body.Errors) != 1 || r.Body.Errors[0].Field != "id" {
		t.Fatalf("HTTP: %d %+v", r.Status, r.Body)
	}

	if got := f.RecordsOfType("sale.note"); len(got) != 1 {
		t.Fatalf("%d sale.note records, want only the first event's", len(got))
	}
	kept := map[string]bool{}
	for _, rec := range f.RecordsOfType(protocol.TypeIntakeRejected) {
		var body struct {
			PayloadB64 string `json:"payload_b64"`
			Error      string `json:"error"`
		}
		j, err := rec.Event.Body.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(j, &body); err != nil {
			t.Fatal(err)
		}
		raw, err := base64.StdEncoding.DecodeString(body.PayloadB64)
		if err != nil {
			t.Fatal(err)
		}
		kept[string(raw)] = true
	}
	for _, b := range bad {
		if !kept[string(b)] {
			t.Errorf("refused payload %q not kept byte for byte", b)
		}
	}

}
