package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/outpost-edge/outpost/protocol"
)

// StreamInfo is one stream's state, for the back office.
type StreamInfo struct {
	Watermark
	EdgeSeq    uint64 // the edge's own last seq, from its latest hello (0 before one)
	Lag        uint64 // records the edge reported that are not committed yet
	FirstSeen  time.Time
	LastSeen   time.Time // latest segment or hello
	PrevEpoch  *protocol.Epoch
	NextEpoch  *protocol.Epoch
	EndedAt    time.Time // when the edge started a new epoch; zero while current
	EndedAtSeq uint64    // this stream's hwm at EndedAt: where it ended as far as the cloud knows
	// LagHistory is the stream's lag as SampleLag recorded it, oldest
	// first, at most LagSamplesKept; empty before the first sample.
	LagHistory []LagSample
}

// Streams returns every stream, by edge and then age.
func (l *Ledger) Streams(ctx context.Context) ([]StreamInfo, error) {
	rows, err := l.db.Query(ctx,
		`SELECT edge, epoch, hwm, head, last_commit, edge_seq, first_seen, last_seen,
			prev_epoch, next_epoch, ended_at, ended_at_seq
		 FROM streams ORDER BY edge, first_seen, epoch`)
	if err != nil {
		return nil, fmt.Errorf("streams: %w", err)
	}
	var out []StreamInfo
	var (
		edge                    string
		epoch, head, prev, next []byte
		hwm, edgeSeq            int64
		endedSeq                *int64
		lastCommit, endedAt     *time.Time
		firstSeen, lastSeen     time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&edge, &epoch, &hwm, &head, &lastCommit, &edgeSeq, &firstSeen, &lastSeen,
		&prev, &next, &endedAt, &endedSeq}, func() error {
		s := StreamInfo{
			Watermark: Watermark{Stream: streamOf(edge, epoch), HWM: uint64(hwm), CommittedAt: deref(lastCommit)},
			EdgeSeq:   uint64(edgeSeq), FirstSeen: firstSeen, LastSeen: lastSeen, EndedAt: deref(endedAt),
			PrevEpoch: epochPtr(prev), NextEpoch: epochPtr(next),
		}
		copy(s.Head[:], head)
		if s.EdgeSeq > s.HWM {
			s.Lag = s.EdgeSeq - s.HWM
		}
		if endedSeq != nil {
			s.EndedAtSeq = uint64(*endedSeq)
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("streams: %w", err)
	}
	hist, err := l.lagHistory(ctx)
	if err != nil {
		return nil, fmt.Errorf("streams: lag history: %w", err)
	}
	for i := range out {
		out[i].LagHistory = hist[out[i].Stream.Edge+"\x00"+string(out[i].Stream.Epoch[:])]
	}
	return out, nil
}

func epochPtr(b []byte) *protocol.Epoch {
	if b == nil {
		return nil
	}
	var e protocol.Epoch
	copy(e[:], b)
	return &e
}

// Filter selects events. Zero fields do not filter.
type Filter struct {
	Edge  string
	Type  string
	From  time.Time // edge_time at or after From
	To    time.Time // edge_time before To
	After int64     // cursor: events with pos greater than After
	Limit int       // at most this many; default DefaultLimit, capped at MaxLimit
	// Store and BusinessDay (DayLayout; only with Store) select the POS
	// transactions the projections folded for that store (and business
	// day): the events behind the sales figures, found through
	// projection_txns (indexed by store, business_day, pos), not by
	// scanning bodies. Events the projections did not fold as a
	// transaction (Z reports, stock moves, telemetry) are not among them.
	Store       string
	BusinessDay string
}

// Page sizes of Events.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Event is a committed record as the API shows it.
type Event struct {
	Pos         int64     `json:"pos"`
	CommittedAt time.Time `json:"committed_at"`
	protocol.RecordJSON
}

// Page is one page of events, in commit order.
type Page struct {
	Events []Event `json:"events"`
	// Next is the cursor for the following page (Filter.After): the pos of
	// the last event, or the cursor given when the page is empty. Pages
	// hold only events below the horizon (BelowHorizon), so a reader that
	// keeps asking with Next sees every event exactly once, in pos order,
	// including those committed meanwhile.
	Next int64 `json:"next"`
}

// BelowHorizon is the predicate every reader that tails the ledger by pos
// adds to its WHERE clause (Events, Tail; and any reader outside this
// package, such as a projection rebuild's catch-up or an SSE tail, that
// reads ledger rows after a pos): only rows whose commit transaction is
// older than every transaction still running. Commits of different edges
// run at once, so a row with a smaller pos may commit after one with a
// larger pos; but positions are taken in xid order
// (ledger_take_positions), so a transaction below the horizon has ended
// and every one still to commit has positions above every row below it.
// A reader that pages by pos with this predicate therefore never skips a
// row that commits late, and sees each once, in pos order.
//
// It reads the statement's snapshot, so it must run in a statement (or a
// REPEATABLE READ transaction) of its own reader: a transaction that has
// written something holds the horizon at its own xid and will not see
// rows committed after it began writing.
const BelowHorizon = `xid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))`

// Tail returns at most limit committed records with pos greater than
// after, in pos order, below the horizon (BelowHorizon): what a reader
// that follows the ledger (a projection catching up, a live tail) reads
// next. Keep calling it with the last Pos; an empty result means nothing
// below the horizon yet. Limit is capped at MaxLimit.
func (l *Ledger) Tail(ctx context.Context, after int64, limit int) ([]Committed, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	since, err := l.markBefore(ctx, after)
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	rows, err := l.db.Query(ctx, `SELECT edge, epoch, pos, committed_at, hash, raw FROM ledger
		WHERE pos > $1 AND committed_at >= $2 AND `+BelowHorizon+` ORDER BY pos LIMIT $3`,
		after, since, min(limit, MaxLimit))
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	var out []Committed
	var edge string
	var epoch, hash, raw []byte
	var c Committed
	_, err = pgx.ForEachRow(rows, []any{&edge, &epoch, &c.Pos, &c.CommittedAt, &hash, &raw}, func() error {
		r, err := protocol.DecodeRecord(raw)
		if err != nil {
			return fmt.Errorf("record at pos %d: %w", c.Pos, err)
		}
		rc := c
		rc.Stream, rc.Record, rc.Raw = streamOf(edge, epoch), r, bytes.Clone(raw)
		copy(rc.Hash[:], hash)
		out = append(out, rc)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	return out, nil
}

// markBefore returns a time at or before the commit time of every row with
// pos greater than after: the time of the last ledger mark at or before
// after (commit times increase with pos), or -infinity when there is none.
// It is what lets a read by pos name the partitions (chunks) it needs.
func (l *Ledger) markBefore(ctx context.Context, after int64) (pgtype.Timestamptz, error) {
	since := pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}
	if after <= 0 {
		return since, nil
	}
	var at time.Time
	err := l.db.QueryRow(ctx, `SELECT committed_at FROM ledger_marks WHERE pos <= $1 ORDER BY pos DESC LIMIT 1`,
		after).Scan(&at)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return since, nil
	case err != nil:
		return since, fmt.Errorf("ledger mark: %w", err)
	}
	return pgtype.Timestamptz{Time: at, Valid: true}, nil
}

// Events returns committed events in pos (commit) order, keyset-paginated
// by pos, below the horizon (BelowHorizon), so that paging with Next never
// skips an event that commits late. From and To bound the edge's clock
// (when the edge accepted the event), not the commit time.
func (l *Ledger) Events(ctx context.Context, f Filter) (Page, error) {
	if f.Limit <= 0 {
		f.Limit = DefaultLimit
	}
	f.Limit = min(f.Limit, MaxLimit)
	since, err := l.markBefore(ctx, f.After)
	if err != nil {
		return Page{}, fmt.Errorf("events: %w", err)
	}
	q, args := eventsQuery(f, since)
	rows, err := l.db.Query(ctx, q, args...)
	if err != nil {
		return Page{}, fmt.Errorf("events: %w", err)
	}
	p := Page{Next: f.After, Events: []Event{}}
	var pos int64
	var at time.Time
	var raw []byte
	_, err = pgx.ForEachRow(rows, []any{&pos, &at, &raw}, func() error {
		r, err := protocol.DecodeRecord(raw)
		if err != nil {
			return fmt.Errorf("record at pos %d: %w", pos, err)
		}
		j, err := r.JSON(raw)
		if err != nil {
			return fmt.Errorf("record at pos %d: %w", pos, err)
		}
		p.Events = append(p.Events, Event{Pos: pos, CommittedAt: at, RecordJSON: j})
		p.Next = pos
		return nil
	})
	if err != nil {
		return Page{}, fmt.Errorf("events: %w", err)
	}
	return p, nil
}

// eventsQuery is Events' query for f (its Limit filled in), bounded below
// by since (markBefore of f.After).
func eventsQuery(f Filter, since pgtype.Timestamptz) (string, []any) {
	where := []string{"pos > $1", "committed_at >= $2", BelowHorizon}
	args := []any{f.After, since}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Edge != "" {
		add("edge = $%d", f.Edge)
	}
	if f.Type != "" {
		add("type = $%d", f.Type)
	}
	if !f.From.IsZero() {
		add("edge_time >= $%d", f.From)
	}
	if !f.To.IsZero() {
		add("edge_time < $%d", f.To)
	}
	switch {
	case f.Store != "" && f.BusinessDay != "":
		args = append(args, f.Store, f.BusinessDay)
		where = append(where, fmt.Sprintf("pos IN (SELECT t.pos FROM projection_txns t WHERE t.store = $%d AND t.business_day = $%d::date)",
			len(args)-1, len(args)))
	case f.Store != "":
		add("pos IN (SELECT t.pos FROM projection_txns t WHERE t.store = $%d)", f.Store)
	}
	args = append(args, f.Limit)
	return fmt.Sprintf(`SELECT pos, committed_at, raw FROM ledger WHERE %s ORDER BY pos LIMIT $%d`,
		strings.Join(where, " AND "), len(args)), args
}

// QuarantineEntry is one quarantined segment.
type QuarantineEntry struct {
	ID          int64
	Edge        string // the edge whose topic it arrived on
	Epoch       *protocol.Epoch
	First, Last uint64
	Code        string // a protocol.NackCode name
	Reason      string
	Payload     []byte // the payload as received, or only its prefix when Truncated
	ReceivedAt  time.Time
	Size        int64     // bytes of the payload as received
	Truncated   bool      // Payload is a prefix: the sender was over its byte cap
	Copies      int64     // how many times this payload arrived from this sender
	LastAt      time.Time // when it last arrived
}

// Quarantine returns quarantined segments with id greater than after, oldest
// first, at most limit (default DefaultLimit, capped at MaxLimit).
func (l *Ledger) Quarantine(ctx context.Context, after int64, limit int) ([]QuarantineEntry, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	rows, err := l.db.Query(ctx,
		`SELECT id, edge, epoch, coalesce(first, 0), coalesce(last, 0), code, reason, coalesce(payload, ''), received_at,
		        coalesce(size, length(payload), 0), truncated, copies, coalesce(last_at, received_at)
		 FROM quarantine WHERE id > $1 ORDER BY id LIMIT $2`, after, min(limit, MaxLimit))
	if err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	var out []QuarantineEntry
	var q QuarantineEntry
	var epoch []byte
	var first, last int64
	_, err = pgx.ForEachRow(rows, []any{&q.ID, &q.Edge, &epoch, &first, &last, &q.Code, &q.Reason, &q.Payload, &q.ReceivedAt,
		&q.Size, &q.Truncated, &q.Copies, &q.LastAt},
		func() error {
			e := q
			e.Epoch, e.First, e.Last = epochPtr(epoch), uint64(first), uint64(last)
			e.Payload = append([]byte(nil), q.Payload...)
			out = append(out, e)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	return out, nil
}
