package protocol

import (
	"bytes"
	"math"
	"unicode/utf8"
)

// The record fast path. DecodeRecord used to read every record through
// fxamacker/cbor's reflection decoder into Record; in the cloud's commit
// that was about three quarters of the CPU of verifying a segment (issue
// 16). decodeRecordFast reads the one shape this package and the outbox
// write: a map with at most the 13 keys of Record, each spelt exactly as
// its cbor tag, no key twice, every head in its shortest form, values of
// the one CBOR type each field takes, a body that CheckBody accepts, and
// nothing after the map. It also runs the record's own checks. On anything
// else (a key spelt another way, a non-shortest head, null, a refusal of
// any kind) it says so and DecodeRecord runs the reference decoder, so
// that what is accepted, what is refused, and every error's text are the
// reference's: FuzzDecodeRecordFast holds the two to it.
//
// Like the reference, it copies: the record's strings and its body do not
// alias raw (the outbox decodes bbolt values, which live only as long as
// their transaction). It never re-encodes anything.

// Record fields, as bits of the set of keys seen.
const (
	rfV = 1 << iota
	rfEdge
	rfEpoch
	rfSeq
	rfDevice
	rfID
	rfType
	rfTS
	rfEdgeTime
	rfClass
	rfPrev
	rfBody
	rfShed
	rfCount = iota
)

// decodeRecordFast decodes raw if it is a valid record in the shape
// described above, and reports whether it did. When ok is false, nothing
// is known about raw: it may be valid in another shape, or invalid.
//
// hint, when not nil, is a record decoded before (the previous one of the
// same stream): a string of raw equal to the same field of hint is taken
// from hint instead of allocated anew. Strings are immutable, so the
// record is the same either way.
func decodeRecordFast(raw []byte, hint *Record) (r Record, ok bool) {
	if len(raw) == 0 || len(raw) > MaxRecordBytes || raw[0]>>5 != 5 {
		return r, false
	}
	n := int(raw[0] & 0x1f)
	if n > rfCount { // also every head longer than one byte: n >= 24
		return r, false
	}
	d := fastCBOR{b: raw, i: 1}
	seen := 0
	for range n {
		key, ok := d.text()
		if !ok {
			return r, false
		}
		var bit int
		switch string(key) { // compiled to comparisons; no allocation
		case "v":
			bit = rfV
			r.V, ok = d.uint()
		case "edge":
			bit = rfEdge
			r.Edge, ok = d.str(hint, func(h *Record) string { return h.Edge })
		case "epoch":
			bit = rfEpoch
			ok = d.fixed(r.Epoch[:])
		case "seq":
			bit = rfSeq
			r.Seq, ok = d.uint()
		case "device":
			bit = rfDevice
			r.Device, ok = d.str(hint, func(h *Record) string { return h.Device })
		case "id":
			bit = rfID
			r.ID, ok = d.str(nil, nil)
		case "type":
			bit = rfType
			r.Type, ok = d.str(hint, func(h *Record) string { return h.Type })
		case "ts":
			bit = rfTS
			r.TS, ok = d.ts()
		case "edge_time":
			bit = rfEdgeTime
			var t uint64
			t, ok = d.uint()
			r.EdgeTime = HLCTime(t)
		case "class":
			bit = rfClass
			var c []byte
			if c, ok = d.text(); ok {
				switch string(c) {
				case string(ClassLedger):
					r.Class = ClassLedger
				case string(ClassTelemetry):
					r.Class = ClassTelemetry
				default:
					ok = false // check refuses any other class; let the reference say so
				}
			}
		case "prev":
			bit = rfPrev
			ok = d.fixed(r.Prev[:])
		case "body":
			bit = rfBody
			r.Body, ok = d.body()
		case "shed":
			bit = rfShed
			var h Hash
			if ok = d.fixed(h[:]); ok {
				r.Shed = &h
			}
		default:
			return r, false
		}
		if !ok || seen&bit != 0 {
			return r, false
		}
		seen |= bit
	}
	if d.i != len(raw) {
		return r, false
	}
	if r.checkFields() != nil { // the body's check is made: body
		return r, false
	}
	return r, true
}

// fastCBOR reads data items in their shortest form. Each method reports
// false for anything else: the caller then gives up.
type fastCBOR struct {
	b []byte
	i int
}

// head reads a head of major type major, in its shortest form.
func (d *fastCBOR) head(major byte) (uint64, bool) {
	if d.i >= len(d.b) || d.b[d.i]>>5 != major {
		return 0, false
	}
	info := d.b[d.i] & 0x1f
	d.i++
	var v uint64
	var w int
	switch {
	case info < 24:
		return uint64(info), true
	case info == 24:
		w = 1
	case info == 25:
		w = 2
	case info == 26:
		w = 4
	case info == 27:
		w = 8
	default:
		return 0, false
	}
	if len(d.b)-d.i < w {
		return 0, false
	}
	for _, c := range d.b[d.i : d.i+w] {
		v = v<<8 | uint64(c)
	}
	d.i += w
	if CBORHeadLen(v) != 1+w {
		return 0, false
	}
	return v, true
}

func (d *fastCBOR) uint() (uint64, bool) { return d.head(0) }

// ts reads a device time: an unsigned integer that fits an int64. (A
// negative one is refused by check, so it is left to the reference.)
func (d *fastCBOR) ts() (int64, bool) {
	v, ok := d.head(0)
	if !ok || v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}

// text reads a text string of valid UTF-8 and returns its bytes (in d.b).
func (d *fastCBOR) text() ([]byte, bool) {
	n, ok := d.head(3)
	if !ok || n > uint64(len(d.b)-d.i) {
		return nil, false
	}
	s := d.b[d.i : d.i+int(n)]
	d.i += int(n)
	if !utf8.Valid(s) {
		return nil, false
	}
	return s, true
}

// str reads a text string, taking it from hint's field (field(hint)) when
// that holds the same text.
func (d *fastCBOR) str(hint *Record, field func(*Record) string) (string, bool) {
	s, ok := d.text()
	if !ok {
		return "", false
	}
	if hint != nil {
		if h := field(hint); h == string(s) { // no allocation for the comparison
			return h, true
		}
	}
	return string(s), true
}

// fixed reads a byte string of exactly len(dst) bytes into dst.
func (d *fastCBOR) fixed(dst []byte) bool {
	n, ok := d.head(2)
	if !ok || n != uint64(len(dst)) || n > uint64(len(d.b)-d.i) {
		return false
	}
	copy(dst, d.b[d.i:])
	d.i += len(dst)
	return true
}

// body reads an event body, a map that CheckBody accepts, and returns a
// copy of its bytes.
func (d *fastCBOR) body() ([]byte, bool) {
	start := d.i
	if start >= len(d.b) || d.b[start]>>5 != 5 {
		return nil, false
	}
	rest, err := walkJSONModel(d.b[start:], 2)
	if err != nil {
		return nil, false
	}
	end := len(d.b) - len(rest)
	if end-start > MaxBodyBytes {
		return nil, false
	}
	d.i = end
	return bytes.Clone(d.b[start:end]), true
}
