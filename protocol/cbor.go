package protocol

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Limits on what a decoder of outside bytes accepts. They bound memory and
// work per message; anything over them is refused, never truncated.
const (
	MaxEventBytes   = 64 << 10 // one event, JSON or CBOR
	MaxBatchBytes   = 1 << 20  // a batch of events in one publish or POST
	MaxBatchEvents  = 1000     // events in one batch
	MaxBodyBytes    = 32 << 10 // an event body, as canonical CBOR
	MaxRecordBytes  = 48 << 10 // one record's bytes
	MaxSegmentBytes = 1 << 20  // a segment, compressed or not (NATS' default max_payload)
	MaxSegmentRecs  = 10000    // records in one segment
	MaxSignedBytes  = 4 << 10  // a checkpoint, receipt, nack or hello
	MaxNesting      = 16       // arrays and maps inside each other
	maxArrayElems   = 10000
	maxMapPairs     = 1024
)

var (
	// encMode is RFC 8949 core deterministic encoding. Every record, every
	// signed payload and every canonical body is encoded with it.
	encMode cbor.EncMode

	// decMode decodes outside bytes with explicit limits: bounded nesting,
	// array and map sizes, no duplicate map keys, no indefinite lengths,
	// valid UTF-8 only, unknown struct fields refused.
	decMode cbor.DecMode

	// coseMode checks COSE messages (CBOR tag 18) against the same limits
	// before go-cose, whose own decoder has none, parses them.
	coseMode cbor.DecMode

	// anyDecMode is decMode for decoding into interface{} (event bodies):
	// maps become map[string]any, integers int64 or uint64.
	anyDecMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	opts := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   MaxNesting,
		MaxArrayElements:  maxArrayElems,
		MaxMapPairs:       maxMapPairs,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}
	decMode, err = opts.DecMode()
	if err != nil {
		panic(err)
	}
	copts := opts
	copts.TagsMd = cbor.TagsAllowed
	coseMode, err = copts.DecMode()
	if err != nil {
		panic(err)
	}
	opts.IntDec = cbor.IntDecConvertNone
	opts.DefaultMapType = typeOfMapStringAny
	anyDecMode, err = opts.DecMode()
	if err != nil {
		panic(err)
	}
}

// unmarshal decodes data into v with the limited decoder and turns any
// failure into ErrMalformed naming what was being decoded.
func unmarshal(what string, data []byte, v any) error {
	if err := decMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %v: %w", what, err, ErrMalformed)
	}
	return nil
}

// marshal encodes v deterministically. It fails only on programming errors.
func marshal(v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("protocol: deterministic encode %T: %v", v, err))
	}
	return b
}
