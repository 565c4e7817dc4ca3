package protocol

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Hand-built records for the differential test of the fast path: each is
// a record map written item by item, so that a case can be what no encoder
// of ours writes (a non-shortest head, an indefinite length, a tag, a
// duplicate key, bytes that are not UTF-8, a value at or past a limit).

// cb builds CBOR by hand.
type cb []byte

// head appends a head in its shortest form.
func (b cb) head(major byte, n uint64) cb {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= 0xff:
		return append(b, m|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, m|27), n)
}

func (b cb) text(s string) cb  { return append(b.head(3, uint64(len(s))), s...) }
func (b cb) bytes(s []byte) cb { return append(b.head(2, uint64(len(s))), s...) }
func (b cb) raw(r ...byte) cb  { return append(b, r...) }

// kv is one pair of a hand-built record: the key's and the value's bytes.
type kv struct{ k, v []byte }

// craftedBase is a valid record's pairs, in canonical order, with body.
func craftedBase(body []byte) []kv {
	epoch := bytes.Repeat([]byte{7}, 16)
	prev := bytes.Repeat([]byte{3}, 32)
	pairs := []kv{
		{cb{}.text("v"), cb{}.head(0, 1)},
		{cb{}.text("id"), cb{}.text("ev-1")},
		{cb{}.text("ts"), cb{}.head(0, 1764000000000)},
		{cb{}.text("seq"), cb{}.head(0, 5)},
		{cb{}.text("body"), body},
		{cb{}.text("edge"), cb{}.text("edge-1")},
		{cb{}.text("prev"), cb{}.bytes(prev)},
		{cb{}.text("type"), cb{}.text("sale.completed")},
		{cb{}.text("class"), cb{}.text("ledger")},
		{cb{}.text("epoch"), cb{}.bytes(epoch)},
		{cb{}.text("device"), cb{}.text("till-1")},
		{cb{}.text("edge_time"), cb{}.head(0, 1764000000000<<16|2)},
	}
	if body == nil {
		pairs = append(pairs[:4], pairs[5:]...)
	}
	return pairs
}

// craftedMap encodes pairs as a map with a shortest head.
func craftedMap(pairs []kv) []byte {
	b := cb{}.head(5, uint64(len(pairs)))
	for _, p := range pairs {
		b = append(append(b, p.k...), p.v...)
	}
	return b
}

// withValue returns base with key's value replaced by v (or removed when v
// is nil).
func withValue(base []kv, key string, v []byte) []kv {
	var out []kv
	for _, p := range base {
		if string(p.k) == string(cb{}.text(key)) {
			if v == nil {
				continue
			}
			p.v = v
		}
		out = append(out, p)
	}
	return out
}

// nestedArrays is a body {"a": [[...[1]...]]} with depth arrays.
func nestedArrays(depth int) []byte {
	b := cb{}.head(5, 1).text("a")
	for range depth {
		b = b.head(4, 1)
	}
	return b.head(0, 1)
}

