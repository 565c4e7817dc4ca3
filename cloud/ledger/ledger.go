package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outpost-edge/outpost/cloud/ingest"
	"github.com/outpost-edge/outpost/protocol"
)

// DB is what the ledger needs from Postgres. *pgxpool.Pool satisfies it and
// is what the service passes; a single *pgx.Conn does too, for a Ledger
// that is used by one goroutine at a time (one per ingest worker, or a
// test).
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Errors. Callers branch on them with errors.Is.
var (
	// ErrSchemaTooNew: the database was migrated by a newer binary. The
	// error is a *SchemaError saying both versions.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
	// ErrSchemaBehind: the database needs migrating (Migrate) before this
	// binary can use it.
	ErrSchemaBehind = errors.New("database schema is behind this binary")

	// ErrNotFound: no such edge, key or token name.
	ErrNotFound = errors.New("not found")
	// ErrExists: the edge or token name is taken.
	ErrExists = errors.New("already exists")
	// ErrKeyInUse: the public key is already registered (to this or another edge).
	ErrKeyInUse = errors.New("key already registered")
	// ErrUnknownKey: a key id that is not registered to the edge in question.
	ErrUnknownKey = errors.New("unknown key")
	// ErrRevoked: the edge, key or API token is revoked.
	ErrRevoked = errors.New("revoked")

	// ErrTokenUnknown: no enrollment or API token has this plaintext.
	ErrTokenUnknown = errors.New("unknown token")
	// ErrTokenUsed: the enrollment token was used already.
	ErrTokenUsed = errors.New("enrollment token already used")
	// ErrTokenExpired: the enrollment token expired before it was used.
	ErrTokenExpired = errors.New("enrollment token expired")
	// ErrCounterUsed: a broker login whose counter is not above the
	// highest accepted for the edge (a replayed or stale broker token).
	ErrCounterUsed = errors.New("broker login counter already used")
)

// Options configure a Ledger. The zero value is usable; New fills defaults.
type Options struct {
	// Projections are applied inside every commit transaction, in order,
	// to the records it commits. An error from one rolls the commit back.
	Projections []Projection
	// Verifiers bounds how many segments of a batch are verified at once
	// (signatures and chains, before the transaction). Default GOMAXPROCS.
	Verifiers int
	// Now is the clock for token expiry. Default time.Now. Commit times
	// come from the database's clock, so that they follow commit order.
	Now func() time.Time
	// Logger gets quarantines and retries. Default slog.Default().
	Logger *slog.Logger
	// Quarantine bounds what refused segments may keep; zero fields take
	// the defaults of QuarantineLimits.
	Quarantine QuarantineLimits
	// Committed, when not nil, is called after every commit transaction
	// that committed records, once it has committed, with the highest
	// position it gave. A projection that folds behind the commits
	// (pgview.Follower) wakes on it. It must not block.
	Committed func(lastPos int64)
}

// Ledger commits verified segments to Postgres and reads them back, and
// keeps the fleet's edges, keys and tokens. It is safe for concurrent use
// when its DB is (a pool).
type Ledger struct {
	db    DB
	opts  Options
	stats stats
	keys  keyCache

	// orderKeys are the OrderKeys of the OrderedProjections, whose locks
	// every commit takes before its positions.
	orderKeys []string

	lastPrune atomic.Int64 // Unix ns of the last quarantine retention pass
}

// New returns a Ledger on db, whose schema Migrate has brought up to date.
func New(db DB, opts Options) *Ledger {
	if opts.Verifiers <= 0 {
		opts.Verifiers = runtime.GOMAXPROCS(0)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.Logger = opts.Logger.With("component", "ledger")
	opts.Quarantine = opts.Quarantine.withDefaults()
	l := &Ledger{db: db, opts: opts, orderKeys: []string{}}
	for _, p := range opts.Projections {
		if o, ok := p.(OrderedProjection); ok {
			l.orderKeys = append(l.orderKeys, o.OrderKey())
		}
	}
	return l
}

// DB returns the database handle the ledger uses.
func (l *Ledger) DB() DB { return l.db }

// Stats counts what Commit did since New, by outcome.
type Stats struct {
	Committed   uint64 // segments that added records
	Records     uint64 // records added
	Duplicates  uint64 // segments already committed entirely
	Gaps        uint64 // segments refused because they start above hwm+1
	Quarantined uint64 // segments that failed their signature or chain

	// What the quarantine bounds did (QuarantineLimits).
	QuarantineCopies    uint64 // arrivals of a payload already kept: counted on its row
	QuarantineTruncated uint64 // payloads kept only as a prefix: the sender was over its byte cap
	QuarantineDropped   uint64 // arrivals not kept at all: the sender was over its row cap
	QuarantinePruned    uint64 // rows deleted after the retention
}

type stats struct {
	committed, records, duplicates, gaps, quarantined atomic.Uint64

	qCopies, qTruncated, qDropped, qPruned atomic.Uint64
}

// Stats returns the counters.
func (l *Ledger) Stats() Stats {
	return Stats{
		Committed:   l.stats.committed.Load(),
		Records:     l.stats.records.Load(),
		Duplicates:  l.stats.duplicates.Load(),
		Gaps:        l.stats.gaps.Load(),
		Quarantined: l.stats.quarantined.Load(),

		QuarantineCopies:    l.stats.qCopies.Load(),
		QuarantineTruncated: l.stats.qTruncated.Load(),
		QuarantineDropped:   l.stats.qDropped.Load(),
		QuarantinePruned:    l.stats.qPruned.Load(),
	}
}

// Watermark is a stream's committed state: the fields of a receipt
// (ingest.Watermark).
type Watermark = ingest.Watermark

// Receipt returns the latest receipt fields of a stream: HWM 0 for a
// stream the ledger has never seen.
func (l *Ledger) Receipt(ctx context.Context, s protocol.Stream) (Watermark, error) {
	w := Watermark{Stream: s}
	var head []byte
	var at *time.Time
	var hwm int64
	err := l.db.QueryRow(ctx,
		`SELECT hwm, head, last_commit FROM streams WHERE edge = $1 AND epoch = $2`,
		s.Edge, s.Epoch[:]).Scan(&hwm, &head, &at)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return w, nil
	case err != nil:
		return w, fmt.Errorf("receipt %s: %w", s, err)
	}
	w.HWM = uint64(hwm)
	copy(w.Head[:], head)
	if at != nil {
		w.CommittedAt = *at
	}
	return w, nil
}

