package ledger

import (
	"context"
	"encoding/binary"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The commit's COPY, in Postgres' binary COPY format, written here from
// the committed records. pgx's CopyFrom encodes every value through its
// type map: a map lookup by the value's type and a plan per value, 0.37 to
// 0.75 ms of CPU per 1,000 rows on the development machine (15 values a
// row), beside boxing each value into an interface when the rows are
// [][]any. The ledger's columns are five fixed types, so the commit writes
// them itself, in about 0.03 ms per 1,000 rows, and leaves the cores to
// Postgres for the COPY (docs/SCALING.md, "Commit cost"). TestCommitWritesEveryColumn compares every stored column with the
// plain COPY's rows (CeilingRows), which pgx encodes.

// copyLedgerSQL is the COPY of ledgerColumns.
var copyLedgerSQL = `COPY ledger (` + strings.Join(ledgerColumns, ", ") + `) FROM STDIN (FORMAT binary)`

// copyLedger COPYs the ledger rows of recs within tx.
func copyLedger(ctx context.Context, tx pgx.Tx, recs []Committed) error {
	_, err := tx.Conn().PgConn().CopyFrom(ctx, &copyReader{recs: recs}, copyLedgerSQL)
	return err
}

// pgEpochMicros is 2000-01-01 UTC, where Postgres' timestamps count from,
// in microseconds after the Unix epoch.
const pgEpochMicros = 946684800 * 1_000_000

// copyReader reads the binary COPY of recs: the header, a tuple per
// record, the trailer. It encodes the tuples straight into the reader's
// buffer (pgconn reads 64 KiB at a time); a tuple that does not fit the
// rest of it waits in buf, so a large batch is never encoded whole.
type copyReader struct {
	recs    []Committed
	k       int    // the next record to encode
	buf     []byte // encoded, not yet read from off
	off     int
	started bool
	ended   bool
}

func (c *copyReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if c.off < len(c.buf) {
			m := copy(p[n:], c.buf[c.off:])
			c.off += m
			n += m
			continue
		}
		c.buf, c.off = c.buf[:0], 0
		switch {
		case !c.started:
			c.started = true
			c.buf = append(c.buf, "PGCOPY\n\xff\r\n\x00"...)
			c.buf = binary.BigEndian.AppendUint32(c.buf, 0) // flags
			c.buf = binary.BigEndian.AppendUint32(c.buf, 0) // header extension length
		case c.k < len(c.recs):
			r := &c.recs[c.k]
			c.k++
			if len(p)-n < len(r.Raw)+1024 { // may not fit: see the end of p below
				c.buf = appendLedgerTuple(c.buf, r)
				continue
			}
			t := appendLedgerTuple(p[n:n], r)
			if &t[0] != &p[n] { // it did not fit after all, and append moved it
				c.buf = append(c.buf, t...)
				continue
			}
			n += len(t)
		case !c.ended:
			c.ended = true
			c.buf = binary.BigEndian.AppendUint16(c.buf, 0xffff) // the trailer: a field count of -1
		default:
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		}
	}
	return n, nil
}

// appendLedgerTuple appends the tuple of c's ledger row, ledgerColumns in
// order: a field count, then each field's length and its binary value.
func appendLedgerTuple(b []byte, c *Committed) []byte {
	r := &c.Record
	b = binary.BigEndian.AppendUint16(b, uint16(len(ledgerColumns)))
	b = appendText(b, c.Stream.Edge)
	b = appendBytea(b, c.Stream.Epoch[:])
	b = appendInt8(b, int64(r.Seq))
	b = appendInt8(b, c.Pos)
	b = appendTimestamptz(b, c.CommittedAt.UnixMicro())
	b = appendText(b, r.Device)
	b = appendText(b, r.ID)
	b = appendText(b, r.Type)
	b = appendText(b, string(r.Class))
	b = appendTimestamptz(b, time.UnixMilli(r.TS).UnixMicro())
	b = appendTimestamptz(b, r.EdgeTime.Time().UnixMicro())
	b = appendInt8(b, int64(r.EdgeTime))
	b = binary.BigEndian.AppendUint32(b, 1)
	if r.IsTombstone() {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendBytea(b, c.Hash[:])
	return appendBytea(b, c.Raw)
}

func appendText(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}

func appendBytea(b, v []byte) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(v))), v...)
}

func appendInt8(b []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(b, 8), uint64(v))
}

// appendTimestamptz appends a time given in microseconds after the Unix
// epoch.
func appendTimestamptz(b []byte, unixMicros int64) []byte {
	return appendInt8(b, unixMicros-pgEpochMicros)
}
