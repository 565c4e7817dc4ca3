package protocol_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/outpost-edge/outpost/protocol"
)

// cborText is a CBOR text string head and its bytes as given, valid UTF-8
// or not (a device's encoder may send anything).
func cborText(s string) []byte {
	if len(s) >= 24 {
		panic("test helper: short strings only")
	}
	return append([]byte{0x60 | byte(len(s))}, s...)
}

// cborEvent encodes {"id": id, "type": typ, "ts": 1, "body": {key: val}}
// with val already encoded.
func cborEvent(id, typ, key string, val []byte) []byte {
	b := []byte{0xa4}
	b = append(b, cborText("id")...)
	b = append(b, cborText(id)...)
	b = append(b, cborText("type")...)
	b = append(b, cborText(typ)...)
	b = append(b, cborText("ts")...)
	b = append(b, 0x01)
	b = append(b, cborText("body")...)
	b = append(b, 0xa1)
	b = append(b, cborText(key)...)
	return append(b, val...)
}

// decodeOneRefusal decodes in, wants it refused as bad input naming field,
// and wants no decoded event at all (none rewritten to U+FFFD).
func decodeOneRefusal(t *testing.T, in []byte, field, msg string) {
	t.Helper()
	evs, errs, _, err := protocol.DecodeEvents(in)
	for _, ev := range evs {
		t.Errorf("decoded an event %q of type %q (U+FFFD rewrite: %v)", ev.ID, ev.Type, strings.ContainsRune(ev.ID+ev.Type, utf8.RuneError))
	}
	if err == nil && len(errs) == 1 {
		err = errs[0].Err
	}
	var fe *protocol.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("want a FieldError naming %s, got %v (items %v)", field, err, errs)
	}
	if fe.Field != field || !strings.Contains(fe.Msg, msg) {
		t.Fatalf("got %q, want field %q and a message with %q", err, field, msg)
	}
	if !errors.Is(err, protocol.ErrMalformed) {
		t.Fatalf("not ErrMalformed: %v", err)
	}
	if strings.Contains(err.Error(), "cbor: cbor:") {
		t.Fatalf("doubled prefix: %v", err)
	}
}

