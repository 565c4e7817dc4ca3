package ledger

import (
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// For the external tests: the queries whose plans they examine.
var (
	EventsQuery   = eventsQuery
	DupCheckQuery = dupCheckQuery
)

// CeilingColumns are the ledger columns a commit and the plain COPY write.
var CeilingColumns = ledgerColumns

// CeilingRows returns the ledger rows of segs (in CeilingColumns) as the
// Go values pgx reads the columns into, taken straight from the decoded
// records and not through the binary COPY writer, for the test that
// compares every stored column with them.
func CeilingRows(segs []*protocol.Segment, pos func() int64, now time.Time) ([][]any, error) {
	b, err := CeilingRecords(segs, pos, now)
	if err != nil {
		return nil, err
	}
	rows := make([][]any, 0, b.Len())
	for _, c := range b.recs {
		r := &c.Record
		rows = append(rows, []any{c.Stream.Edge, c.Stream.Epoch[:], int64(r.Seq), c.Pos, c.CommittedAt, r.Device,
			r.ID, r.Type, string(r.Class), time.UnixMilli(r.TS), r.EdgeTime.Time(), int64(r.EdgeTime),
			r.IsTombstone(), c.Hash[:], c.Raw})
	}
	return rows, nil
}
