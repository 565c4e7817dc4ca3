package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Ledger is what ingest needs of the ledger (cloud/ledger implements it):
// Commit verifies a batch of segments and commits the valid, new ones in
// one transaction, returning one Outcome per input in input order; it is
// idempotent, so redelivering a batch is always safe. NoteHello records a
// hello and returns the stream's watermark for the receipt that answers it.
type Ledger interface {
	Commit(ctx context.Context, batch []Input) ([]Outcome, error)
	NoteHello(ctx context.Context, h protocol.Hello) (Watermark, error)
}

// RefusedError is a Commit error that comes from the data rather than from
// the database being unavailable: the database refused the rows themselves,
// so running the same batch again fails the same way. A Ledger returns it
// (wrapped or not), and ingest then commits the batch's inputs one by one
// and refuses the one that fails, instead of retrying the batch forever.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

func refused(err error) bool {
	var re *RefusedError
	return errors.As(err, &re)
}

// Watermark is a stream's committed state: the fields of a receipt.
type Watermark struct {
	Stream      protocol.Stream
	HWM         uint64        // every seq up to and including HWM is committed
	Head        protocol.Hash // link hash of record HWM (zero when HWM is 0)
	CommittedAt time.Time     // the commit that reached HWM (zero when HWM is 0)
}

// Input is one segment to commit, as it arrived.
type Input struct {
	// TopicEdge is the edge id of the topic or subject the segment arrived
	// on: the identity the broker authenticated. A segment naming another
	// edge is quarantined, so that one edge cannot replay another's
	// segments.
	TopicEdge string
	Segment   *protocol.Segment
	// Raw is the segment as received (optional). It is what a quarantine
	// row keeps; without it the segment is re-encoded.
	Raw []byte
	// Problem says why Segment is nil: Raw did not decode. Such an input is
	// quarantined (malformed) under TopicEdge.
	Problem string
}

// Kind is what Ledger.Commit did with one input.
type Kind uint8

const (
	// KindCommitted: the input's records above the stream's hwm are
	// committed. Answer with a receipt.
	KindCommitted Kind = iota + 1
	// KindDuplicate: every record of the input was committed before (and
	// is the same). Answer with a receipt of the stored watermark.
	KindDuplicate
	// KindGap: the input starts above hwm+1. Nothing of it is committed;
	// wait for the missing segments or nack (NackGap) with the hwm.
	KindGap
	// KindQuarantined: the input failed its signature or chain check. It
	// is kept in the quarantine table and never committed; nack with Code.
	KindQuarantined
)

func (k Kind) String() string {
	switch k {
	case KindCommitted:
		return "committed"
	case KindDuplicate:
		return "duplicate"
	case KindGap:
		return "gap"
	case KindQuarantined:
		return "quarantined"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Outcome is what Ledger.Commit did with one input.
type Outcome struct {
	Kind Kind
	// Watermark is the stream's state for the receipt or nack. For
	// KindCommitted it is the state right after this input's records; for
	// the other kinds the stream's state when the batch committed. It has
	// only Stream set for an input quarantined before its stream was read
	// (a bad signature, an unknown or revoked key, the wrong topic).
	Watermark
	Records      int               // records this input added (KindCommitted)
	Code         protocol.NackCode // KindGap and KindQuarantined
	Reason       string            // KindGap and KindQuarantined, for people
	QuarantineID int64             // KindQuarantined: the quarantine row
}