// craftedRecords are the hand-built cases, by name.
func craftedRecords() map[string][]byte {
	body := cb{}.head(5, 2).text("n").head(0, 7).text("s").text("x")
	base := craftedBase(body)
	out := map[string][]byte{
		"valid":                 craftedMap(base),
		"valid no body":         craftedMap(craftedBase(nil)),
		"keys reversed":         craftedMap(reversed(base)),
		"outer head long":       append(cb{}.raw(0xb8, byte(len(base))), craftedMap(base)[1:]...),
		"outer indefinite":      append(append(cb{}.raw(0xbf), craftedMap(base)[1:]...), 0xff),
		"two records":           append(craftedMap(base), craftedMap(base)...),
		"key head long":         craftedMap(append([]kv{{cb{}.raw(0x78, 1, 'v'), cb{}.head(0, 1)}}, base[1:]...)),
		"key byte string":       craftedMap(append([]kv{{cb{}.bytes([]byte("v")), cb{}.head(0, 1)}}, base[1:]...)),
		"key twice other case":  craftedMap(append(base, kv{cb{}.text("V"), cb{}.head(0, 1)})),
		"key twice same value":  craftedMap(append(base, kv{cb{}.text("seq"), cb{}.head(0, 5)})),
		"key 14":                craftedMap(append(base, kv{cb{}.text("shed"), cb{}.bytes(make([]byte, 32))}, kv{cb{}.text("zz"), cb{}.head(0, 1)})),
		"no ts":                 craftedMap(withValue(base, "ts", nil)),
		"no edge_time":          craftedMap(withValue(base, "edge_time", nil)),
		"no prev":               craftedMap(withValue(base, "prev", nil)),
		"no class":              craftedMap(withValue(base, "class", nil)),
		"seq max":               craftedMap(withValue(base, "seq", cb{}.head(0, 1<<64-1))),
		"seq long head":         craftedMap(withValue(base, "seq", cb{}.raw(0x1b, 0, 0, 0, 0, 0, 0, 0, 5))),
		"seq negative":          craftedMap(withValue(base, "seq", cb{}.head(1, 4))),
		"seq float":             craftedMap(withValue(base, "seq", cb{}.raw(0xf9, 0x45, 0x00))),
		"seq bignum tag":        craftedMap(withValue(base, "seq", cb{}.raw(0xc2, 0x41, 5))),
		"v float":               craftedMap(withValue(base, "v", cb{}.raw(0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0))),
		"ts max int64":          craftedMap(withValue(base, "ts", cb{}.head(0, 1<<63-1))),
		"ts over int64":         craftedMap(withValue(base, "ts", cb{}.head(0, 1<<63))),
		"ts max":                craftedMap(withValue(base, "ts", cb{}.head(0, maxTSms))),
		"ts past max":           craftedMap(withValue(base, "ts", cb{}.head(0, maxTSms+1))),
		"ts zero":               craftedMap(withValue(base, "ts", cb{}.head(0, 0))),
		"ts -1":                 craftedMap(withValue(base, "ts", cb{}.head(1, 0))),
		"ts float":              craftedMap(withValue(base, "ts", cb{}.raw(0xfb, 0x42, 0x79, 0xaf, 0x3e, 0x1c, 0x40, 0, 0))),
		"edge_time max":         craftedMap(withValue(base, "edge_time", cb{}.head(0, maxTSms<<16|0xffff))),
		"edge_time past max":    craftedMap(withValue(base, "edge_time", cb{}.head(0, (maxTSms+1)<<16))),
		"edge_time uint64 max":  craftedMap(withValue(base, "edge_time", cb{}.head(0, 1<<64-1))),
		"edge_time negative":    craftedMap(withValue(base, "edge_time", cb{}.head(1, 0))),
		"epoch 15":              craftedMap(withValue(base, "epoch", cb{}.bytes(bytes.Repeat([]byte{7}, 15)))),
		"epoch 17":              craftedMap(withValue(base, "epoch", cb{}.bytes(bytes.Repeat([]byte{7}, 17)))),
		"epoch zero":            craftedMap(withValue(base, "epoch", cb{}.bytes(make([]byte, 16)))),
		"epoch text":            craftedMap(withValue(base, "epoch", cb{}.text(strings.Repeat("7", 16)))),
		"epoch indefinite":      craftedMap(withValue(base, "epoch", cb{}.raw(0x5f).bytes(bytes.Repeat([]byte{7}, 8)).bytes(bytes.Repeat([]byte{7}, 8)).raw(0xff))),
		"epoch array":           craftedMap(withValue(base, "epoch", append(cb{}.head(4, 16), bytes.Repeat([]byte{7}, 16)...))),
		"prev 31":               craftedMap(withValue(base, "prev", cb{}.bytes(make([]byte, 31)))),
		"prev 33":               craftedMap(withValue(base, "prev", cb{}.bytes(make([]byte, 33)))),
		"prev null":             craftedMap(withValue(base, "prev", cb{}.raw(0xf6))),
		"shed with body":        craftedMap(append(base, kv{cb{}.text("shed"), cb{}.bytes(make([]byte, 32))})),
		"shed":                  craftedMap(append(craftedBase(nil), kv{cb{}.text("shed"), cb{}.bytes(make([]byte, 32))})),
		"shed null":             craftedMap(append(craftedBase(nil), kv{cb{}.text("shed"), cb{}.raw(0xf6)})),
		"shed 31":               craftedMap(append(craftedBase(nil), kv{cb{}.text("shed"), cb{}.bytes(make([]byte, 31))})),
		"edge not utf8":         craftedMap(withValue(base, "edge", cb{}.text("edge\xff"))),
		"edge bytes":            craftedMap(withValue(base, "edge", cb{}.bytes([]byte("edge-1")))),
		"edge nul":              craftedMap(withValue(base, "edge", cb{}.text("edge\x00"))),
		"edge indefinite":       craftedMap(withValue(base, "edge", cb{}.raw(0x7f).text("edge").text("-1").raw(0xff))),
		"id nul":                craftedMap(withValue(base, "id", cb{}.text("ev\x00"))),
		"id not utf8":           craftedMap(withValue(base, "id", cb{}.text("ev\xc3"))),
		"id surrogate":          craftedMap(withValue(base, "id", cb{}.text("ev\xed\xa0\x80"))),
		"id 64":                 craftedMap(withValue(base, "id", cb{}.text(strings.Repeat("é", 32)))),
		"id 65":                 craftedMap(withValue(base, "id", cb{}.text(strings.Repeat("é", 32)+"x"))),
		"id del":                craftedMap(withValue(base, "id", cb{}.text("ev\x7f"))),
		"id c1":                 craftedMap(withValue(base, "id", cb{}.text("ev\u0085"))),
		"class null":            craftedMap(withValue(base, "class", cb{}.raw(0xf6))),
		"class telemetry":       craftedMap(withValue(base, "class", cb{}.text("telemetry"))),
		"type upper":            craftedMap(withValue(base, "type", cb{}.text("Sale.completed"))),
		"body null":             craftedMap(withValue(base, "body", cb{}.raw(0xf6))),
		"body undefined":        craftedMap(withValue(base, "body", cb{}.raw(0xf7))),
		"body empty map":        craftedMap(withValue(base, "body", cb{}.head(5, 0))),
		"body array":            craftedMap(withValue(base, "body", cb{}.head(4, 0))),
		"body text":             craftedMap(withValue(base, "body", cb{}.text("{}"))),
		"body bytes":            craftedMap(withValue(base, "body", cb{}.bytes([]byte{0xa0}))),
		"body truncated":        craftedMap(withValue(base, "body", cb{}.head(5, 3).text("n").head(0, 7))),
		"body indefinite map":   craftedMap(withValue(base, "body", cb{}.raw(0xbf).text("n").head(0, 7).raw(0xff))),
		"body indefinite array": craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0x9f, 1, 0xff))),
		"body indefinite text":  craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0x7f).text("x").raw(0xff))),
		"body tag":              craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0xc1, 1))),
		"body tag on map":       craftedMap(withValue(base, "body", cb{}.raw(0xd9, 0xd9, 0xf7).head(5, 0))),
		"body text not utf8":    craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").text("\xff"))),
		"body key not utf8":     craftedMap(withValue(base, "body", cb{}.head(5, 1).text("\xff").head(0, 1))),
		"body text nul":         craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").text("x\x00y"))),
		"body key nul":          craftedMap(withValue(base, "body", cb{}.head(5, 1).text("\x00").head(0, 1))),
		"body int key":          craftedMap(withValue(base, "body", cb{}.head(5, 1).head(0, 1).head(0, 1))),
		"body dup canonical":    craftedMap(withValue(base, "body", cb{}.head(5, 2).text("a").head(0, 1).text("a").head(0, 2))),
		"body dup unordered":    craftedMap(withValue(base, "body", cb{}.head(5, 3).text("b").head(0, 1).text("a").head(0, 1).text("b").head(0, 2))),
		"body dup nested":       craftedMap(withValue(base, "body", cb{}.head(5, 1).text("m").head(5, 2).text("a").head(0, 1).text("a").head(0, 2))),
		"body dup long key":     craftedMap(withValue(base, "body", cb{}.head(5, 2).text("a").head(0, 1).raw(0x78, 1, 'a').head(0, 2))),
		"body unordered":        craftedMap(withValue(base, "body", cb{}.head(5, 2).text("b").head(0, 1).text("a").head(0, 2))),
		"body long int":         craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0x1b, 0, 0, 0, 0, 0, 0, 0, 1))),
		"body long key head":    craftedMap(withValue(base, "body", cb{}.head(5, 1).raw(0x78, 1, 'a').head(0, 1))),
		"body long map head":    craftedMap(withValue(base, "body", cb{}.raw(0xb8, 1).text("a").head(0, 1))),
		"body neg int min":      craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").head(1, 1<<63-1))),
		"body neg int past":     craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").head(1, 1<<63))),
		"body uint max":         craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").head(0, 1<<64-1))),
		"body half nan":         craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0xf9, 0x7e, 0))),
		"body half inf":         craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0xf9, 0x7c, 0))),
		"body single nan":       craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0xfa, 0x7f, 0xc0, 0, 0))),
		"body double":           craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0))),
		"body double neg zero":  craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0xfb, 0x80, 0, 0, 0, 0, 0, 0, 0))),
		"body simple 0":         craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0xe0))),
		"body simple 24 low":    craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0xf8, 20))),
		"body simple 24 high":   craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0xf8, 0x20))),
		"body break":            craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0xff))),
		"body reserved info":    craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").raw(0x1c))),
		"body bytes in":         craftedMap(withValue(base, "body", cb{}.head(5, 1).text("a").bytes([]byte{1}))),
		"body then more":        append(craftedMap(withValue(base, "body", cb{}.head(5, 0).head(0, 1))), 0),
	}
	for d := MaxNesting - 4; d <= MaxNesting; d++ {
		out[fmt.Sprintf("body arrays %d deep", d)] = craftedMap(withValue(base, "body", nestedArrays(d)))
	}
	for _, n := range []int{maxArrayElems, maxArrayElems + 1} {
		b := cb{}.head(5, 1).text("a").head(4, uint64(n))
		for range n {
			b = b.head(0, 1)
		}
		out[fmt.Sprintf("body array of %d", n)] = craftedMap(withValue(base, "body", b))
	}
	for _, n := range []int{maxMapPairs, maxMapPairs + 1} {
		b := cb{}.head(5, uint64(n))
		for i := range n {
			b = b.text(fmt.Sprintf("k%04d", i)).head(0, 1)
		}
		out[fmt.Sprintf("body map of %d", n)] = craftedMap(withValue(base, "body", b))
	}
	for _, n := range []int{MaxBodyBytes - 5 - 3, MaxBodyBytes - 5 - 2} { // head 1, key 2, text head 3 (+ n)
		b := cb{}.head(5, 1).text("a").text(strings.Repeat("x", n))
		out[fmt.Sprintf("body of %d bytes", len(b))] = craftedMap(withValue(base, "body", b))
	}
	for _, n := range []int{MaxRecordBytes - 200, MaxRecordBytes} {
		out[fmt.Sprintf("record of about %d bytes, body under its limit", n)] = craftedMap(withValue(base, "body",
			cb{}.head(5, 1).text("a").text(strings.Repeat("x", min(n, MaxBodyBytes-8)))))
	}
	return out
}

