package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/protocol"
)

// The ledger audit re-reads what is stored and checks it as an outside
// auditor would, trusting nothing the database says about itself: every
// stream's hash chain is recomputed from the rows' bytes, and every
// checkpoint's signature is checked against the keys the edge had when the
// checkpoint was committed (the fleet tables' created_at and revoked_at).
//
// Each stream is read in one snapshot, through two cursors (its rows and
// its checkpoints, each in index order) merged by seq, and checked as the
// rows arrive: the memory it holds is a cursor batch and the records since
// the last checkpoint, which is at most one segment (every commit stores a
// checkpoint for its last record).

// AuditFaultKind says, in plain words, what an audit found wrong.
type AuditFaultKind string

// What an audit can find.
const (
	AuditAltered    AuditFaultKind = "altered bytes"                 // a row's bytes are not what the chain and signatures committed to
	AuditMissing    AuditFaultKind = "missing row"                   // a seq that should be stored is not
	AuditOrder      AuditFaultKind = "rows out of order"             // a row stored under the wrong seq, or committed out of seq order
	AuditDuplicate  AuditFaultKind = "row stored twice"              // two rows with one seq
	AuditCheckpoint AuditFaultKind = "checkpoint does not verify"    // bad signature, a key not valid then, or a row that differs from what was signed
	AuditUncovered  AuditFaultKind = "record no checkpoint covers"   // records after the last checkpoint
	AuditWatermark  AuditFaultKind = "watermark disagrees with rows" // streams.hwm or head is not what the rows say
)

// AuditFault is the first bad row of one stream.
type AuditFault struct {
	Stream protocol.Stream
	Seq    uint64 // the first seq that is not as it should be
	Kind   AuditFaultKind
	Detail string
}

func (f AuditFault) String() string {
	return fmt.Sprintf("stream %s: seq %d: %s: %s", f.Stream, f.Seq, f.Kind, f.Detail)
}

// AuditOptions select what Audit checks. The zero value checks everything.
type AuditOptions struct {
	// Edge, when set, limits the audit to that edge's streams.
	Edge string
	// Since, when set, checks each stream from its last checkpoint
	// committed before Since (whose signature is checked, and whose head is
	// then trusted) instead of from seq 1.
	Since time.Time
	// From, when set, gives the seq to start each stream after: the
	// stream's checkpoint at that seq is checked and its head trusted, as
	// for Since. Streams absent from it are checked from the start. It is
	// what the incremental audit passes (AuditState).
	From map[protocol.Stream]uint64
}

// AuditStream is what an audit checked of one stream.
type AuditStream struct {
	Stream      protocol.Stream
	From        uint64 // the seq the check started after (0: from the start)
	Verified    uint64 // the last seq verified up to a good checkpoint
	Records     uint64 // rows read
	Checkpoints uint64 // checkpoints verified
	Fault       *AuditFault
}

// AuditReport is the result of an audit.
type AuditReport struct {
	Streams     []AuditStream
	Records     uint64
	Checkpoints uint64
	Faults      []AuditFault // the first fault of each bad stream, in stream order
}

// OK reports whether the audit found nothing wrong.
func (r *AuditReport) OK() bool { return len(r.Faults) == 0 }

// Audit checks the stored ledger: every selected stream's chain from its
// rows' bytes, every checkpoint's signature against the keys valid when it
// was committed, that every record is covered by a checkpoint, and that the
// stream's watermark agrees with its rows. It reports the first bad row of
// each stream. An error is a failure to read, not a finding.
func (l *Ledger) Audit(ctx context.Context, opts AuditOptions) (AuditReport, error) {
	var rep AuditReport
	streams, err := l.auditStreams(ctx, opts.Edge)
	if err != nil {
		return rep, fmt.Errorf("audit: %w", err)
	}
	for _, s := range streams {
		as, err := l.auditStream(ctx, s, opts)
		if err != nil {
			return rep, fmt.Errorf("audit %s: %w", s, err)
		}
		rep.Streams = append(rep.Streams, as)
		rep.Records += as.Records
		rep.Checkpoints += as.Checkpoints
		if as.Fault != nil {
			rep.Faults = append(rep.Faults, *as.Fault)
		}
	}
	return rep, nil
}

