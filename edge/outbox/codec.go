package outbox

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/outpost-edge/outpost/protocol"
)

// The commit loop is the one serial part of the outbox, and encoding a
// record through reflection costs more than storing it. So the outbox
// encodes records from templates: at Open, protocol.Record.Encode itself
// encodes one record per (class, with or without body) with placeholders in
// every field that varies; per record, the loop splices the real values in.
// Deterministic CBOR orders map keys by the keys alone, so values of other
// lengths move nothing else, and the values are plain CBOR items (unsigned
// and negative integers, text strings, a 32-byte byte string, the body's
// bytes as they are). TestCodecMatchesEncode and FuzzCodec check the result
// against Encode byte for byte. Should the placeholders not each be found
// exactly once, the outbox falls back to Encode per record.

// Placeholders. The strings hold control characters, which no edge id,
// device id, event type or event id may contain, so they cannot collide
// with the fixed fields baked into a template.
var (
	phSeq    = uint64(0xfffffffffffffe51)
	phTime   = uint64(0xfffffffffffffe54)
	phTS     = int64(0x7ffffffffffffe57)
	phPrev   = protocol.Hash{0x01, 'o', 'u', 't', 'p', 'o', 's', 't', ':', 'p', 'r', 'e', 'v', 0x01, 0xa5, 0x5a, 0xc3, 0x3c, 0x96, 0x69, 0x0f, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x02}
	phID     = "\x01outpost:id\x01"
	phType   = "\x01outpost:type\x01"
	phDevice = "\x01outpost:device\x01"
	phBody   = append(cborText([]byte{0xa1}, "\x01outpost:body\x01"), 0x00) // {"\x01outpost:body\x01": 0}
)

type slotKind uint8

const (
	slotSeq slotKind = iota
	slotTime
	slotTS
	slotPrev
	slotID
	slotType
	slotDevice
	slotBody
	numSlots
)

type slot struct {
	off  int
	n    int // placeholder length
	kind slotKind
}

type template struct {
	b     []byte
	slots []slot // by offset
}

// codec encodes the records of one stream.
type codec struct {
	t     [2][2]template // [class][has body]
	fixed int            // the longest template: a bound on a record's bytes beyond its strings and body
}

// newCodec builds the templates for stream, or returns nil when the
// placeholders cannot be located (then records go through Encode).
func newCodec(stream protocol.Stream) *codec {
	c := &codec{}
	for class, name := range []protocol.Class{classLedger: protocol.ClassLedger, classTelemetry: protocol.ClassTelemetry} {
		for hasBody := range 2 {
			r := protocol.Record{
				V: protocol.RecordVersion, Edge: stream.Edge, Epoch: stream.Epoch,
				Seq: phSeq, Device: phDevice, ID: phID, Type: phType, TS: phTS,
				EdgeTime: protocol.HLCTime(phTime), Class: name, Prev: phPrev,
			}
			if hasBody == 1 {
				r.Body = phBody
			}
			b := r.Encode()
			t := template{b: b}
			for kind, pat := range [numSlots][]byte{
				slotSeq:    cborUint(nil, phSeq),
				slotTime:   cborUint(nil, phTime),
				slotTS:     cborInt(nil, phTS),
				slotPrev:   cborBytes(nil, phPrev[:]),
				slotID:     cborText(nil, phID),
				slotType:   cborText(nil, phType),
				slotDevice: cborText(nil, phDevice),
				slotBody:   phBody,
			} {
				if slotKind(kind) == slotBody && hasBody == 0 {
					continue
				}
				off := bytes.Index(b, pat)
				if off < 0 || bytes.Contains(b[off+1:], pat) {
					return nil
				}
				t.slots = append(t.slots, slot{off: off, n: len(pat), kind: slotKind(kind)})
			}
			slices.SortFunc(t.slots, func(a, b slot) int { return a.off - b.off })
			c.t[class][hasBody] = t
			c.fixed = max(c.fixed, len(t.b))
		}
	}
	return c
}