func reversed(p []kv) []kv {
	out := make([]kv, len(p))
	for i := range p {
		out[len(p)-1-i] = p[i]
	}
	return out
}

// TestDecodeRecordFastCrafted: on every hand-built case, DecodeRecord
// (fast path first) gives the reference's verdict, record or error text;
// what the fast path takes, the reference accepts as the same record. The
// valid shapes our encoder writes must take the fast path.
func TestDecodeRecordFastCrafted(t *testing.T) {
	mustFast := map[string]bool{"valid": true, "valid no body": true, "keys reversed": true, "shed": true,
		"body empty map": true, "body double": true, "ts max": true, "ts zero": true, "edge_time max": true,
		"seq max": true, "id 64": true, "id c1": true, "body text nul": true, "body key nul": true}
	for name, raw := range craftedRecords() {
		t.Run(name, func(t *testing.T) {
			checkSameAsReference(t, raw)
			ref, rerr := decodeRecordRef(raw)
			got, ok := decodeRecordFast(raw, &ref)
			if ok && rerr != nil {
				t.Fatalf("the fast path took what the reference refuses: %v", rerr)
			}
			if ok {
				if g2, _ := decodeRecordFast(raw, nil); !recordsEqual(g2, ref) || !recordsEqual(got, ref) {
					t.Fatalf("fast %+v, reference %+v", got, ref)
				}
			}
			if mustFast[name] && !ok {
				t.Fatalf("the fast path deferred (reference: %v)", rerr)
			}
		})
	}
}

