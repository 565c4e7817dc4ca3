package ledger

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/protocol"
)

// DefaultAuditEvery is how often cloud serve runs the incremental audit.
const DefaultAuditEvery = time.Hour

// AuditIncremental audits what is new since the last incremental audit:
// each stream from the checkpoint where the last run stopped (recorded in
// audit_checkpoints; a new stream from seq 1), and records how far each
// stream now verifies. A stream with a fault advances only to the last
// checkpoint verified before the fault, so the fault is found again on
// every run until it is dealt with. Rows
// below a recorded checkpoint are trusted: only a full Audit rechecks
// them.
func (l *Ledger) AuditIncremental(ctx context.Context) (AuditReport, error) {
	from := map[protocol.Stream]uint64{}
	rows, err := l.db.Query(ctx, `SELECT edge, epoch, seq FROM audit_checkpoints`)
	if err != nil {
		return AuditReport{}, fmt.Errorf("incremental audit: %w", err)
	}
	var edge string
	var epoch []byte
	var seq int64
	if _, err := pgx.ForEachRow(rows, []any{&edge, &epoch, &seq}, func() error {
		from[streamOf(edge, epoch)] = uint64(seq)
		return nil
	}); err != nil {
		return AuditReport{}, fmt.Errorf("incremental audit: %w", err)
	}
	rep, err := l.Audit(ctx, AuditOptions{From: from})
	if err != nil {
		return rep, err
	}
	var es []string
	var eps [][]byte
	var seqs []int64
	for _, s := range rep.Streams {
		if s.Verified > from[s.Stream] {
			es, eps, seqs = append(es, s.Stream.Edge), append(eps, s.Stream.Epoch[:]), append(seqs, int64(s.Verified))
		}
	}
	if len(es) == 0 {
		return rep, nil
	}
	// Another replica may audit at the same time: the further point wins.
	if _, err := l.db.Exec(ctx, `INSERT INTO audit_checkpoints (edge, epoch, seq)
		SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[])
		ON CONFLICT (edge, epoch) DO UPDATE SET seq = greatest(audit_checkpoints.seq, excluded.seq), audited_at = now()`,
		es, eps, seqs); err != nil {
		return rep, fmt.Errorf("incremental audit: record progress: %w", err)
	}
	return rep, nil
}

// Auditor runs AuditIncremental at start and then every Every, logs each
// fault, and keeps the figures cloud serve exports as metrics.
type Auditor struct {
	Ledger *Ledger
	Every  time.Duration // default DefaultAuditEvery
	Now    func() time.Time
	Logger *slog.Logger

	faults      atomic.Int64
	lastSuccess atomic.Int64 // Unix ns of the end of the last run that read everything; 0 before one
	runs        atomic.Int64
}

// Faults is the number of streams with a fault in the last completed run.
func (a *Auditor) Faults() int { return int(a.faults.Load()) }

// LastSuccess is when the last run that read everything ended (whatever it
// found), or zero before one.
func (a *Auditor) LastSuccess() time.Time {
	if ns := a.lastSuccess.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Runs is how many runs have completed, failed or not.
func (a *Auditor) Runs() int { return int(a.runs.Load()) }

// Run audits until ctx ends, and returns nil then: a failed run is logged
// and tried again on the schedule, never fatal.
func (a *Auditor) Run(ctx context.Context) error {
	if a.Every <= 0 {
		a.Every = DefaultAuditEvery
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.Logger == nil {
		a.Logger = slog.Default()
	}
	log := a.Logger.With("component", "audit")
	t := time.NewTicker(a.Every)
	defer t.Stop()
	for {
		a.RunOnce(ctx, log)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RunOnce runs one incremental audit and updates the figures.
func (a *Auditor) RunOnce(ctx context.Context, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	defer a.runs.Add(1)
	// The lag history of the Fleet page's sparklines rides on this
	// schedule; a failure to sample is logged and does not stop the audit.
	if _, err := a.Ledger.SampleLag(ctx); err != nil && ctx.Err() == nil {
		log.Warn("lag sample could not be taken; it is tried again on schedule", "err", err)
	}
	rep, err := a.Ledger.AuditIncremental(ctx)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("ledger audit could not run; it is tried again on schedule", "err", err, "every", a.Every)
		}
		return
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	a.faults.Store(int64(len(rep.Faults)))
	a.lastSuccess.Store(now().UnixNano())
	for _, f := range rep.Faults {
		log.Error("ledger audit: fault", "stream", f.Stream.String(), "seq", f.Seq, "kind", string(f.Kind), "detail", f.Detail)
	}
	log.Info("ledger audit done", "streams", len(rep.Streams), "records", rep.Records, "checkpoints", rep.Checkpoints, "faults", len(rep.Faults))
}
