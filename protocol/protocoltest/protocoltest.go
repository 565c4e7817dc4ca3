// Package protocoltest builds what an edge's outbox would hold, for the
// tests of the parts that consume it, as net/http/httptest does for HTTP:
// a stream's records, hash-chained and covered by signed checkpoints, cut
// into segments.
//
// A Stream links each record it is given to the one before and keeps the
// link hashes and edge times that its checkpoints sign, so that a test
// says only what its records are about:
//
//	s := protocoltest.NewStream(t, "shop-1", protocoltest.NewSigner(t))
//	s.AddN(t, 10)
//	seg := s.Segment(1, 10) // verifies against s.Signer.Public()
//
// It is for tests only: keys come from names or from crypto/rand, and
// failures end the test.
package protocoltest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Key returns the Ed25519 key whose seed is SHA-256 of name: the same on
// every run and in every implementation (protocol/testdata/vectors/keys.json
// lists the ones the vectors use).
func Key(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

// Signer returns a signer with Key(name).
func Signer(tb testing.TB, name string) *protocol.Signer {
	tb.Helper()
	s, err := protocol.NewSigner(Key(name))
	if err != nil {
		tb.Fatalf("signer %q: %v", name, err)
	}
	return s
}

// NewSigner returns a signer with a fresh random key.
func NewSigner(tb testing.TB) *protocol.Signer {
	tb.Helper()
	_, priv, err := protocol.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	s, err := protocol.NewSigner(priv)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// NewEpoch returns a fresh random epoch.
func NewEpoch(tb testing.TB) protocol.Epoch {
	tb.Helper()
	e, err := protocol.NewEpoch(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// Stream is one outbox life of an edge: its records 1..n, chained, and
// the key that signs their checkpoints. The zero value of everything but
// Stream and Signer is an empty stream; a literal with a fixed Stream
// makes a reproducible one.
type Stream struct {
	Stream protocol.Stream
	Signer *protocol.Signer
	Raws   [][]byte           // Raws[i] is seq i+1, as the edge encoded it
	Links  []protocol.Hash    // Links[i] is the link hash of seq i+1
	Times  []protocol.HLCTime // Times[i] is the edge time of seq i+1
}

// NewStream returns an empty stream of edge with a fresh epoch, signed by
// signer.
func NewStream(tb testing.TB, edge string, signer *protocol.Signer) *Stream {
	tb.Helper()
	return &Stream{Stream: protocol.Stream{Edge: edge, Epoch: NewEpoch(tb)}, Signer: signer}
}

// SignedBy returns the stream with its checkpoints signed by k instead: a
// rotated key, or another edge's, for the tests of what the cloud refuses.
// The two share their records; add to one only.
func (s *Stream) SignedBy(k *protocol.Signer) *Stream {
	c := *s
	c.Signer = k
	return &c
}

// Last is the seq of the last record (0 when there is none).
func (s *Stream) Last() uint64 { return uint64(len(s.Raws)) }

// Head is the chain state after the last record.
func (s *Stream) Head() protocol.ChainState {
	h := protocol.ChainState{Stream: s.Stream, Seq: s.Last()}
	if h.Seq > 0 {
		h.Head = s.Links[h.Seq-1]
	}
	return h
}

// Add appends r as the next record and returns its bytes. It sets r's
// stream, seq and prev; the rest (device, event, class, edge time, a
// tombstone's shed hash) is the caller's.
func (s *Stream) Add(r protocol.Record) []byte {
	r.Edge, r.Epoch = s.Stream.Edge, s.Stream.Epoch
	r.Seq = s.Last() + 1
	r.Prev = s.Head().Head
	raw := r.Encode()
	s.Raws = append(s.Raws, raw)
	s.Links = append(s.Links, r.LinkHash(raw))
	s.Times = append(s.Times, r.EdgeTime)
	return raw
}

// AddEvent appends the record of ev from device, accepted at the edge at
// the event's own time (edge time HLCFromTime(ev.TS)).
func (s *Stream) AddEvent(device string, ev protocol.Event) []byte {
	r := protocol.NewRecord(s.Stream, device, ev)
	r.EdgeTime = protocol.HLCFromTime(ev.TS)
	return s.Add(r)
}

// T0 is the device time of the records AddN makes: seq n is at T0 plus n
// milliseconds.
var T0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// AddN appends n records for tests that need records but not particular
// ones: "sale.completed" events from device "dev-1" with body {"n": seq},
// a "telemetry.temperature" one every fifth seq, one millisecond apart
// from T0. It returns s.
func (s *Stream) AddN(tb testing.TB, n int) *Stream {
	tb.Helper()
	for range n {
		seq := s.Last() + 1
		typ := "sale.completed"
		if seq%5 == 0 {
			typ = "telemetry.temperature"
		}
		body, err := protocol.NewBody(map[string]any{"n": seq})
		if err != nil {
			tb.Fatal(err)
		}
		s.AddEvent("dev-1", protocol.Event{ID: fmt.Sprintf("ev-%d", seq), Type: typ,
			TS: T0.Add(time.Duration(seq) * time.Millisecond), Body: body})
	}
	return s
}

// Checkpoint returns the checkpoint over records 1..seq, signed.
func (s *Stream) Checkpoint(seq uint64) []byte {
	return s.Signer.SignCheckpoint(protocol.Checkpoint{Edge: s.Stream.Edge, Epoch: s.Stream.Epoch, Seq: seq,
		Head: s.Links[seq-1], EdgeTime: s.Times[seq-1]})
}

// Segment returns records first..last with the checkpoint of last, as the
// uplink sends them. Records is a copy of the stream's slice (a test may
// tamper with it). It panics when the stream has no record last, as a
// slice out of range does.
func (s *Stream) Segment(first, last uint64) *protocol.Segment {
	return &protocol.Segment{
		V: protocol.SegmentVersion, Edge: s.Stream.Edge, Epoch: s.Stream.Epoch,
		First: first, Last: last, Records: slices.Clone(s.Raws[first-1 : last]),
		Checkpoint: s.Checkpoint(last),
	}
}

// Segments cuts the whole stream into segments of size records (the last
// may be shorter).
func (s *Stream) Segments(size int) []*protocol.Segment {
	var out []*protocol.Segment
	for first := uint64(1); first <= s.Last(); first += uint64(size) {
		out = append(out, s.Segment(first, min(first+uint64(size)-1, s.Last())))
	}
	return out
}

// Encode returns seg's wire bytes (zstd-compressed when compress is set).
func Encode(tb testing.TB, seg *protocol.Segment, compress bool) []byte {
	tb.Helper()
	b, err := protocol.EncodeSegment(seg, compress)
	if err != nil {
		tb.Fatalf("encode segment %s %d..%d: %v", seg.Stream(), seg.First, seg.Last, err)
	}
	return b
}
