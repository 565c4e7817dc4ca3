package protocol

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// RecordVersion is the version of the record format this package writes.
const RecordVersion = 1

// Class decides what the edge may do with a record under disk pressure.
type Class string

const (
	// ClassLedger records (sales, returns, Z reports, inventory, rejections)
	// are never dropped. When their quota is full, new ones are refused.
	ClassLedger Class = "ledger"
	// ClassTelemetry records may be shed oldest first when their quota is
	// reached; each shed record leaves a tombstone in the chain.
	ClassTelemetry Class = "telemetry"
)

// ClassOf returns the class of an event type: telemetry for "telemetry.*",
// ledger for everything else.
func ClassOf(eventType string) Class {
	if strings.HasPrefix(eventType, "telemetry.") {
		return ClassTelemetry
	}
	return ClassLedger
}

// Stream names one outbox life: an edge and its epoch. Sequence numbers are
// per stream, start at 1 and have no gaps.
type Stream struct {
	Edge  string `cbor:"edge" json:"edge"`
	Epoch Epoch  `cbor:"epoch" json:"epoch"`
}

func (s Stream) String() string { return s.Edge + "/" + s.Epoch.String() }

// Record is an Event as the edge accepted it. Its bytes are its core
// deterministic CBOR encoding, and its hash is SHA-256 of those bytes as
// stored; nothing re-encodes a record before hashing it.
//
// A tombstone stands in for a record whose body was shed under disk
// pressure: it has no body and carries the shed record's hash in Shed. The
// chain runs through the tombstone as if the record were still there.
type Record struct {
	V        uint64          `cbor:"v"`
	Edge     string          `cbor:"edge"`
	Epoch    Epoch           `cbor:"epoch"`
	Seq      uint64          `cbor:"seq"`
	Device   string          `cbor:"device"`
	ID       string          `cbor:"id"`
	Type     string          `cbor:"type"`
	TS       int64           `cbor:"ts"`        // device clock, Unix ms
	EdgeTime HLCTime         `cbor:"edge_time"` // hybrid logical clock
	Class    Class           `cbor:"class"`
	Prev     Hash            `cbor:"prev"`
	Body     cbor.RawMessage `cbor:"body,omitempty"`
	Shed     *Hash           `cbor:"shed,omitempty"` // tombstones only
}

// NewRecord builds the record for an accepted event. The caller (the
// outbox) fills Seq, EdgeTime and Prev inside its commit.
func NewRecord(s Stream, device string, ev Event) Record {
	return Record{
		V:      RecordVersion,
		Edge:   s.Edge,
		Epoch:  s.Epoch,
		Device: device,
		ID:     ev.ID,
		Type:   ev.Type,
		TS:     ev.TS.UnixMilli(),
		Class:  ClassOf(ev.Type),
		Body:   cbor.RawMessage(ev.Body),
	}
}

// Stream returns the record's stream.
func (r *Record) Stream() Stream { return Stream{Edge: r.Edge, Epoch: r.Epoch} }

// IsTombstone reports whether r stands in for a shed record.
func (r *Record) IsTombstone() bool { return r.Shed != nil }

// Encode returns the record's deterministic CBOR bytes.
func (r *Record) Encode() []byte { return marshal(r) }

// Tombstone returns the tombstone that replaces the record whose bytes are
// raw: the same fields without the body, and Shed set to the hash of raw.
func Tombstone(raw []byte) (Record, error) {
	r, err := DecodeRecord(raw)
	if err != nil {
		return Record{}, err
	}
	if r.IsTombstone() {
		return r, nil
	}
	h := HashBytes(raw)
	r.Body = nil
	r.Shed = &h
	return r, nil
}

// LinkHash is the hash the next record's prev must equal: SHA-256 of raw,
// or for a tombstone the hash of the record it replaced.
func (r *Record) LinkHash(raw []byte) Hash {
	if r.Shed != nil {
		return *r.Shed
	}
	return HashBytes(raw)
}

