package protocol

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"unicode/utf8"
)

// CheckBody checks that b is one CBOR map holding only the JSON data model:
// maps with text keys and no duplicates, arrays, text, integers, finite
// floats, booleans and null; no byte strings, tags, undefined or indefinite
// lengths, with the decoder's limits on sizes and on nesting (counting the
// record or event map the body sits in). It walks the bytes without
// decoding them into values and builds no error text unless it refuses: it
// runs for every record the edge stores and the cloud verifies. Every body
// it accepts makes a record that DecodeRecord accepts.
func CheckBody(b []byte) error {
	if len(b) > MaxBodyBytes {
		return fieldf("body", "is %d bytes; the limit is %d", len(b), MaxBodyBytes)
	}
	if len(b) == 0 || b[0]>>5 != 5 {
		return fieldf("body", "must be a CBOR map")
	}
	rest, err := walkJSONModel(b, 2)
	if err != nil {
		return prefixField("body", err)
	}
	if len(rest) != 0 {
		return fieldf("body", "has %d bytes after the map", len(rest))
	}
	return nil
}

func checkBody(b []byte) error { return CheckBody(b) }

// cborHead reads a data item's head: major type, argument, and the rest.
func cborHead(b []byte) (major byte, arg uint64, info byte, rest []byte, err error) {
	if len(b) == 0 {
		return 0, 0, 0, nil, fieldf("", "truncated CBOR")
	}
	major, info = b[0]>>5, b[0]&0x1f
	b = b[1:]
	switch {
	case info < 24:
		return major, uint64(info), info, b, nil
	case info == 24 && len(b) >= 1:
		return major, uint64(b[0]), info, b[1:], nil
	case info == 25 && len(b) >= 2:
		return major, uint64(binary.BigEndian.Uint16(b)), info, b[2:], nil
	case info == 26 && len(b) >= 4:
		return major, uint64(binary.BigEndian.Uint32(b)), info, b[4:], nil
	case info == 27 && len(b) >= 8:
		return major, binary.BigEndian.Uint64(b), info, b[8:], nil
	case info == 31:
		return 0, 0, 0, nil, fieldf("", "indefinite-length items are not allowed")
	case info >= 28:
		return 0, 0, 0, nil, fieldf("", "malformed CBOR (reserved additional information %d)", info)
	}
	return 0, 0, 0, nil, fieldf("", "truncated CBOR")
}