// encode appends to dst the bytes of the record for e with the given seq,
// edge_time and prev: what protocol.NewRecord and Encode would give.
func (c *codec) encode(dst []byte, e *Entry, class byte, seq uint64, et protocol.HLCTime, prev protocol.Hash) []byte {
	ev := &e.Event
	hasBody := 0
	if len(ev.Body) > 0 {
		hasBody = 1
	}
	t := &c.t[class][hasBody]
	out := slices.Grow(dst, len(t.b)+len(ev.Body)+len(ev.ID)+len(ev.Type)+len(e.Device))
	pos := 0
	for _, s := range t.slots {
		out = append(out, t.b[pos:s.off]...)
		pos = s.off + s.n
		switch s.kind {
		case slotSeq:
			out = cborUint(out, seq)
		case slotTime:
			out = cborUint(out, uint64(et))
		case slotTS:
			out = cborInt(out, ev.TS.UnixMilli())
		case slotPrev:
			out = cborBytes(out, prev[:])
		case slotID:
			out = cborText(out, ev.ID)
		case slotType:
			out = cborText(out, ev.Type)
		case slotDevice:
			out = cborText(out, e.Device)
		case slotBody:
			out = append(out, ev.Body...)
		}
	}
	return append(out, t.b[pos:]...)
}

// encodeRecord is the slow path: protocol's own encoder.
func encodeRecord(stream protocol.Stream, e *Entry, seq uint64, et protocol.HLCTime, prev protocol.Hash) []byte {
	r := protocol.NewRecord(stream, e.Device, e.Event)
	r.Seq, r.EdgeTime, r.Prev = seq, et, prev
	return r.Encode()
}

// cborHead appends a CBOR head of major type major (0-7, shifted) with
// argument n, in the shortest form, as deterministic encoding requires.
func cborHead(b []byte, major byte, n uint64) []byte {
	switch {
	case n < 24:
		return append(b, major|byte(n))
	case n <= 0xff:
		return append(b, major|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, major|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, major|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, major|27), n)
}

func cborUint(b []byte, v uint64) []byte { return cborHead(b, 0x00, v) }

func cborInt(b []byte, v int64) []byte {
	if v >= 0 {
		return cborHead(b, 0x00, uint64(v))
	}
	return cborHead(b, 0x20, uint64(-1-v))
}

func cborBytes(b, v []byte) []byte { return append(cborHead(b, 0x40, uint64(len(v))), v...) }

func cborText(b []byte, s string) []byte { return append(cborHead(b, 0x60, uint64(len(s))), s...) }

// Limits checkBody applies: the protocol decoder's, less one level of
// nesting for the record map around the body.
const (
	bodyMaxNesting = protocol.MaxNesting - 1
	bodyMaxArray   = 10000
	bodyMaxMap     = 1024
)

// checkBody checks that b is exactly one CBOR map holding only the JSON data
// model (text-keyed maps without duplicate keys, arrays, text, integers,
// finite floats, true, false, null), with definite lengths, no tags, valid
// UTF-8 and the decoder's limits on nesting and sizes. It accepts a subset
// of what protocol.DecodeRecord accepts in a body (FuzzCodec checks that),
// so a stored record always decodes, whoever made the body. The intake's
// bodies, made by the protocol package, always pass.
func checkBody(b []byte) error {
	if len(b) == 0 || b[0]>>5 != 5 {
		return fmt.Errorf("body is not a CBOR map")
	}
	n, err := bodyItem(b, 0, 1)
	if err != nil {
		return fmt.Errorf("body: %w", err)
	}
	if n != len(b) {
		return fmt.Errorf("body has %d bytes after its CBOR map", len(b)-n)
	}
	return nil
}

