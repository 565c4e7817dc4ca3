package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fastSeedRecords are records in the shapes this package writes: ledger
// and telemetry, with and without a body, a tombstone, a negative and a
// large device time, the longest names, a body with every JSON kind.
func fastSeedRecords(tb testing.TB) [][]byte {
	tb.Helper()
	base := Record{V: RecordVersion, Edge: "edge-001", Epoch: Epoch{0x0e, 0x90, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14},
		Seq: 7, Device: "till-1", ID: "ev-7", Type: "sale.completed", TS: time.Date(2026, 11, 22, 9, 30, 0, 0, time.UTC).UnixMilli(),
		EdgeTime: HLCFromTime(time.Date(2026, 11, 22, 9, 30, 1, 0, time.UTC)) + 3, Class: ClassLedger, Prev: Hash{1, 2, 3}}
	body := func(v any) []byte {
		b, err := NewBody(v)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	var out [][]byte
	add := func(f func(r *Record)) {
		r := base
		f(&r)
		out = append(out, r.Encode())
	}
	add(func(r *Record) { r.Body = body(map[string]any{"n": 7, "salt": ""}) })
	add(func(r *Record) {
		r.Type, r.Class = "telemetry.temperature", ClassTelemetry
		r.Body = body(map[string]any{"c": 21.5, "ok": true, "none": nil, "list": []any{1, -2, "x", []any{}, map[string]any{}},
			"neg": -1 << 40, "big": uint64(1) << 63, "text": "é€😀"})
	})
	add(func(r *Record) {})
	add(func(r *Record) { h := Hash{9, 9}; r.Shed = &h })
	add(func(r *Record) { r.TS = 0; r.Prev = Hash{}; r.Seq = 1 })
	add(func(r *Record) { r.TS = maxTSms; r.Seq = 1<<64 - 1; r.EdgeTime = HLCTime(maxTSms) << hlcLogicalBits })
	add(func(r *Record) {
		r.Edge, r.Device, r.ID = strings.Repeat("e", MaxIDLen), strings.Repeat("D", MaxIDLen), strings.Repeat("é", MaxIDLen/2)
		r.Body = body(map[string]any{"deep": map[string]any{"a": map[string]any{"b": []any{[]any{[]any{1}}}}}})
	})
	return out
}

// vectorRecords are the records of testdata/vectors/records.json.
func vectorRecords(tb testing.TB) [][]byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "vectors", "records.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var v struct {
		Records []struct {
			Hex string `json:"hex"`
		} `json:"records"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, r := range v.Records {
		raw, err := hex.DecodeString(r.Hex)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, raw)
	}
	return out
}

// fastVariants are what the fast path must leave to the reference decoder
// (or refuse with it): each changes a valid record in one way.
func fastVariants(raw []byte) [][]byte {
	var out [][]byte
	rep := func(old, new string) {
		if bytes.Contains(raw, []byte(old)) {
			out = append(out, bytes.Replace(raw, []byte(old), []byte(new), 1))
		}
	}
	rep("\x61v\x01", "\x61V\x01")                             // a key in another case: the reference matches it
	rep("\x61v\x01", "\x61v\x18\x01")                         // a head not in its shortest form
	rep("\x61v\x01", "\x61v\x02")                             // another version
	rep("\x64type", "\x64tYpe")                               // another case
	rep("\x65class\x66ledger", "\x65class\xf6")               // null
	rep("\x65class\x66ledger", "\x65class\x66ledgex")         // another class
	rep("\x64edge\x68", "\x64edge\x48")                       // a byte string for a text
	rep("\x62id\x63", "\x62id\x79\x00\x03")                   // a long head
	rep("\x62ts\x1b", "\x62ts\x3b")                           // negative
	rep("\x64prevX ", "\x64prevX\x1f")                        // a short hash
	rep("\x65epochP", "\x65epochX\x10")                       // a long head for the epoch
	out = append(out, append(bytes.Clone(raw), 0))            // a byte after the map
	out = append(out, raw[:len(raw)-1])                       // truncated
	out = append(out, append([]byte{raw[0] + 1}, raw[1:]...)) // a pair more than there is
	if raw[0] > 0xa0 {
		out = append(out, append([]byte{raw[0] - 1}, raw[1:]...)) // a pair less
	}
	dup := append([]byte{raw[0] + 1}, raw[1:]...)
	out = append(out, append(dup, "\x61v\x01"...))                                      // a key twice
	out = append(out, append(append([]byte{raw[0] + 1}, raw[1:]...), "\x63xyz\x01"...)) // an unknown key
	return out
}

// TestDecodeRecordFastTakesWhatWeWrite: every record this package writes
// takes the fast path, with and without a hint, and decodes as the
// reference decodes it. (Without this the fast path could quietly defer
// everything, and nothing else would notice.)
func TestDecodeRecordFastTakesWhatWeWrite(t *testing.T) {
	raws := append(fastSeedRecords(t), vectorRecords(t)...)
	for i, raw := range raws {
		ref, err := decodeRecordRef(raw)
		if err != nil {
			t.Fatalf("record %d: the reference refuses it: %v", i, err)
		}
		for _, hint := range []*Record{nil, &ref, {Edge: ref.Edge}, {Edge: "other", Device: "other"}} {
			got, ok := decodeRecordFast(raw, hint)
			if !ok {
				t.Fatalf("record %d (hint %v): the fast path deferred a record this package wrote: %x", i, hint != nil, raw)
			}
			if !reflect.DeepEqual(got, ref) {
				t.Fatalf("record %d: fast path %+v, reference %+v", i, got, ref)
			}
		}
	}
}

// TestDecodeRecordFastDefers: what is not in the shape the fast path reads
// goes to the reference decoder, whose verdict DecodeRecord returns.
func TestDecodeRecordFastDefers(t *testing.T) {
	n := 0
	for _, raw := range fastSeedRecords(t) {
		for _, v := range fastVariants(raw) {
			if _, ok := decodeRecordFast(v, nil); ok {
				t.Errorf("the fast path took %x", v)
			}
			n++
			checkSameAsReference(t, v)
		}
	}
	if n < 50 {
		t.Fatalf("only %d variants", n)
	}
}

func checkSameAsReference(t *testing.T, b []byte) {
	t.Helper()
	ref, rerr := decodeRecordRef(b)
	got, err := DecodeRecord(b)
	switch {
	case (err == nil) != (rerr == nil):
		t.Fatalf("%x: DecodeRecord error %v, reference error %v", b, err, rerr)
	case err != nil && err.Error() != rerr.Error():
		t.Fatalf("%x: DecodeRecord error %q, reference error %q", b, err, rerr)
	case err == nil && !reflect.DeepEqual(got, ref):
		t.Fatalf("%x: DecodeRecord %+v, reference %+v", b, got, ref)
	}
}

// FuzzDecodeRecordFast holds the fast path to the reference decoder: for
// any bytes, it defers, or it returns exactly the record the reference
// returns (which must accept them), with or without a hint; and
// DecodeRecord's verdict, record or error text, is the reference's.
func FuzzDecodeRecordFast(f *testing.F) {
	seeds := append(fastSeedRecords(f), vectorRecords(f)...)
	for _, raw := range seeds {
		f.Add(raw)
		for _, v := range fastVariants(raw) {
			f.Add(v)
		}
	}
	for _, raw := range craftedRecords() { // hand-built: limits, duplicates, heads, tags, bad UTF-8
		f.Add(raw)
	}
	hint, err := decodeRecordRef(seeds[0])
	if err != nil {
		f.Fatal(err)
	}
	crafted, err := decodeRecordRef(craftedRecords()["valid"])
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ref, rerr := decodeRecordRef(b)
		for _, h := range []*Record{nil, &hint, &crafted, &ref} {
			got, ok := decodeRecordFast(b, h)
			if !ok {
				continue
			}
			if rerr != nil {
				t.Fatalf("%x: the fast path took what the reference refuses: %v", b, rerr)
			}
			if !reflect.DeepEqual(got, ref) {
				t.Fatalf("%x: fast path %+v, reference %+v", b, got, ref)
			}
		}
		checkSameAsReference(t, b)
	})
}

// BenchmarkDecodeRecordFast compares the fast path with the reference decoder
// on a record as the benchmark of the cloud commit makes them; read the
// ratio of the two, from the same run.
func BenchmarkDecodeRecordFast(b *testing.B) {
	raw := fastSeedRecords(b)[0]
	prev, err := decodeRecordRef(raw)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		decode func() (Record, error)
	}{
		{"reference", func() (Record, error) { return decodeRecordRef(raw) }},
		{"fast", func() (Record, error) { return DecodeRecord(raw) }},
		{"fast_after", func() (Record, error) { return decodeRecordAfter(raw, &prev) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.decode(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
