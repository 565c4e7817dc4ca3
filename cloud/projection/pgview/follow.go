package pgview

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/ledger"
)

// Follower folds the ledger into a projection behind the commits instead
// of inside them (docs/REPORTS.md, "Folding behind the commits"): it reads
// the records committed after the projection's checkpoint, in pos order
// and below the horizon (ledger.Tail), and folds them with Apply in a
// transaction of its own, as many commits at once as have arrived since
// the last fold (up to Page records). Rows a burst of commits touches
// are then read and written once per fold rather than once per commit,
// and commits do not wait for the fold, nor for each other (a Follower's
// projection is not in ledger.Options.Projections, so commits take no
// order lock).
//
// Invariants:
//   - The checkpoint's last_pos is the position through which every
//     record is folded: Tail returns records only below the horizon, so
//     no record with a lower position can commit after one it returned,
//     and the fold appends them in pos order, as a rebuild does. The rows
//     are the same function of the ledger as the commit-time fold's
//     (TestFollowerEqualsReference).
//   - Every fold locks the checkpoint and folds only when last_pos is still
//     the one it read the records after; otherwise another follower (a
//     replica) or a rebuild's swap moved it, and it reads again. So any
//     number of followers may run on one database.
//   - Reports say how far the projection is folded (as_of is last_pos);
//     the records committed after it are in no report yet, and land, late
//     business days included, in their own rows when the follower folds
//     them, with no other step (TestFollowerLateEventLandsByItself).
type Follower struct {
	// Projection is the projection folded (New's live one).
	Projection *Projection
	// Ledger is read with Tail; Pool runs the fold transactions.
	Ledger *ledger.Ledger
	Pool   *pgxpool.Pool
	// Page bounds the records of one fold transaction. Default 5000.
	Page int
	// Idle is how long Run waits for a Wake before it looks for records
	// anyway (commits of other replicas, and records a long transaction
	// held above the horizon when Wake came). Default 200 ms.
	Idle   time.Duration
	Logger *slog.Logger

	wake chan struct{}
	// through is the position CatchUp last folded through, and folds how
	// many fold transactions committed, in this process.
	through, folds atomic.Int64
}

// Through returns the position through which this Follower's last fold
// committed (0 before its first).
func (f *Follower) Through() int64 { return f.through.Load() }

// Folds returns how many fold transactions this Follower committed.
func (f *Follower) Folds() int64 { return f.folds.Load() }

// NewFollower returns a Follower of p over l's ledger.
func NewFollower(p *Projection, l *ledger.Ledger, pool *pgxpool.Pool) *Follower {
	return &Follower{Projection: p, Ledger: l, Pool: pool, wake: make(chan struct{}, 1)}
}

// Wake tells Run that records were committed; it never blocks. It fits
// ledger.Options.Committed.
func (f *Follower) Wake(int64) {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *Follower) page() int {
	if f.Page <= 0 {
		return 5000
	}
	return f.Page
}

// errMoved is CatchUp's finding that the checkpoint moved between the read
// of the records and the lock.
var errMoved = errors.New("the checkpoint moved")

// CatchUp folds, in one transaction, the records committed after the
// checkpoint (at most Page of them) and returns how many it folded: 0 when
// there were none below the horizon, or when another follower folded them
// first.
func (f *Follower) CatchUp(ctx context.Context) (int, error) {
	p := f.Projection
	cp, _, err := ReadCheckpoint(ctx, f.Pool, p.name)
	if err != nil {
		return 0, err
	}
	var recs []ledger.Committed
	for after, page := cp.LastPos, f.page(); len(recs) < page; {
		want := min(page-len(recs), ledger.MaxLimit)
		got, err := f.Ledger.Tail(ctx, after, want)
		if err != nil {
			return 0, fmt.Errorf("projection %s: %w", p.name, err)
		}
		recs = append(recs, got...)
		if len(got) < want {
			break
		}
		after = got[len(got)-1].Pos
	}
	if len(recs) == 0 {
		return 0, nil
	}
	err = pgx.BeginFunc(ctx, f.Pool, func(tx pgx.Tx) error {
		now, err := lockCheckpoint(ctx, tx, p.name)
		if err != nil {
			return err
		}
		if now.LastPos != cp.LastPos {
			return errMoved
		}
		return p.Apply(ctx, tx, recs)
	})
	if errors.Is(err, errMoved) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("projection %s: fold positions %d to %d: %w", p.name, recs[0].Pos, recs[len(recs)-1].Pos, err)
	}
	f.through.Store(recs[len(recs)-1].Pos)
	f.folds.Add(1)
	return len(recs), nil
}

// Run folds until ctx ends: whenever woken (Wake) or every Idle, as long as
// there are records to fold. A failed fold is logged and tried again
// after a pause; nothing of it is kept.
func (f *Follower) Run(ctx context.Context) error {
	log := f.Logger
	if log == nil {
		log = slog.Default()
	}
	idle := f.Idle
	if idle <= 0 {
		idle = 200 * time.Millisecond
	}
	if f.wake == nil {
		f.wake = make(chan struct{}, 1)
	}
	pause := idle
	for {
		n, err := f.CatchUp(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Error("projection fold failed; trying again", "projection", f.Projection.name, "err", err, "in", pause)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(pause):
			}
			pause = min(2*pause, 30*time.Second)
			continue
		}
		pause = idle
		if n >= f.page() {
			continue // more waiting
		}
		select {
		case <-ctx.Done():
			return nil
		case <-f.wake:
		case <-time.After(idle):
		}
	}
}