// NoteHello records a hello from an edge and returns the receipt fields to
// answer with. It records when the stream was seen and, from the hello's
// signed checkpoint only, the edge's head (for the lag shown by Streams):
// the checkpoint with the latest edge_time wins, so neither an unsigned seq
// nor a replayed older checkpoint moves it. A checkpoint that does not
// verify against the edge's keys is ignored (and logged); the hello is
// still answered. The hello's agent (the edge's software version) is
// recorded on the edge, cleaned (CleanAgent), for any registered active
// edge. A hello for a stream the ledger has not committed
// anything of changes nothing: stream rows are only made from verified
// segments.
func (l *Ledger) NoteHello(ctx context.Context, h protocol.Hello) (Watermark, error) {
	s := protocol.Stream{Edge: h.Edge, Epoch: h.Epoch}
	w := Watermark{Stream: s}
	// A revoked edge gets no answer (ErrRevoked): through an external
	// broker, which cannot close its session, it may still say hello.
	var status string
	switch err := l.db.QueryRow(ctx, `SELECT status FROM edges WHERE id = $1`, h.Edge).Scan(&status); {
	case err == nil && status != StatusActive:
		return w, fmt.Errorf("hello from edge %s: %w", h.Edge, ErrRevoked)
	case err != nil && !errors.Is(err, pgx.ErrNoRows):
		return w, fmt.Errorf("hello %s: %w", s, err)
	case err == nil:
		if err := l.noteAgent(ctx, h.Edge, h.Agent); err != nil {
			return w, err
		}
	}
	var edgeSeq, edgeTime *int64
	if cp, ok := l.helloCheckpoint(ctx, h); ok {
		seq, t := int64(cp.Seq), int64(cp.EdgeTime)
		edgeSeq, edgeTime = &seq, &t
	}
	var head []byte
	var at *time.Time
	var hwm int64
	err := l.db.QueryRow(ctx,
		`UPDATE streams SET last_seen = now(),
			edge_seq = CASE WHEN $4::bigint IS NOT NULL AND (edge_seq_time IS NULL OR edge_seq_time < $4) THEN $3 ELSE edge_seq END,
			edge_seq_time = CASE WHEN $4::bigint IS NOT NULL AND (edge_seq_time IS NULL OR edge_seq_time < $4) THEN $4 ELSE edge_seq_time END
		 WHERE edge = $1 AND epoch = $2
		 RETURNING hwm, head, last_commit`,
		h.Edge, h.Epoch[:], edgeSeq, edgeTime).Scan(&hwm, &head, &at)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return w, nil
	case err != nil:
		return w, fmt.Errorf("hello %s: %w", s, err)
	}
	w.HWM = uint64(hwm)
	copy(w.Head[:], head)
	if at != nil {
		w.CommittedAt = *at
	}
	return w, nil
}

// helloCheckpoint verifies a hello's checkpoint against the edge's keys.
func (l *Ledger) helloCheckpoint(ctx context.Context, h protocol.Hello) (protocol.Checkpoint, bool) {
	if h.Checkpoint == nil {
		return protocol.Checkpoint{}, false
	}
	keys, err := l.keys.get(ctx, l.db, []string{h.Edge})
	if err != nil {
		l.opts.Logger.Warn("hello: could not load the edge's keys; its head is not recorded", "edge", h.Edge, "err", err)
		return protocol.Checkpoint{}, false
	}
	k := keys[h.Edge]
	if k == nil {
		return protocol.Checkpoint{}, false
	}
	cp, err := protocol.VerifyCheckpoint(h.Checkpoint, k)
	if err == nil && cp.Stream() != (protocol.Stream{Edge: h.Edge, Epoch: h.Epoch}) {
		err = fmt.Errorf("checkpoint of stream %s in a hello for %s", cp.Stream(), protocol.Stream{Edge: h.Edge, Epoch: h.Epoch})
	}
	if err != nil {
		l.opts.Logger.Warn("hello: the checkpoint does not verify; the edge's head is not recorded", "edge", h.Edge, "err", err)
		return protocol.Checkpoint{}, false
	}
	return cp, true
}

// retryable reports whether err is a deadlock or serialization failure,
// after which the whole transaction may simply run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
