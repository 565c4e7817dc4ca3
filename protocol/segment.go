package protocol

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// SegmentVersion is the version of the segment format this package writes.
const SegmentVersion = 1

// Segment is the uplink unit: a run of one stream's records, first..last,
// as their stored bytes, and the edge's signed checkpoint for last.
type Segment struct {
	V          uint64   `cbor:"v"`
	Edge       string   `cbor:"edge"`
	Epoch      Epoch    `cbor:"epoch"`
	First      uint64   `cbor:"first"`
	Last       uint64   `cbor:"last"`
	Records    [][]byte `cbor:"records"`
	Checkpoint []byte   `cbor:"checkpoint"`
}

// Stream returns the segment's stream.
func (s *Segment) Stream() Stream { return Stream{Edge: s.Edge, Epoch: s.Epoch} }

// MsgID is the segment's deduplication id for brokers that have one (NATS'
// Nats-Msg-Id): {edge}:{epoch}:{first}-{last}~{rewinds}, where rewinds is
// how many times a nack has made the sender's uplink rewind. A resend in
// the same run of the uplink that no nack asked for (after a reconnect or
// an ack timeout, when the cloud may only be behind) has the same id, and
// a broker drops it while the first copy is stored; a resend the cloud
// asked for (it consumed and refused the first copy) has a new one. A transport
// whose broker shares one duplicate window among all edges makes the id
// its own (the NATS transport appends a secret), so no one else can
// publish it first. The cloud's watermark, not the broker, drops
// duplicates.
func (s *Segment) MsgID(rewinds uint64) string {
	return fmt.Sprintf("%s:%s:%d-%d~%d", s.Edge, s.Epoch, s.First, s.Last, rewinds)
}

// SegmentOverhead is an upper bound on the bytes a segment adds around its
// records' bytes (map keys, ids, the checkpoint), for builders that fill a
// segment up to a byte cap.
const SegmentOverhead = 512

// zstdMagic starts every zstd frame. A CBOR segment starts with a map head
// (0xa0-0xbf), so the two are told apart by the first byte.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

var (
	zenc     *zstd.Encoder
	zdec     *zstd.Decoder
	zencOnce sync.Once
	zdecOnce sync.Once
)

// EncodeSegment encodes s, zstd-compressed when compress is true and that
// makes it smaller. It refuses a segment over MaxSegmentBytes.
func EncodeSegment(s *Segment, compress bool) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	b := marshal(s)
	if len(b) > MaxSegmentBytes {
		return nil, tooLarge("segment", len(b), MaxSegmentBytes)
	}
	if !compress {
		return b, nil
	}
	zencOnce.Do(func() {
		var err error
		zenc, err = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			panic(err)
		}
	})
	z := zenc.EncodeAll(b, make([]byte, 0, len(b)/2))
	if len(z) >= len(b) {
		return b, nil // incompressible: the plain form is smaller, and within the cap
	}
	return z, nil
}

// DecodeSegment decodes a segment, decompressing it first if it is a zstd
// frame. It checks framing and limits only: the caller verifies the chain
// (VerifyChain) and the checkpoint (VerifyCheckpoint).
func DecodeSegment(b []byte) (*Segment, error) {
	if len(b) > MaxSegmentBytes {
		return nil, tooLarge("segment", len(b), MaxSegmentBytes)
	}
	if bytes.HasPrefix(b, zstdMagic) {
		zdecOnce.Do(func() {
			var err error
			zdec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderMaxMemory(MaxSegmentBytes), zstd.WithDecoderMaxWindow(MaxSegmentBytes))
			if err != nil {
				panic(err)
			}
		})
		d, err := zdec.DecodeAll(b, nil)
		if err != nil {
			return nil, fmt.Errorf("segment: zstd: %v: %w", err, ErrMalformed)
		}
		if len(d) > MaxSegmentBytes {
			return nil, tooLarge("decompressed segment", len(d), MaxSegmentBytes)
		}
		b = d
	}
	var s Segment
	if err := unmarshal("segment", b, &s); err != nil {
		return nil, err
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Segment) check() error {
	if s.V != SegmentVersion {
		return fieldf("segment.v", "is %d; this version reads segment version %d", s.V, SegmentVersion)
	}
	if err := ValidateName("edge", s.Edge); err != nil {
		return prefixField("segment", err)
	}
	if s.Epoch.IsZero() {
		return fieldf("segment.epoch", "is zero")
	}
	n := len(s.Records)
	switch {
	case n == 0:
		return fieldf("segment.records", "is empty")
	case n > MaxSegmentRecs:
		return fieldf("segment.records", "has %d records; the limit is %d", n, MaxSegmentRecs)
	case s.First == 0:
		return fieldf("segment.first", "is 0; sequence numbers start at 1")
	case s.Last < s.First || s.Last-s.First+1 != uint64(n):
		return fieldf("segment", "first %d and last %d do not match %d records", s.First, s.Last, n)
	case len(s.Checkpoint) == 0:
		return fieldf("segment.checkpoint", "is missing")
	case len(s.Checkpoint) > MaxSignedBytes:
		return fieldf("segment.checkpoint", "is %d bytes; the limit is %d", len(s.Checkpoint), MaxSignedBytes)
	}
	for i, r := range s.Records {
		if len(r) > MaxRecordBytes {
			return fieldf(fmt.Sprintf("segment.records[%d]", i), "is %d bytes; the limit is %d", len(r), MaxRecordBytes)
		}
	}
	return nil
}