func (l *Ledger) auditStreams(ctx context.Context, edge string) ([]protocol.Stream, error) {
	rows, err := l.db.Query(ctx, `SELECT edge, epoch FROM streams
		WHERE $1 = '' OR edge = $1 ORDER BY edge, first_seen, epoch`, edge)
	if err != nil {
		return nil, err
	}
	var out []protocol.Stream
	var e string
	var ep []byte
	_, err = pgx.ForEachRow(rows, []any{&e, &ep}, func() error {
		out = append(out, streamOf(e, ep))
		return nil
	})
	return out, err
}

// auditStream checks one stream in one snapshot, with the edge's keys as
// of that snapshot (so a key rotated in since the audit began is known).
func (l *Ledger) auditStream(ctx context.Context, s protocol.Stream, opts AuditOptions) (AuditStream, error) {
	c := &streamAudit{}
	err := l.readSnapshot(ctx, func(tx pgx.Tx) error {
		keys, err := loadAuditKeys(ctx, tx, s.Edge)
		if err != nil {
			return fmt.Errorf("keys of edge %s: %w", s.Edge, err)
		}
		*c = streamAudit{s: s, keys: keys, from: protocol.ChainState{Stream: s}}
		var hwm int64
		var head []byte
		if err := tx.QueryRow(ctx, `SELECT hwm, head FROM streams WHERE edge = $1 AND epoch = $2`,
			s.Edge, s.Epoch[:]).Scan(&hwm, &head); err != nil {
			return err
		}
		if err := c.start(ctx, tx, opts); err != nil || c.fault != nil {
			return err
		}
		// Two cursors, merged here by seq (a row before the checkpoint of
		// its seq): each is read in index order, so neither Postgres nor
		// this loop holds more than a batch of the stream.
		args := []any{s.Edge, s.Epoch[:], int64(c.from.Seq)}
		recs := &auditCursor{tx: tx, name: "audit_rows", cols: true}
		cps := &auditCursor{tx: tx, name: "audit_checkpoints_cur"}
		if err := recs.open(ctx, `SELECT seq, pos, committed_at, hash, raw, ''::text,
				device, event_id, type, class, device_ts, edge_time, hlc, shed
			FROM ledger WHERE edge = $1 AND epoch = $2 AND seq > $3 ORDER BY seq, pos`, args); err != nil {
			return err
		}
		if err := cps.open(ctx, `SELECT seq, 0::bigint, committed_at, head, signature, kid
			FROM checkpoints WHERE edge = $1 AND epoch = $2 AND seq > $3 ORDER BY seq`, args); err != nil {
			return err
		}
		for c.fault == nil {
			r, err := recs.peek(ctx)
			if err != nil {
				return err
			}
			cp, err := cps.peek(ctx)
			if err != nil {
				return err
			}
			switch {
			case r != nil && (cp == nil || r.seq <= cp.seq):
				c.row(r)
				recs.next()
			case cp != nil:
				c.checkpoint(uint64(cp.seq), cp.at, cp.hash, protocol.KeyID(cp.kid), cp.raw)
				cps.next()
			default:
				c.end(uint64(hwm), head)
				return nil
			}
		}
		return nil
	})
	return c.result(), err
}

// auditBatch is how many rows an audit cursor fetches at once.
const auditBatch = 256

// auditRow is one row of an audit cursor: a ledger row, or a checkpoint
// (head in hash, signature in raw).
type auditRow struct {
	seq, pos int64
	at       time.Time
	hash     []byte
	raw      []byte
	kid      string
	cols     rowColumns // of a ledger row
}

// rowColumns are the columns of a ledger row that repeat what its bytes
// say, for queries to filter on: they must agree with the bytes.
type rowColumns struct {
	device, id, typ, class string
	deviceTS, edgeTime     time.Time
	hlc                    int64
	shed                   bool
}

// disagree names the first column that does not say what r says, or "".
func (c *rowColumns) disagree(r *protocol.Record) string {
	switch {
	case c.device != r.Device:
		return fmt.Sprintf("device %q, but its bytes say %q", c.device, r.Device)
	case c.id != r.ID:
		return fmt.Sprintf("event_id %q, but its bytes say %q", c.id, r.ID)
	case c.typ != r.Type:
		return fmt.Sprintf("type %q, but its bytes say %q", c.typ, r.Type)
	case c.class != string(r.Class):
		return fmt.Sprintf("class %q, but its bytes say %q", c.class, r.Class)
	case c.deviceTS.UnixMilli() != r.TS:
		return fmt.Sprintf("device_ts %s, but its bytes say %s", c.deviceTS.UTC().Format(time.RFC3339Nano), time.UnixMilli(r.TS).UTC().Format(time.RFC3339Nano))
	case c.hlc != int64(r.EdgeTime) || !c.edgeTime.Equal(r.EdgeTime.Time()):
		return fmt.Sprintf("edge_time %s, hlc %d, but its bytes say %s, %d", c.edgeTime.UTC().Format(time.RFC3339Nano), c.hlc, r.EdgeTime.Time().Format(time.RFC3339Nano), int64(r.EdgeTime))
	case c.shed != r.IsTombstone():
		return fmt.Sprintf("shed %t, but its bytes say %t", c.shed, r.IsTombstone())
	}
	return ""
}

