package protocol

import "encoding/binary"

// CBOR heads and the size arithmetic that follows from them, for encoders
// outside this package that write CBOR by hand for speed (the outbox's
// record templates, its segment builder). They live here, with the
// decoders' heads, so that the wire's arithmetic is written once.

// AppendCBORHead appends the head of a data item of major type major (0 to
// 7) with argument n, in the shortest form, as deterministic encoding
// requires.
func AppendCBORHead(b []byte, major byte, n uint64) []byte {
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

// CBORHeadLen is the length of the shortest head with argument n.
func CBORHeadLen(n uint64) int {
	switch {
	case n < 24:
		return 1
	case n <= 0xff:
		return 2
	case n <= 0xffff:
		return 3
	case n <= 0xffffffff:
		return 5
	}
	return 9
}

// AppendCBORUint appends an unsigned integer.
func AppendCBORUint(b []byte, v uint64) []byte { return AppendCBORHead(b, 0, v) }

// AppendCBORInt appends an integer, unsigned or negative.
func AppendCBORInt(b []byte, v int64) []byte {
	if v >= 0 {
		return AppendCBORHead(b, 0, uint64(v))
	}
	return AppendCBORHead(b, 1, uint64(-1-v))
}

// AppendCBORBytes appends a byte string.
func AppendCBORBytes(b, v []byte) []byte { return append(AppendCBORHead(b, 2, uint64(len(v))), v...) }

// AppendCBORText appends a text string (s must be valid UTF-8).
func AppendCBORText(b []byte, s string) []byte {
	return append(AppendCBORHead(b, 3, uint64(len(s))), s...)
}

// SegmentRecordCost is what a record of n bytes adds to an encoded segment:
// its bytes and the byte-string head in front of them.
func SegmentRecordCost(n int) int { return CBORHeadLen(uint64(n)) + n }

// SegmentFixedCost bounds what a segment costs beyond its records' costs:
// SegmentOverhead for the envelope, plus the head of the records array (at
// most MaxSegmentRecs elements).
const SegmentFixedCost = SegmentOverhead + 3 // CBORHeadLen(MaxSegmentRecs)
