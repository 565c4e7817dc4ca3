package protocol_test

import (
	"encoding/base64"
	"strconv"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Each decoder of outside bytes has a fuzz target. The seed corpus lives in
// testdata/fuzz/<Target>; `make fuzz` runs each target briefly. The targets
// check that decoding never panics and that whatever decodes re-encodes to
// something that decodes again to the same thing.

func FuzzDecodeEvents(f *testing.F) {
	f.Add([]byte(`{"id":"a","type":"x.y","ts":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, _, _, err := protocol.DecodeEvents(b)
		if err != nil {
			return
		}
		for _, ev := range evs {
			cb, err := ev.MarshalCBOR()
			if err != nil {
				t.Fatalf("re-encode CBOR: %v", err)
			}
			ev2, err := protocol.DecodeEvent(cb)
			if err != nil {
				t.Fatalf("decode re-encoded CBOR: %v", err)
			}
			if !eventsEqual(ev, ev2) {
				t.Fatalf("CBOR round trip changed the event")
			}
			jb, err := ev.MarshalJSON()
			if err != nil {
				t.Fatalf("re-encode JSON: %v", err)
			}
			ev3, err := protocol.DecodeEvent(jb)
			if err != nil {
				t.Fatalf("decode re-encoded JSON %s: %v", jb, err)
			}
			if !eventsEqual(ev, ev3) {
				t.Fatalf("JSON round trip changed the event: %s", jb)
			}
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeRecord(b)
		if err != nil {
			return
		}
		if _, err := protocol.DecodeRecord(r.Encode()); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if _, err := r.JSON(b); err != nil {
			t.Fatalf("JSON view: %v", err)
		}
	})
}

func FuzzDecodeSegment(f *testing.F) {
	keys := protocol.NewKeyMap(mustSigner(f, edgeKeyName).Public())
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := protocol.DecodeSegment(b)
		if err != nil {
			return
		}
		c, err := protocol.VerifyCheckpoint(s.Checkpoint, keys)
		if err != nil {
			return
		}
		want := protocol.ChainState{Stream: c.Stream(), Seq: c.Seq, Head: c.Head}
		_, _, _ = protocol.VerifyChain(protocol.ChainState{Stream: s.Stream(), Seq: s.First - 1}, s.Records, &want)
	})
}

func FuzzVerifyReply(f *testing.F) {
	keys := protocol.NewKeyMap(mustSigner(f, cloudKeyName).Public())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.VerifyReply(b, keys)
		if err == nil && (r.Receipt == nil) == (r.Nack == nil) {
			t.Fatalf("a verified reply is exactly one of receipt or nack: %+v", r)
		}
	})
}

func FuzzVerifyCheckpoint(f *testing.F) {
	keys := protocol.NewKeyMap(mustSigner(f, edgeKeyName).Public())
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = protocol.VerifyCheckpoint(b, keys)
	})
}

func FuzzDecodeHello(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := protocol.DecodeHello(b)
		if err != nil {
			return
		}
		if _, err := protocol.DecodeHello(protocol.EncodeHello(h)); err != nil {
			t.Fatalf("re-encoded hello does not decode: %v", err)
		}
	})
}

func FuzzParseTopic(f *testing.F) {
	f.Add("outpost/v1/dev/till-1/ev")
	f.Add("outpost/v1/edge/e1/seg")
	f.Add("outpost.v1.edge.e1.rcpt")
	f.Fuzz(func(t *testing.T, s string) {
		if tp, err := protocol.ParseTopic(s); err == nil && tp.MQTT() != s {
			t.Fatalf("ParseTopic(%q) round trips to %q", s, tp.MQTT())
		}
		if tp, err := protocol.ParseSubject(s); err == nil && tp.NATS() != s {
			t.Fatalf("ParseSubject(%q) round trips to %q", s, tp.NATS())
		}
	})
}

func FuzzParseBrokerToken(f *testing.F) {
	f.Add([]byte("v2.0b64e89c4e3f7edc.1.AAAA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := protocol.ParseBrokerToken(string(b))
		if err != nil {
			return
		}
		// One token has one spelling: what parses is the canonical form.
		again := "v2." + string(tok.KID) + "." + strconv.FormatUint(tok.Counter, 10) + "." + base64.RawURLEncoding.EncodeToString(tok.Signature)
		if again != string(b) {
			t.Fatalf("%q parsed, but its canonical form is %q", b, again)
		}
	})
}

func FuzzVerifyBrokerTokenV1(f *testing.F) {
	f.Add([]byte("v1.0b64e89c4e3f7edc.1795340000000.AAAA"))
	keys := protocol.NewKeyMap(make([]byte, 32))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = protocol.VerifyBrokerTokenV1("edge-001", string(b), keys, time.UnixMilli(1795340000000))
	})
}