// auditCursor reads a query in batches through a server-side cursor of the
// snapshot's transaction.
type auditCursor struct {
	tx   pgx.Tx
	name string
	cols bool // the query also returns the rowColumns
	buf  []auditRow
	i    int
	done bool
}

func (c *auditCursor) open(ctx context.Context, q string, args []any) error {
	_, err := c.tx.Exec(ctx, "DECLARE "+c.name+" NO SCROLL CURSOR FOR "+q, args...)
	return err
}

// peek returns the current row, fetching the next batch when needed, or nil
// at the end.
func (c *auditCursor) peek(ctx context.Context) (*auditRow, error) {
	if c.i < len(c.buf) {
		return &c.buf[c.i], nil
	}
	if c.done {
		return nil, nil
	}
	rows, err := c.tx.Query(ctx, fmt.Sprintf("FETCH %d FROM %s", auditBatch, c.name))
	if err != nil {
		return nil, err
	}
	c.buf, c.i = c.buf[:0], 0
	var r auditRow
	dest := []any{&r.seq, &r.pos, &r.at, &r.hash, &r.raw, &r.kid}
	if c.cols {
		k := &r.cols
		dest = append(dest, &k.device, &k.id, &k.typ, &k.class, &k.deviceTS, &k.edgeTime, &k.hlc, &k.shed)
	}
	if _, err := pgx.ForEachRow(rows, dest, func() error {
		c.buf = append(c.buf, auditRow{seq: r.seq, pos: r.pos, at: r.at, hash: bytes.Clone(r.hash), raw: bytes.Clone(r.raw),
			kid: r.kid, cols: r.cols})
		return nil
	}); err != nil {
		return nil, err
	}
	if len(c.buf) < auditBatch {
		c.done = true
	}
	if len(c.buf) == 0 {
		return nil, nil
	}
	return &c.buf[0], nil
}

func (c *auditCursor) next() { c.i++ }

// streamAudit is the state of one stream's check: verified up to from (a
// checkpoint), with the rows since in window.
type streamAudit struct {
	s      protocol.Stream
	keys   *auditKeys
	start0 uint64
	from   protocol.ChainState
	window [][]byte
	next   uint64 // the seq the next row should have
	last   int64  // pos of the previous row, 0 before one

	records, checkpoints uint64
	fault                *AuditFault
}

func (c *streamAudit) result() AuditStream {
	return AuditStream{Stream: c.s, From: c.start0, Verified: c.from.Seq, Records: c.records,
		Checkpoints: c.checkpoints, Fault: c.fault}
}

