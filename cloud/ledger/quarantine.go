package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/protocol"
)

// QuarantineLimits bound the quarantine, per sender (the edge whose topic a
// refused segment came on, registered or not). An attacker holding a broker
// account can publish any number of forged segments; what they cost the
// database stays within these limits:
//
//   - a payload that arrives again (same sender, same SHA-256) only counts
//     on its row (copies, last_at);
//   - a sender over its byte cap gets new rows with only a Prefix of the
//     payload (truncated, with its full size and hash);
//   - a sender over its row cap gets no new row at all: the arrival is
//     counted in quarantine_senders (dropped, dropped_bytes);
//   - rows whose last arrival is older than Retention are deleted.
//
// Every one of these is counted in Stats and exported as a metric.
type QuarantineLimits struct {
	EdgeBytes    int64         // payload bytes kept per registered edge; default 64 MiB
	UnknownBytes int64         // per sender that is not a registered edge; default 1 MiB
	Rows         int64         // rows kept per sender; default 10000
	Prefix       int           // bytes kept of a payload beyond the byte cap; default 1 KiB
	Retention    time.Duration // default 30 days
}

// Defaults of QuarantineLimits.
const (
	DefaultQuarantineEdgeBytes    = 64 << 20
	DefaultQuarantineUnknownBytes = 1 << 20
	DefaultQuarantineRows         = 10000
	DefaultQuarantinePrefix       = 1 << 10
	DefaultQuarantineRetention    = 30 * 24 * time.Hour
)

// quarantinePruneEvery is how often writes to the quarantine also delete
// rows past the retention.
const quarantinePruneEvery = time.Hour

func (q QuarantineLimits) withDefaults() QuarantineLimits {
	if q.EdgeBytes <= 0 {
		q.EdgeBytes = DefaultQuarantineEdgeBytes
	}
	if q.UnknownBytes <= 0 {
		q.UnknownBytes = DefaultQuarantineUnknownBytes
	}
	if q.Rows <= 0 {
		q.Rows = DefaultQuarantineRows
	}
	if q.Prefix <= 0 {
		q.Prefix = DefaultQuarantinePrefix
	}
	if q.Retention <= 0 {
		q.Retention = DefaultQuarantineRetention
	}
	return q
}

