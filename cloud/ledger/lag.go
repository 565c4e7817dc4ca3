package ledger

import (
	"context"
	"fmt"
	"time"
)

// LagSamplesKept is how many lag samples SampleLag keeps per stream: with
// the default hourly audit, two days of history.
const LagSamplesKept = 48

// LagSample is one stream's lag at one moment.
type LagSample struct {
	At  time.Time `json:"at"`
	Lag uint64    `json:"lag"`
}

// SampleLag records the lag (the edge's signed head less the watermark)
// of every current stream now, and keeps only the latest LagSamplesKept
// samples of each, so the table stays small. It returns how many streams
// it sampled. The scheduled audit (Auditor.RunOnce) calls it.
func (l *Ledger) SampleLag(ctx context.Context) (int, error) {
	tag, err := l.db.Exec(ctx,
		`INSERT INTO stream_lag_samples (edge, epoch, at, lag)
		 SELECT edge, epoch, now(), greatest(edge_seq - hwm, 0) FROM streams WHERE ended_at IS NULL
		 ON CONFLICT DO NOTHING`)
	if err != nil {
		return 0, fmt.Errorf("sample lag: %w", err)
	}
	if _, err := l.db.Exec(ctx,
		`DELETE FROM stream_lag_samples s USING (
			SELECT edge, epoch, at, row_number() OVER (PARTITION BY edge, epoch ORDER BY at DESC) AS n FROM stream_lag_samples
		 ) old
		 WHERE old.n > $1 AND s.edge = old.edge AND s.epoch = old.epoch AND s.at = old.at`, LagSamplesKept); err != nil {
		return 0, fmt.Errorf("sample lag: trim: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// lagHistory returns each stream's lag samples, oldest first, keyed by
// edge and epoch bytes.
func (l *Ledger) lagHistory(ctx context.Context) (map[string][]LagSample, error) {
	rows, err := l.db.Query(ctx, `SELECT edge, epoch, at, lag FROM stream_lag_samples ORDER BY edge, epoch, at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]LagSample{}
	for rows.Next() {
		var edge string
		var epoch []byte
		var s LagSample
		var lag int64
		if err := rows.Scan(&edge, &epoch, &s.At, &lag); err != nil {
			return nil, err
		}
		s.Lag = uint64(lag)
		k := edge + "\x00" + string(epoch)
		out[k] = append(out[k], s)
	}
	return out, rows.Err()
}