// walkJSONModel checks one data item at nesting depth and returns the bytes
// after it. Its errors name the field relative to the item; callers prefix
// their own key on the way out, so a body that passes costs no strings.
func walkJSONModel(b []byte, depth int) ([]byte, error) {
	major, arg, info, rest, err := cborHead(b)
	if err != nil {
		return nil, err
	}
	switch major {
	case 0: // unsigned integers
		return rest, nil
	case 1: // negative integers: -1-arg must fit an int64
		if arg > math.MaxInt64 {
			return nil, fieldf("", "negative integer below the int64 range")
		}
		return rest, nil
	case 2:
		return nil, fieldf("", "byte strings are not allowed: bodies hold the JSON data model only")
	case 3:
		if arg > uint64(len(rest)) {
			return nil, fieldf("", "truncated text")
		}
		if !utf8.Valid(rest[:arg]) {
			return nil, fieldf("", "text is not valid UTF-8; send text as UTF-8")
		}
		return rest[arg:], nil
	case 4, 5:
		if depth > MaxNesting {
			return nil, fieldf("", "nesting is deeper than %d", MaxNesting)
		}
		if major == 4 {
			if arg > maxArrayElems {
				return nil, fieldf("", "has %d elements; the limit is %d", arg, maxArrayElems)
			}
			for i := uint64(0); i < arg; i++ {
				if rest, err = walkJSONModel(rest, depth+1); err != nil {
					return nil, prefixField(fmt.Sprintf("[%d]", i), err)
				}
			}
			return rest, nil
		}
		if arg > maxMapPairs {
			return nil, fieldf("", "has %d keys; the limit is %d", arg, maxMapPairs)
		}
		var prev []byte
		var seen map[string]bool // only when keys are out of canonical order
		for i := uint64(0); i < arg; i++ {
			km, klen, _, krest, err := cborHead(rest)
			if err != nil {
				return nil, err
			}
			if km != 3 {
				return nil, fieldf("", "map keys must be text")
			}
			if klen > uint64(len(krest)) {
				return nil, fieldf("", "truncated key")
			}
			key := rest[:len(rest)-len(krest)+int(klen)] // the key's whole encoding
			name := krest[:klen]
			if !utf8.Valid(name) {
				return nil, fieldf("", "a key is not valid UTF-8; send text as UTF-8")
			}
			// A key is its text: "a" with a longer head than it needs is
			// "a" again to every decoder, so only keys in their shortest
			// form, in canonical order, skip the set.
			switch shortest := CBORHeadLen(klen) == len(key)-int(klen); {
			case seen == nil && shortest && (prev == nil || bytes.Compare(key, prev) > 0):
				prev = key // canonical order: strictly increasing, so no duplicates
			default:
				if seen == nil {
					seen = map[string]bool{}
					if err := collectKeys(b, i, seen); err != nil {
						return nil, err
					}
				}
				if seen[string(name)] {
					return nil, fieldf(string(name), "duplicate key")
				}
				seen[string(name)] = true
			}
			if rest, err = walkJSONModel(krest[klen:], depth+1); err != nil {
				return nil, prefixField(string(name), err)
			}
		}
		return rest, nil
	case 6:
		return nil, fieldf("", "CBOR tags are not allowed: bodies hold the JSON data model only")
	}
	// major 7: simple values and floats
	switch info {
	case 20, 21, 22: // false, true, null
		return rest, nil
	case 23:
		return nil, fieldf("", "CBOR undefined (0xf7) is not allowed: send null, or leave the field out")
	case 25, 26, 27:
		var f float64
		switch info {
		case 25:
			f = float16ToFloat64(uint16(arg))
		case 26:
			f = float64(math.Float32frombits(uint32(arg)))
		default:
			f = math.Float64frombits(arg)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fieldf("", "NaN and infinities are not allowed")
		}
		return rest, nil
	}
	return nil, fieldf("", "CBOR simple value %d is not allowed: bodies hold the JSON data model only", arg)
}

// collectKeys records the keys (their text, whatever their heads) of the
// first n pairs of the map at b (used once a map's keys turn out not to be
// in canonical order, or one has a longer head than it needs).
func collectKeys(b []byte, n uint64, seen map[string]bool) error {
	_, _, _, rest, err := cborHead(b)
	if err != nil {
		return err
	}
	for i := uint64(0); i < n; i++ {
		_, klen, _, krest, err := cborHead(rest)
		if err != nil {
			return err
		}
		seen[string(krest[:klen])] = true
		if rest, err = skipItem(krest[klen:]); err != nil {
			return err
		}
	}
	return nil
}

// skipItem skips one (already checked) data item.
func skipItem(b []byte) ([]byte, error) {
	major, arg, _, rest, err := cborHead(b)
	if err != nil {
		return nil, err
	}
	switch major {
	case 2, 3:
		if arg > uint64(len(rest)) {
			return nil, fmt.Errorf("truncated: %w", ErrMalformed)
		}
		return rest[arg:], nil
	case 4, 5:
		n := arg
		if major == 5 {
			n *= 2
		}
		for i := uint64(0); i < n; i++ {
			if rest, err = skipItem(rest); err != nil {
				return nil, err
			}
		}
		return rest, nil
	case 6:
		return skipItem(rest)
	}
	return rest, nil
}

// float16ToFloat64 converts an IEEE 754 half-precision value.
func float16ToFloat64(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	frac := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * math.Ldexp(frac, -24)
	case 0x1f:
		if frac == 0 {
			return math.Inf(int(sign))
		}
		return math.NaN()
	}
	return sign * math.Ldexp(frac+1024, exp-25)
}
