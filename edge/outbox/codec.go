package outbox

import (
	"bytes"
	"slices"

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
	phBody   = append(protocol.AppendCBORText([]byte{0xa1}, "\x01outpost:body\x01"), 0x00) // {"\x01outpost:body\x01": 0}
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
				slotSeq:    protocol.AppendCBORUint(nil, phSeq),
				slotTime:   protocol.AppendCBORUint(nil, phTime),
				slotTS:     protocol.AppendCBORInt(nil, phTS),
				slotPrev:   protocol.AppendCBORBytes(nil, phPrev[:]),
				slotID:     protocol.AppendCBORText(nil, phID),
				slotType:   protocol.AppendCBORText(nil, phType),
				slotDevice: protocol.AppendCBORText(nil, phDevice),
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
			out = protocol.AppendCBORUint(out, seq)
		case slotTime:
			out = protocol.AppendCBORUint(out, uint64(et))
		case slotTS:
			out = protocol.AppendCBORInt(out, ev.TS.UnixMilli())
		case slotPrev:
			out = protocol.AppendCBORBytes(out, prev[:])
		case slotID:
			out = protocol.AppendCBORText(out, ev.ID)
		case slotType:
			out = protocol.AppendCBORText(out, ev.Type)
		case slotDevice:
			out = protocol.AppendCBORText(out, e.Device)
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

// The CBOR writers (protocol.AppendCBOR*) and the segment size arithmetic
// are protocol's.

// segmentCost is what one record of n bytes adds to an encoded segment.
func segmentCost(n int) int { return protocol.SegmentRecordCost(n) }

// segmentFixed bounds what a segment costs beyond its records.
const segmentFixed = protocol.SegmentFixedCost

// bodyMaxNesting is the deepest body protocol.CheckBody accepts: the
// decoder's limit, less one level for the record map around the body.
const bodyMaxNesting = protocol.MaxNesting - 1

// checkBody is protocol.CheckBody: the body check DecodeRecord applies, so a
// stored record always decodes, whoever made the body.
func checkBody(b []byte) error { return protocol.CheckBody(b) }
