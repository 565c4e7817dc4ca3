package outbox

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

func testStream() protocol.Stream {
	return protocol.Stream{Edge: "edge-1", Epoch: protocol.Epoch{0x1b, 0xff, 0x01, 0x58, 0x20, 0x60, 0x70}}
}

// TestCodecMatchesEncode checks the template encoder against
// protocol.Record.Encode across the boundaries of CBOR's integer and length
// encodings.
func TestCodecMatchesEncode(t *testing.T) {
	c := newCodec(testStream())
	if c == nil {
		t.Fatal("no codec")
	}
	bodies := []protocol.Body{nil}
	for _, n := range []int{0, 1, 20, 23, 24, 255, 256, 1000, 30000} {
		b, err := protocol.NewBody(map[string]any{"s": strings.Repeat("x", n), "n": -n, "f": 1.5})
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, b)
	}
	for _, seq := range []uint64{1, 23, 24, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<64 - 1} {
		for _, ts := range []int64{0, 1, -1, -24, -25, -1 << 40, 1740819600000, 1<<63 - 1, -1 << 63} {
			for bi, body := range bodies {
				for _, id := range []string{"a", strings.Repeat("i", 23), strings.Repeat("i", 24), strings.Repeat("é", 32)} {
					for _, typ := range []string{"sale.completed", "telemetry.reading"} {
						e := Entry{Device: "dev-" + strings.Repeat("d", int(seq%60)), Event: protocol.Event{
							ID: id, Type: typ, TS: time.UnixMilli(ts), Body: body}}
						et := protocol.HLCTime(seq * 7)
						prev := protocol.HashBytes([]byte(id))
						want := encodeRecord(testStream(), &e, seq, et, prev)
						got := c.encode([]byte("prefix"), &e, classByte(protocol.ClassOf(typ)), seq, et, prev)
						if !bytes.HasPrefix(got, []byte("prefix")) || !bytes.Equal(got[6:], want) {
							t.Fatalf("seq %d ts %d body %d id %q type %s:\n got %x\nwant %x", seq, ts, bi, id, typ, got[6:], want)
						}
					}
				}
			}
		}
	}
}

// FuzzCodec checks, for any entry the outbox accepts, that the template
// encoder gives protocol's bytes and that those decode: a stored record
// always verifies.
func FuzzCodec(f *testing.F) {
	body, _ := protocol.NewBody(map[string]any{"sku": "A-1", "qty": 1000, "lines": []any{1, "x", nil, true, 2.5}})
	f.Add("dev-1", "ev-1", "sale.completed", int64(1740819600000), []byte(body), uint64(1), uint64(1<<40))
	f.Add("d", "\u00e9\u00e9", "telemetry.reading", int64(-5), []byte{0xa0}, uint64(300), uint64(7))
	f.Add("d", "x", "a.b", int64(0), []byte{0xa1, 0x61, 'a', 0xfb, 0, 0, 0, 0, 0, 0, 0, 0}, uint64(1<<33), uint64(0))
	f.Add("d", "x", "a.b", int64(0), []byte{0xa1, 0x61, 'a', 0xf0}, uint64(2), uint64(2))
	f.Add("d", "x", "a.b", int64(0), []byte{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}, uint64(2), uint64(2))
	c := newCodec(testStream())
	f.Fuzz(func(t *testing.T, device, id, typ string, ts int64, body []byte, seq, et uint64) {
		if seq == 0 {
			seq = 1
		}
		e := Entry{Device: device, Event: protocol.Event{ID: id, Type: typ, TS: time.UnixMilli(ts), Body: body}}
		if len(body) == 0 {
			e.Event.Body = nil
		}
		if checkEntry(&e) != nil {
			return
		}
		prev := protocol.HashBytes(body)
		got := c.encode(nil, &e, classByte(protocol.ClassOf(typ)), seq, protocol.HLCTime(et), prev)
		want := encodeRecord(testStream(), &e, seq, protocol.HLCTime(et), prev)
		if !bytes.Equal(got, want) {
			t.Fatalf("\n got %x\nwant %x", got, want)
		}
		if len(got) > protocol.MaxRecordBytes {
			return // refused by the size check
		}
		r, err := protocol.DecodeRecord(got)
		if err != nil {
			t.Fatalf("an accepted entry does not decode: %v", err)
		}
		if r.Seq != seq || r.ID != id || r.Device != device || !bytes.Equal(r.Body, e.Event.Body) {
			t.Fatalf("decoded %+v", r)
		}
	})
}

// TestCheckBodyNesting checks the nesting limit against the protocol's
// decoder: every body checkBody accepts makes a record that decodes.
func TestCheckBodyNesting(t *testing.T) {
	for depth := 1; depth <= protocol.MaxNesting+2; depth++ {
		// {"a": [[...[1]...]]} with depth containers in all.
		body := []byte{0xa1, 0x61, 'a'}
		for range depth - 1 {
			body = append(body, 0x81)
		}
		body = append(body, 0x01)
		err := checkBody(body)
		if depth <= bodyMaxNesting && err != nil {
			t.Fatalf("depth %d refused: %v", depth, err)
		}
		if err != nil {
			continue
		}
		e := Entry{Device: "d", Event: protocol.Event{ID: "x", Type: "a.b", TS: time.UnixMilli(1), Body: body}}
		if _, err := protocol.DecodeRecord(encodeRecord(testStream(), &e, 1, 1, protocol.Hash{})); err != nil {
			t.Fatalf("depth %d accepted, but the record does not decode: %v", depth, err)
		}
	}
}

func TestCheckBody(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
		ok   bool
	}{
		{"empty map", []byte{0xa0}, true},
		{"floats", []byte{0xa3, 0x61, 'h', 0xf9, 0x3c, 0x00, 0x61, 's', 0xfa, 0x3f, 0x80, 0, 0, 0x61, 'd', 0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0}, true},
		{"literals", []byte{0xa3, 0x61, 't', 0xf5, 0x61, 'f', 0xf4, 0x61, 'n', 0xf6}, true},
		{"negative", []byte{0xa1, 0x61, 'n', 0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, true},
		{"negative too large", []byte{0xa1, 0x61, 'n', 0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0}, false},
		{"half NaN", []byte{0xa1, 0x61, 'x', 0xf9, 0x7e, 0x00}, false},
		{"double infinity", []byte{0xa1, 0x61, 'x', 0xfb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0}, false},
		{"undefined", []byte{0xa1, 0x61, 'x', 0xf7}, false},
		{"byte string", []byte{0xa1, 0x61, 'x', 0x41, 0x00}, false},
		{"integer key", []byte{0xa1, 0x01, 0x01}, false},
		{"duplicate key", []byte{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}, false},
		{"indefinite map", []byte{0xbf, 0xff}, false},
		{"bad UTF-8", []byte{0xa1, 0x61, 0xff, 0x01}, false},
		{"an array", []byte{0x80}, false},
		{"trailing bytes", []byte{0xa0, 0xa0}, false},
		{"truncated", []byte{0xa1, 0x61}, false},
	} {
		err := checkBody(tc.body)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err == nil {
			e := Entry{Device: "d", Event: protocol.Event{ID: "x", Type: "a.b", TS: time.UnixMilli(1), Body: tc.body}}
			if _, err := protocol.DecodeRecord(encodeRecord(testStream(), &e, 1, 1, protocol.Hash{})); err != nil {
				t.Errorf("%s: accepted, but the record does not decode: %v", tc.name, err)
			}
		}
	}
}