// DecodeRecord decodes and checks one record's bytes.
func DecodeRecord(raw []byte) (Record, error) { return decodeRecordAfter(raw, nil) }

// decodeRecordAfter is DecodeRecord for a record that follows prev (nil
// when there is none), whose strings it may share (decodeRecordFast).
func decodeRecordAfter(raw []byte, prev *Record) (Record, error) {
	if r, ok := decodeRecordFast(raw, prev); ok {
		return r, nil
	}
	return decodeRecordRef(raw)
}

// decodeRecordRef is the reference decoder, for every record the fast
// path does not take: the strict, reflection-based one.
func decodeRecordRef(raw []byte) (Record, error) {
	var r Record
	if len(raw) > MaxRecordBytes {
		return r, tooLarge("record", len(raw), MaxRecordBytes)
	}
	if err := unmarshal("record", raw, &r); err != nil {
		return r, err
	}
	if err := r.check(); err != nil {
		return r, err
	}
	return r, nil
}

func (r *Record) check() error {
	if err := r.checkFields(); err != nil {
		return err
	}
	if len(r.Body) > 0 {
		if err := checkBody(r.Body); err != nil {
			return err
		}
	}
	return nil
}

// checkFields is check without the body's own check, which the fast path
// has made as it read the body.
func (r *Record) checkFields() error {
	if r.V != RecordVersion {
		return fieldf("v", "is %d; this version reads record version %d", r.V, RecordVersion)
	}
	if err := ValidateName("edge", r.Edge); err != nil {
		return err
	}
	if r.Epoch.IsZero() {
		return fieldf("epoch", "is zero")
	}
	if r.Seq == 0 {
		return fieldf("seq", "is 0; sequence numbers start at 1")
	}
	if err := ValidateName("device", r.Device); err != nil {
		return err
	}
	if err := ValidateEventID(r.ID); err != nil {
		return err
	}
	if err := ValidateType(r.Type); err != nil {
		return err
	}
	if err := CheckTS(r.TS); err != nil {
		return err
	}
	if ms := int64(r.EdgeTime >> hlcLogicalBits); ms > maxTSms {
		return fieldf("edge_time", "%d ms is after 9999-12-31", ms)
	}
	if r.Class != ClassOf(r.Type) {
		return fieldf("class", "is %q; type %q has class %q", r.Class, r.Type, ClassOf(r.Type))
	}
	if r.Shed != nil && len(r.Body) > 0 {
		return fieldf("body", "a tombstone (shed set) has no body")
	}
	return nil
}

// RecordJSON is the JSON view of a record, for exports and the API. It is
// for people and tools; the CBOR bytes remain the record of truth.
type RecordJSON struct {
	Edge     string          `json:"edge"`
	Epoch    Epoch           `json:"epoch"`
	Seq      uint64          `json:"seq"`
	Device   string          `json:"device"`
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	TS       time.Time       `json:"ts"`
	EdgeTime time.Time       `json:"edge_time"`
	HLC      HLCTime         `json:"hlc"`
	Class    Class           `json:"class"`
	Prev     Hash            `json:"prev"`
	Hash     Hash            `json:"hash"`
	Shed     bool            `json:"shed,omitempty"`
	Body     json.RawMessage `json:"body,omitempty"`
}

// JSON returns the JSON view of r, whose bytes are raw.
func (r *Record) JSON(raw []byte) (RecordJSON, error) {
	j := RecordJSON{
		Edge: r.Edge, Epoch: r.Epoch, Seq: r.Seq, Device: r.Device, ID: r.ID, Type: r.Type,
		TS: time.UnixMilli(r.TS).UTC(), EdgeTime: r.EdgeTime.Time(), HLC: r.EdgeTime,
		Class: r.Class, Prev: r.Prev, Hash: r.LinkHash(raw), Shed: r.Shed != nil,
	}
	if len(r.Body) > 0 {
		b, err := Body(r.Body).MarshalJSON()
		if err != nil {
			return j, fmt.Errorf("record %d body: %w", r.Seq, err)
		}
		j.Body = b
	}
	return j, nil
}