// HelloVersion is the version of the hello this package writes. Version 2
// adds the edge's signed checkpoint of its head: the cloud believes the
// edge's head (and so the lag it reports) only from a signature, never
// from the unsigned seq. Version 3 adds Cmd, the highest cloud command the
// edge has accepted, so the cloud sends it the commands above it that it
// keeps (a hello asks for pending commands).
const HelloVersion = 3

// Hello opens every uplink session: the edge names its stream and its head,
// and the cloud answers with its latest receipt (or a receipt with HWM 0 for
// a stream it has never seen), so the edge resumes from the cloud's
// watermark rather than from its own guess. The hello itself is not signed:
// the broker has authenticated the edge, and a hello only ever asks for a
// signed answer. What the cloud records from it (the edge's head, for lag)
// comes from Checkpoint, which is.
type Hello struct {
	V      uint64 `cbor:"v" json:"v"`
	Edge   string `cbor:"edge" json:"edge"`
	Epoch  Epoch  `cbor:"epoch" json:"epoch"`
	Seq    uint64 `cbor:"seq" json:"seq"`                         // the edge's last seq (0 when empty)
	SentAt int64  `cbor:"sent_at" json:"sent_at"`                 // Unix ms, for logs
	Agent  string `cbor:"agent,omitempty" json:"agent,omitempty"` // software version
	// Checkpoint (version 2) is the edge's signed checkpoint for Seq, when
	// it still holds that record; absent when everything is acknowledged.
	Checkpoint []byte `cbor:"checkpoint,omitempty" json:"checkpoint,omitempty"`
	// Cmd (version 3) is the sequence number of the last cloud command this
	// edge accepted (0: none). Unsigned like the rest of the hello: it only
	// asks the cloud to send what is above it; the edge refuses a command
	// it has already accepted whatever the cloud sends.
	Cmd uint64 `cbor:"cmd,omitempty" json:"cmd,omitempty"`
}

// EncodeHello encodes h as a version 3 hello.
func EncodeHello(h Hello) []byte {
	h.V = HelloVersion
	return marshal(&h)
}

// DecodeHello decodes and checks a hello.
func DecodeHello(b []byte) (Hello, error) {
	var h Hello
	if len(b) > MaxSignedBytes {
		return h, tooLarge("hello", len(b), MaxSignedBytes)
	}
	if err := unmarshal("hello", b, &h); err != nil {
		return h, err
	}
	if h.V < 1 || h.V > HelloVersion {
		return h, fieldf("hello.v", "is %d; this version reads hello versions 1 to %d (upgrade the cloud before its edges)", h.V, HelloVersion)
	}
	if h.V < 3 && h.Cmd != 0 {
		return h, fieldf("hello.cmd", "is not part of hello version %d", h.V)
	}
	if h.V == 1 && h.Checkpoint != nil {
		return h, fieldf("hello.checkpoint", "is not part of hello version 1")
	}
	if len(h.Checkpoint) > MaxSignedBytes {
		return h, fieldf("hello.checkpoint", "is %d bytes; the limit is %d", len(h.Checkpoint), MaxSignedBytes)
	}
	if err := ValidateName("edge", h.Edge); err != nil {
		return h, prefixField("hello", err)
	}
	if h.Epoch.IsZero() {
		return h, fieldf("hello.epoch", "is zero")
	}
	if len(h.Agent) > 128 {
		return h, fieldf("hello.agent", "is %d bytes; the limit is 128", len(h.Agent))
	}
	return h, nil
}