// TestDecodeRecordFastCopies: a record the fast path decodes shares no
// memory with its bytes (the outbox decodes bbolt values, which are valid
// only in their transaction): overwriting them changes nothing.
func TestDecodeRecordFastCopies(t *testing.T) {
	for name, raw := range craftedRecords() {
		raw = bytes.Clone(raw)
		r, ok := decodeRecordFast(raw, nil)
		if !ok {
			continue
		}
		want, err := decodeRecordRef(bytes.Clone(raw))
		if err != nil {
			t.Fatal(err)
		}
		for i := range raw {
			raw[i] = 0xee
		}
		if !recordsEqual(r, want) {
			t.Fatalf("%s: after its bytes were overwritten the record is %+v, want %+v", name, r, want)
		}
	}
}

func recordsEqual(a, b Record) bool { return reflect.DeepEqual(a, b) }

// TestCheckBodyDuplicateKeyAnyHead: a key written twice is a duplicate
// also when one of the two has a longer head than it needs ("a" as 0x61
// 0x61 and as 0x78 0x01 0x61): the two are one key to every decoder
// (Body.Decode and MarshalJSON refuse such a body), so CheckBody, the fast
// path and the reference path of DecodeRecord refuse it too.
func TestCheckBodyDuplicateKeyAnyHead(t *testing.T) {
	for name, body := range map[string][]byte{
		"short then long":  cb{}.head(5, 2).text("a").head(0, 1).raw(0x78, 1, 'a').head(0, 2),
		"long then short":  cb{}.head(5, 2).raw(0x78, 1, 'a').head(0, 1).text("a").head(0, 2),
		"long twice":       cb{}.head(5, 2).raw(0x78, 1, 'a').head(0, 1).raw(0x79, 0, 1, 'a').head(0, 2),
		"after other keys": cb{}.head(5, 3).text("a").head(0, 1).text("b").head(0, 1).raw(0x78, 1, 'a').head(0, 2),
		"nested":           cb{}.head(5, 1).text("m").head(5, 2).text("a").head(0, 1).raw(0x78, 1, 'a').head(0, 2),
	} {
		var v any
		if err := anyDecMode.Unmarshal(body, &v); err == nil {
			t.Fatalf("%s: the reference decoder takes %x", name, body)
		}
		if err := CheckBody(body); err == nil || !strings.Contains(err.Error(), "duplicate key") {
			t.Errorf("%s: CheckBody(%x) = %v, want a duplicate key", name, body, err)
		}
		raw := craftedMap(withValue(craftedBase(body), "body", body))
		if _, ok := decodeRecordFast(raw, nil); ok {
			t.Errorf("%s: the fast path takes the record", name)
		}
		if _, err := DecodeRecord(raw); err == nil {
			t.Errorf("%s: DecodeRecord takes the record", name)
		}
	}
	// Not duplicates: the same name with a long head once, beside others.
	ok := cb{}.head(5, 2).raw(0x78, 1, 'b').head(0, 1).text("a").head(0, 2)
	if err := CheckBody(ok); err != nil {
		t.Errorf("CheckBody(%x) = %v", ok, err)
	}
}