// bodyHead reads the CBOR head at b[off]: major type, argument, offset
// after the head.
func bodyHead(b []byte, off int) (major byte, arg uint64, next int, err error) {
	if off >= len(b) {
		return 0, 0, 0, fmt.Errorf("truncated")
	}
	major, ai := b[off]>>5, b[off]&0x1f
	off++
	switch {
	case ai < 24:
		return major, uint64(ai), off, nil
	case ai <= 27:
		n := 1 << (ai - 24)
		if len(b)-off < n {
			return 0, 0, 0, fmt.Errorf("truncated")
		}
		for _, x := range b[off : off+n] {
			arg = arg<<8 | uint64(x)
		}
		return major, arg, off + n, nil
	}
	return 0, 0, 0, fmt.Errorf("indefinite length or reserved head 0x%02x", b[off-1])
}

// bodyItem checks the item at b[off:] and returns the offset after it.
func bodyItem(b []byte, off, depth int) (int, error) {
	start := off
	major, arg, off, err := bodyHead(b, off)
	if err != nil {
		return 0, err
	}
	switch major {
	case 0:
		return off, nil
	case 1:
		if arg >= 1<<63 {
			return 0, fmt.Errorf("negative integer out of the int64 range")
		}
		return off, nil
	case 3:
		if arg > uint64(len(b)-off) {
			return 0, fmt.Errorf("truncated")
		}
		end := off + int(arg)
		if !utf8.Valid(b[off:end]) {
			return 0, fmt.Errorf("text that is not valid UTF-8")
		}
		return end, nil
	case 4, 5:
		if depth > bodyMaxNesting {
			return 0, fmt.Errorf("nesting deeper than %d", bodyMaxNesting)
		}
		if major == 4 {
			if arg > bodyMaxArray {
				return 0, fmt.Errorf("an array of %d elements; the limit is %d", arg, bodyMaxArray)
			}
			for range arg {
				if off, err = bodyItem(b, off, depth+1); err != nil {
					return 0, err
				}
			}
			return off, nil
		}
		if arg > bodyMaxMap {
			return 0, fmt.Errorf("a map of %d pairs; the limit is %d", arg, bodyMaxMap)
		}
		var small [16][]byte // the keys of a small map, compared without allocating
		var seen map[string]struct{}
		for i := range arg {
			km, klen, koff, err := bodyHead(b, off)
			if err != nil {
				return 0, err
			}
			if km != 3 {
				return 0, fmt.Errorf("a map key that is not a text string")
			}
			if off, err = bodyItem(b, off, depth+1); err != nil {
				return 0, err
			}
			k := b[koff : koff+int(klen)]
			if arg <= uint64(len(small)) {
				for _, x := range small[:i] {
					if bytes.Equal(x, k) {
						return 0, fmt.Errorf("duplicate map key %q", k)
					}
				}
				small[i] = k
			} else {
				if seen == nil {
					seen = make(map[string]struct{}, arg)
				}
				if _, dup := seen[string(k)]; dup {
					return 0, fmt.Errorf("duplicate map key %q", k)
				}
				seen[string(k)] = struct{}{}
			}
			if off, err = bodyItem(b, off, depth+1); err != nil {
				return 0, err
			}
		}
		return off, nil
	case 7:
		switch b[start] {
		case 0xf4, 0xf5, 0xf6: // false, true, null
			return off, nil
		case 0xf9:
			if arg&0x7c00 == 0x7c00 {
				return 0, fmt.Errorf("NaN or infinity")
			}
			return off, nil
		case 0xfa:
			if arg&0x7f800000 == 0x7f800000 {
				return 0, fmt.Errorf("NaN or infinity")
			}
			return off, nil
		case 0xfb:
			if arg&0x7ff0000000000000 == 0x7ff0000000000000 {
				return 0, fmt.Errorf("NaN or infinity")
			}
			return off, nil
		}
		return 0, fmt.Errorf("simple value 0x%02x outside the JSON data model", b[start])
	}
	return 0, fmt.Errorf("CBOR major type %d outside the JSON data model (byte strings and tags are not allowed)", major)
}