// writeQuarantine keeps every quarantined outcome within the limits, in one
// transaction of its own, and fills in their row ids (0 for an arrival that
// was only counted). Senders' rows in quarantine_senders are locked in edge
// order, so that concurrent writers cannot deadlock.
func (l *Ledger) writeQuarantine(ctx context.Context, batch []Input, out []Outcome) error {
	var idx []int
	for i := range out {
		if out[i].Kind == KindQuarantined {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	sender := func(i int) string {
		if e := batch[i].TopicEdge; e != "" || batch[i].Segment == nil {
			return e
		}
		return batch[i].Segment.Edge
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch ea, eb := sender(a), sender(b); {
		case ea < eb:
			return -1
		case ea > eb:
			return 1
		}
		return 0
	})
	now := l.opts.Now()
	tx, err := l.db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var logs []func()
	for _, i := range idx {
		id, log, err := l.quarantineOne(ctx, tx, sender(i), &batch[i], &out[i], now)
		if err != nil {
			return err
		}
		out[i].QuarantineID = id
		logs = append(logs, log)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	// The one log line and count of each quarantine (ingest only nacks
	// it), once it is certain.
	for _, log := range logs {
		log()
	}
	if last := l.lastPrune.Load(); now.Sub(time.Unix(0, last)) >= quarantinePruneEvery && l.lastPrune.CompareAndSwap(last, now.UnixNano()) {
		if _, err := l.PruneQuarantine(ctx); err != nil {
			l.opts.Logger.Warn("could not prune the quarantine; it is retried within the hour", "err", err)
			l.lastPrune.Store(last)
		}
	}
	return nil
}

// quarantineOne keeps one quarantined input within the limits and returns
// its row id (0 when it was only counted) and what to log and count once the
// transaction commits.
func (l *Ledger) quarantineOne(ctx context.Context, tx pgx.Tx, edge string, in *Input, o *Outcome, now time.Time) (int64, func(), error) {
	lim := l.opts.Quarantine
	var epoch []byte
	var first, last *int64
	var logFirst, logLast any // int64, or nil without a segment
	payload := in.Raw
	if seg := in.Segment; seg != nil {
		epoch = seg.Epoch[:]
		f, la := int64(seg.First), int64(seg.Last)
		first, last, logFirst, logLast = &f, &la, f, la
		if payload == nil {
			payload, _ = protocol.EncodeSegment(seg, false)
		}
	}
	hash := protocol.HashBytes(payload)
	logged := func(id int64, how string, stat *atomic.Uint64) func() {
		return func() {
			l.stats.quarantined.Add(1)
			if stat != nil {
				stat.Add(1)
			}
			lvl := slog.LevelWarn
			if how != "kept" && how != "kept a prefix" {
				lvl = slog.LevelDebug // a flood of copies or of an over-cap sender must not flood the log
			}
			l.opts.Logger.Log(context.Background(), lvl, "segment quarantined", "edge", edge, "stream", o.Stream.String(),
				"first", logFirst, "last", logLast, "code", o.Code.String(), "reason", o.Reason, "quarantine_id", id, "quarantine", how)
		}
	}

	// A copy of a payload this sender already has in quarantine.
	var id int64
	err := tx.QueryRow(ctx, `UPDATE quarantine SET copies = copies + 1, last_at = $3
		WHERE id = (SELECT id FROM quarantine WHERE edge = $1 AND hash = $2 ORDER BY id LIMIT 1) RETURNING id`,
		edge, hash[:], now).Scan(&id)
	switch {
	case err == nil:
		return id, logged(id, "counted a copy", &l.stats.qCopies), nil
	case !errors.Is(err, pgx.ErrNoRows):
		return 0, nil, fmt.Errorf("quarantine dedup: %w", err)
	}

	var registered bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM edges WHERE id = $1)`, edge).Scan(&registered); err != nil {
		return 0, nil, fmt.Errorf("quarantine sender: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO quarantine_senders (edge) VALUES ($1) ON CONFLICT DO NOTHING`, edge); err != nil {
		return 0, nil, fmt.Errorf("quarantine sender: %w", err)
	}
	var bytes, rows int64
	if err := tx.QueryRow(ctx, `SELECT bytes, rows FROM quarantine_senders WHERE edge = $1 FOR UPDATE`, edge).Scan(&bytes, &rows); err != nil {
		return 0, nil, fmt.Errorf("quarantine sender: %w", err)
	}
	if rows >= lim.Rows {
		if _, err := tx.Exec(ctx, `UPDATE quarantine_senders SET dropped = dropped + 1, dropped_bytes = dropped_bytes + $2 WHERE edge = $1`,
			edge, int64(len(payload))); err != nil {
			return 0, nil, fmt.Errorf("quarantine sender: %w", err)
		}
		return 0, logged(0, "dropped: the sender is over its row cap", &l.stats.qDropped), nil
	}
	capBytes := lim.EdgeBytes
	if !registered {
		capBytes = lim.UnknownBytes
	}
	keep, truncated, how, stat := payload, false, "kept", (*atomic.Uint64)(nil)
	if bytes+int64(len(payload)) > capBytes {
		keep, truncated, how, stat = payload[:min(len(payload), lim.Prefix)], true, "kept a prefix", &l.stats.qTruncated
	}
	err = tx.QueryRow(ctx, `INSERT INTO quarantine (edge, epoch, first, last, reason, code, payload, received_at, hash, size, truncated, last_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $8) RETURNING id`,
		edge, epoch, first, last, o.Reason, o.Code.String(), keep, now, hash[:], int64(len(payload)), truncated).Scan(&id)
	if err != nil {
		return 0, nil, fmt.Errorf("quarantine insert: %w", err)
	}
	t := 0
	if truncated {
		t = 1
	}
	if _, err := tx.Exec(ctx, `UPDATE quarantine_senders SET bytes = bytes + $2, rows = rows + 1, truncated = truncated + $3 WHERE edge = $1`,
		edge, int64(len(keep)), t); err != nil {
		return 0, nil, fmt.Errorf("quarantine sender: %w", err)
	}
	return id, logged(id, how, stat), nil
}

// PruneQuarantine deletes quarantine rows whose last arrival is older than
// the retention, and brings the senders' totals back in line. Quarantine
// writes call it at most hourly; it is safe to call at any time.
func (l *Ledger) PruneQuarantine(ctx context.Context) (int64, error) {
	cutoff := l.opts.Now().Add(-l.opts.Quarantine.Retention)
	tx, err := l.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune quarantine: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	tag, err := tx.Exec(ctx, `DELETE FROM quarantine WHERE coalesce(last_at, received_at) < $1`, cutoff)
	if err != nil {
		return 0, fmt.Errorf("prune quarantine: %w", err)
	}
	if tag.RowsAffected() > 0 {
		if _, err := tx.Exec(ctx, `UPDATE quarantine_senders s SET
			bytes = coalesce((SELECT sum(length(payload)) FROM quarantine q WHERE q.edge = s.edge), 0),
			rows = (SELECT count(*) FROM quarantine q WHERE q.edge = s.edge)`); err != nil {
			return 0, fmt.Errorf("prune quarantine: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("prune quarantine: %w", err)
	}
	l.stats.qPruned.Add(uint64(tag.RowsAffected()))
	return tag.RowsAffected(), nil
}

// QuarantineSender is what one sender has in quarantine.
type QuarantineSender struct {
	Edge                 string
	Bytes, Rows          int64
	Dropped, DroppedSize int64
	Truncated            int64
}

// QuarantineSenders returns every sender's quarantine totals, by edge.
func (l *Ledger) QuarantineSenders(ctx context.Context) ([]QuarantineSender, error) {
	rows, err := l.db.Query(ctx, `SELECT edge, bytes, rows, dropped, dropped_bytes, truncated FROM quarantine_senders ORDER BY edge`)
	if err != nil {
		return nil, fmt.Errorf("quarantine senders: %w", err)
	}
	var out []QuarantineSender
	var s QuarantineSender
	_, err = pgx.ForEachRow(rows, []any{&s.Edge, &s.Bytes, &s.Rows, &s.Dropped, &s.DroppedSize, &s.Truncated}, func() error {
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("quarantine senders: %w", err)
	}
	return out, nil
}