func TestDecodeEventsRefusesInvalidText(t *testing.T) {
	cases := []struct {
		name, in, field, msg string
	}{
		{"json id invalid utf-8", `{"id":"coll-` + "\xff" + `","type":"a.b","ts":1}`, "id", "not valid UTF-8"},
		{"json type invalid utf-8", `{"id":"a","type":"a.b` + "\xc3" + `","ts":1}`, "type", "not valid UTF-8"},
		{"json body value invalid utf-8", `{"id":"a","type":"a.b","ts":1,"body":{"k":"v` + "\xed\xa0\x80" + `"}}`, "body.k", "not valid UTF-8"},
		{"json body key invalid utf-8", `{"id":"a","type":"a.b","ts":1,"body":{"k` + "\xfe" + `":1}}`, "body", "key"},
		{"json nested value invalid utf-8", `{"id":"a","type":"a.b","ts":1,"body":{"a":[1,{"b":"` + "\x80" + `"}]}}`, "body.a[1].b", "not valid UTF-8"},
		{"json id lone high surrogate", `{"id":"coll-\ud800","type":"a.b","ts":1}`, "id", "surrogate"},
		{"json id lone low surrogate", `{"id":"coll-\udc00x","type":"a.b","ts":1}`, "id", "surrogate"},
		{"json high surrogate then not low", `{"id":"a\ud800\u0041","type":"a.b","ts":1}`, "id", "surrogate"},
		{"json body value lone surrogate", `{"id":"a","type":"a.b","ts":1,"body":{"k":"\uDBFF"}}`, "body.k", "surrogate"},
		{"json body key lone surrogate", `{"id":"a","type":"a.b","ts":1,"body":{"\ud834":1}}`, "body", "surrogate"},
		{"json ts string invalid utf-8", `{"id":"a","type":"a.b","ts":"2026` + "\xff" + `"}`, "ts", "not valid UTF-8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { decodeOneRefusal(t, []byte(c.in), c.field, c.msg) })
	}
	t.Run("json valid surrogate pair accepted", func(t *testing.T) {
		ev, err := protocol.DecodeEvent([]byte(`{"id":"a\ud834\udd1e","type":"a.b","ts":1}`))
		if err != nil || ev.ID != "a\U0001D11E" {
			t.Fatalf("%q %v", ev.ID, err)
		}
	})
	cbor := []struct {
		name  string
		in    []byte
		field string
	}{
		{"cbor id invalid utf-8", cborEvent("coll-\xff", "a.b", "k", []byte{0x01}), "id"},
		{"cbor type invalid utf-8", cborEvent("a", "a.b\xc3", "k", []byte{0x01}), "type"},
		{"cbor body key invalid utf-8", cborEvent("a", "a.b", "k\xfe", []byte{0x01}), "body"},
		{"cbor body value invalid utf-8", cborEvent("a", "a.b", "k", cborText("v\xed\xa0\x80")), "body.k"},
	}
	for _, c := range cbor {
		t.Run(c.name, func(t *testing.T) { decodeOneRefusal(t, c.in, c.field, "UTF-8") })
	}
	t.Run("batch refuses only the bad item", func(t *testing.T) {
		in := `[{"id":"ok","type":"a.b","ts":1},{"id":"coll-` + "\xff" + `","type":"a.b","ts":1}]`
		evs, errs, batch, err := protocol.DecodeEvents([]byte(in))
		if err != nil || !batch || len(evs) != 1 || len(errs) != 1 || errs[0].Index != 1 {
			t.Fatalf("evs %d errs %v err %v", len(evs), errs, err)
		}
		if got, want := string(errs[0].Raw), `{"id":"coll-`+"\xff"+`","type":"a.b","ts":1}`; got != want {
			t.Fatalf("raw item %q, want %q", got, want)
		}
	})
}

func TestDecodeEventsRefusesCBORUndefined(t *testing.T) {
	decodeOneRefusal(t, cborEvent("a", "a.b", "k", []byte{0xf7}), "body.k", "undefined")
	// undefined as the event's ts, where null-like values used to slip in
	b := []byte{0xa3}
	b = append(b, cborText("id")...)
	b = append(b, cborText("a")...)
	b = append(b, cborText("type")...)
	b = append(b, cborText("a.b")...)
	b = append(b, cborText("ts")...)
	b = append(b, 0xf7)
	decodeOneRefusal(t, b, "ts", "undefined")
}

func TestDecodeEventsRefusesIntegersBeyond64Bits(t *testing.T) {
	for _, n := range []string{"123456789012345678901234567890", "18446744073709551616", "-9223372036854775809"} {
		t.Run(n, func(t *testing.T) {
			decodeOneRefusal(t, []byte(`{"id":"a","type":"a.b","ts":1,"body":{"n":`+n+`}}`), "body.n", "64-bit")
		})
	}
	t.Run("extremes accepted exactly", func(t *testing.T) {
		ev, err := protocol.DecodeEvent([]byte(`{"id":"a","type":"a.b","ts":1,"body":{"max":18446744073709551615,"min":-9223372036854775808,"f":1e30}}`))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := ev.Body.Decode(&m); err != nil {
			t.Fatal(err)
		}
		if m["max"] != uint64(18446744073709551615) || m["min"] != int64(-9223372036854775808) || m["f"] != 1e30 {
			t.Fatalf("%#v", m)
		}
	})
}

// An item refused for its text still names its event when its id is good.
func TestRefusedItemKeepsItsID(t *testing.T) {
	for _, in := range [][]byte{
		[]byte(`[{"id":"ok-1","type":"a.b","ts":1,"body":{"k":"` + "\xff" + `"}},{"id":"bad-` + "\xff" + `","type":"a.b","ts":1}]`),
		append([]byte{0x82}, append(cborEvent("ok-1", "a.b", "k", cborText("\xff")), cborEvent("bad-\xff", "a.b", "k", []byte{0x01})...)...),
	} {
		_, errs, _, err := protocol.DecodeEvents(in)
		if err != nil || len(errs) != 2 {
			t.Fatalf("%v %v", err, errs)
		}
		if errs[0].ID != "ok-1" || errs[1].ID != "" {
			t.Fatalf("ids %q and %q, want ok-1 and none (an id that is not valid is not repeated)", errs[0].ID, errs[1].ID)
		}
	}
}