func (c *streamAudit) fail(seq uint64, kind AuditFaultKind, format string, args ...any) {
	c.fault = &AuditFault{Stream: c.s, Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

// start finds where the check begins: seq 0, or a checkpoint chosen by
// opts.From or opts.Since, which is verified and whose head is trusted.
func (c *streamAudit) start(ctx context.Context, tx pgx.Tx, opts AuditOptions) error {
	c.next = 1
	var q string
	var arg any
	if seq, ok := opts.From[c.s]; ok && seq > 0 {
		q, arg = `seq = $3`, int64(seq)
	} else if !opts.Since.IsZero() {
		q, arg = `committed_at < $3`, opts.Since
	} else {
		return nil
	}
	var seq int64
	var at time.Time
	var head, sig []byte
	var kid string
	err := tx.QueryRow(ctx, `SELECT seq, committed_at, head, kid, signature FROM checkpoints
		WHERE edge = $1 AND epoch = $2 AND `+q+` ORDER BY seq DESC LIMIT 1`,
		c.s.Edge, c.s.Epoch[:], arg).Scan(&seq, &at, &head, &kid, &sig)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if seq, ok := opts.From[c.s]; ok && seq > 0 {
			c.fail(seq, AuditCheckpoint, "the checkpoint at seq %d, where the last audit stopped, is gone", seq)
		}
		return nil
	case err != nil:
		return err
	}
	cp, ok := c.verifyCheckpoint(uint64(seq), at, head, protocol.KeyID(kid), sig)
	if !ok {
		return nil
	}
	c.from = protocol.ChainState{Stream: c.s, Seq: cp.Seq, Head: cp.Head}
	c.start0, c.next = cp.Seq, cp.Seq+1
	// The row at the checkpoint's seq is what the next record links to;
	// its pos orders the rows after it.
	var pos *int64
	if err := tx.QueryRow(ctx, `SELECT max(pos) FROM ledger WHERE edge = $1 AND epoch = $2 AND seq = $3`,
		c.s.Edge, c.s.Epoch[:], seq).Scan(&pos); err != nil {
		return err
	}
	if pos != nil {
		c.last = *pos
	}
	return nil
}

// row takes the next stored row, in seq order.
func (c *streamAudit) row(ar *auditRow) {
	seq, pos, hash, raw := uint64(ar.seq), ar.pos, ar.hash, ar.raw
	c.records++
	switch {
	case seq < c.next:
		c.fail(seq, AuditDuplicate, "seq %d is stored twice (the second copy at pos %d)", seq, pos)
		return
	case seq > c.next:
		c.fail(c.next, AuditMissing, "no row has seq %d (the next stored row is seq %d)", c.next, seq)
		return
	case c.last != 0 && pos <= c.last:
		c.fail(seq, AuditOrder, "seq %d has commit position %d, not after the %d of seq %d before it", seq, pos, c.last, seq-1)
		return
	}
	r, err := protocol.DecodeRecord(raw)
	if err != nil {
		c.fail(seq, AuditAltered, "the stored bytes do not decode as a record: %v", err)
		return
	}
	if r.Seq != seq {
		c.fail(seq, AuditOrder, "the row stored as seq %d holds the record of seq %d", seq, r.Seq)
		return
	}
	if link := r.LinkHash(raw); !bytes.Equal(hash, link[:]) {
		c.fail(seq, AuditAltered, "the stored bytes hash to %s, not to the %x stored with them", link, hash)
		return
	}
	if col := ar.cols.disagree(&r); col != "" {
		c.fail(seq, AuditAltered, "the row's column says %s (the bytes are what the edge signed)", col)
		return
	}
	if len(c.window) >= protocol.MaxSegmentRecs {
		c.fail(c.from.Seq+1, AuditUncovered,
			"records %d..%d have no checkpoint, more than a segment holds: every commit stores one for its last record, so a checkpoint row is missing",
			c.from.Seq+1, seq)
		return
	}
	c.window = append(c.window, raw)
	c.next, c.last = seq+1, pos
}

// checkpoint takes the stored checkpoint at seq, which comes after the row
// of the same seq.
func (c *streamAudit) checkpoint(seq uint64, at time.Time, head []byte, kid protocol.KeyID, sig []byte) {
	if seq >= c.next {
		c.fail(c.next, AuditMissing, "no row has seq %d, yet the checkpoint at seq %d covers it", c.next, seq)
		return
	}
	cp, ok := c.verifyCheckpoint(seq, at, head, kid, sig)
	if !ok {
		return
	}
	want := protocol.ChainState{Stream: c.s, Seq: cp.Seq, Head: cp.Head}
	st, _, err := protocol.VerifyChain(c.from, c.window, &want)
	if err != nil {
		var ce *protocol.ChainError
		if !errors.As(err, &ce) {
			c.fail(c.from.Seq+1, AuditAltered, "%v", err)
			return
		}
		kind := AuditAltered
		switch ce.Fault {
		case protocol.FaultGap:
			kind = AuditOrder
		case protocol.FaultHead:
			kind = AuditMissing
		}
		c.fail(ce.Seq, kind, "%s (%s)", ce.Detail, ce.Fault)
		return
	}
	c.from, c.window = st, c.window[:0]
}

// verifyCheckpoint checks a stored checkpoint's signature with the keys
// valid at its commit time, and that its row says what was signed.
func (c *streamAudit) verifyCheckpoint(seq uint64, at time.Time, head []byte, kid protocol.KeyID, sig []byte) (protocol.Checkpoint, bool) {
	cp, err := protocol.VerifyCheckpoint(sig, c.keys.at(at))
	if err != nil {
		c.fail(seq, AuditCheckpoint, "the checkpoint committed at %s does not verify: %v", at.UTC().Format(time.RFC3339Nano), err)
		return cp, false
	}
	if cp.Stream() != c.s || cp.Seq != seq || !bytes.Equal(cp.Head[:], head) || cp.KID != kid {
		c.fail(seq, AuditCheckpoint,
			"the checkpoint row (seq %d, head %x, kid %s) is not what was signed (stream %s, seq %d, head %s, kid %s)",
			seq, head, kid, cp.Stream(), cp.Seq, cp.Head, cp.KID)
		return cp, false
	}
	c.checkpoints++
	return cp, true
}

// end checks what is left after the last row: records no checkpoint
// covers, and the stream's watermark against its rows.
func (c *streamAudit) end(hwm uint64, head []byte) {
	last := c.next - 1
	switch {
	case len(c.window) > 0:
		c.fail(c.from.Seq+1, AuditUncovered, "records %d..%d are covered by no checkpoint", c.from.Seq+1, last)
	case hwm > last:
		c.fail(last+1, AuditMissing, "the stream's watermark is %d but its rows end at seq %d", hwm, last)
	case hwm < last:
		c.fail(hwm+1, AuditWatermark, "rows go up to seq %d, above the stream's watermark %d", last, hwm)
	case !bytes.Equal(head, c.from.Head[:]):
		c.fail(hwm, AuditWatermark, "the stream's head %x is not the hash %s of seq %d", head, c.from.Head, hwm)
	}
}

// auditKeys is one edge's keys with the times they were valid, from the
// fleet tables.
type auditKeys struct {
	edge               string
	created, revokedAt time.Time // revokedAt zero while active
	keys               map[protocol.KeyID]auditKey
}

type auditKey struct {
	pub                ed25519.PublicKey
	created, revokedAt time.Time
}

func loadAuditKeys(ctx context.Context, db DB, edge string) (*auditKeys, error) {
	k := &auditKeys{edge: edge, keys: map[protocol.KeyID]auditKey{}}
	var revoked *time.Time
	err := db.QueryRow(ctx, `SELECT created_at, revoked_at FROM edges WHERE id = $1`, edge).Scan(&k.created, &revoked)
	if errors.Is(err, pgx.ErrNoRows) {
		return k, nil // every checkpoint of the stream will say the edge is not registered
	}
	if err != nil {
		return nil, err
	}
	k.revokedAt = deref(revoked)
	rows, err := db.Query(ctx, `SELECT kid, pubkey, created_at, revoked_at FROM edge_keys WHERE edge = $1`, edge)
	if err != nil {
		return nil, err
	}
	var kid string
	var key auditKey
	var pub []byte
	_, err = pgx.ForEachRow(rows, []any{&kid, &pub, &key.created, &revoked}, func() error {
		key.pub, key.revokedAt = ed25519.PublicKey(bytes.Clone(pub)), deref(revoked)
		k.keys[protocol.KeyID(kid)] = key
		return nil
	})
	return k, err
}

// at returns the keys as they were at t.
func (k *auditKeys) at(t time.Time) protocol.Keys { return keysAt{k, t} }

type keysAt struct {
	k *auditKeys
	t time.Time
}

func (a keysAt) PublicKey(kid protocol.KeyID) (ed25519.PublicKey, error) {
	k, t := a.k, a.t
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	if k.created.IsZero() {
		return nil, fmt.Errorf("edge %s is not registered: %w", k.edge, ErrUnknownKey)
	}
	if !k.revokedAt.IsZero() && !k.revokedAt.After(t) {
		return nil, fmt.Errorf("edge %s was revoked at %s, before the checkpoint was committed: %w", k.edge, ts(k.revokedAt), ErrRevoked)
	}
	key, ok := k.keys[kid]
	switch {
	case !ok:
		return nil, fmt.Errorf("key %s is not registered to edge %s: %w", kid, k.edge, ErrUnknownKey)
	case key.created.After(t):
		return nil, fmt.Errorf("key %s of edge %s was registered at %s, after the checkpoint was committed: %w", kid, k.edge, ts(key.created), ErrUnknownKey)
	case !key.revokedAt.IsZero() && !key.revokedAt.After(t):
		return nil, fmt.Errorf("key %s of edge %s was revoked at %s, before the checkpoint was committed: %w", kid, k.edge, ts(key.revokedAt), ErrRevoked)
	}
	return key.pub, nil
}
