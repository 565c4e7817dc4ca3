package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// Errors. Callers branch on them with errors.Is.
var (
	// ErrNotFound: no rollout (or edge) of that id in the caller's scope.
	ErrNotFound = errors.New("not found")
	// ErrExists: a rollout of that id exists.
	ErrExists = errors.New("already exists")
	// ErrInvalid: the spec or an argument is malformed; the error says
	// which and what to give instead.
	ErrInvalid = errors.New("invalid")
	// ErrFinished: the rollout is completed or aborted, and cannot be
	// paused or resumed.
	ErrFinished = errors.New("rollout is finished")
)

// States of a rollout.
const (
	StateRunning   = "running"
	StatePaused    = "paused"
	StateCompleted = "completed"
	StateAborted   = "aborted"
)

// MaxIDLen bounds a rollout id: it is the ref of its commands.
const MaxIDLen = 48

// Create stores a new rollout from spec, running: a controller plans it
// on its next tick. It returns the rollout's id.
func Create(ctx context.Context, db ledger.DB, spec Spec) (string, error) {
	if _, err := spec.check(); err != nil {
		return "", fmt.Errorf("create rollout: %w: %w", ErrInvalid, err)
	}
	if spec.ID == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		spec.ID = "r-" + hex.EncodeToString(b)
	}
	if len(spec.ID) > MaxIDLen {
		return "", fmt.Errorf("create rollout: %w: id is %d bytes; the limit is %d", ErrInvalid, len(spec.ID), MaxIDLen)
	}
	if spec.Tenant != "" {
		var n int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM tenants WHERE id = $1`, spec.Tenant).Scan(&n); err != nil {
			return "", fmt.Errorf("create rollout: %w", err)
		}
		if n == 0 {
			return "", fmt.Errorf("create rollout: tenant %q: %w", spec.Tenant, ErrNotFound)
		}
	}
	_, err := db.Exec(ctx, `INSERT INTO rollouts (id, tenant, release, channel, target, stages, max_failures,
		silence_ms, window_spec, expires_ms, created_by, reason)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'waiting for the controller to plan it')`,
		spec.ID, spec.Tenant, spec.Release, spec.Channel, spec.To, spec.Stages, spec.MaxFailures,
		spec.Silence.Milliseconds(), spec.Window, spec.Expires.Milliseconds(), spec.CreatedBy)
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == "23505" {
		return "", fmt.Errorf("create rollout %s: %w", spec.ID, ErrExists)
	}
	if err != nil {
		return "", fmt.Errorf("create rollout: %w", err)
	}
	return spec.ID, nil
}

// row is a rollouts row.
type row struct {
	Spec
	State, Reason string
	Stage         int
	Skipped       int
	SkippedWhy    string
	Planned       bool
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

const rowColumns = `id, tenant, release, channel, target, stages, max_failures, silence_ms, window_spec, expires_ms,
	created_by, state, reason, stage, skipped, skipped_why, planned_at IS NOT NULL, created_at, updated_at`

func scanRow(r pgx.Row) (*row, error) {
	var x row
	var silence, expires int64
	err := r.Scan(&x.ID, &x.Tenant, &x.Release, &x.Channel, &x.To, &x.Stages, &x.MaxFailures, &silence, &x.Window, &expires,
		&x.CreatedBy, &x.State, &x.Reason, &x.Stage, &x.Skipped, &x.SkippedWhy, &x.Planned, &x.CreatedAt, &x.UpdatedAt)
	x.Silence, x.Expires = time.Duration(silence)*time.Millisecond, time.Duration(expires)*time.Millisecond
	return &x, err
}

// lockRow reads rollout id FOR UPDATE (skipLocked: nil when another
// transaction holds it).
func lockRow(ctx context.Context, tx pgx.Tx, id string, skipLocked bool) (*row, error) {
	q := `SELECT ` + rowColumns + ` FROM rollouts WHERE id = $1 FOR UPDATE`
	if skipLocked {
		q += ` SKIP LOCKED`
	}
	r, err := scanRow(tx.QueryRow(ctx, q, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return r, err
}

// Status is a rollout as the API and `cloud rollouts status --json` show
// it (docs/API.md, "Rollouts").
type Status struct {
	ID          string        `json:"id"`
	Tenant      string        `json:"tenant,omitempty"`
	Release     string        `json:"release"`
	Channel     string        `json:"channel"`
	To          string        `json:"to"`
	State       string        `json:"state"`
	Reason      string        `json:"reason"`
	Stage       int           `json:"stage"`
	StageSizes  string        `json:"stage_sizes"`
	MaxFailures string        `json:"max_failures"`
	Budget      int           `json:"failure_budget"`
	Failures    int           `json:"failures"`
	Silence     string        `json:"silence"`
	Window      string        `json:"window,omitempty"`
	Expires     string        `json:"expires"`
	Total       int           `json:"total"`
	Skipped     int           `json:"skipped"`
	SkippedWhy  string        `json:"skipped_why,omitempty"`
	CreatedBy   string        `json:"created_by,omitempty"`
	CreatedAt   time.Time     `json:"created_at"`
	UpdatedAt   time.Time     `json:"updated_at"`
	Stages      []StageStatus `json:"stages"`
	Edges       []EdgeStatus  `json:"edges,omitempty"`
}

// StageStatus counts a stage's edges. Assigned and Accepted count every
// edge that got (acknowledged) its assignment; the others count each edge
// by its state now.
type StageStatus struct {
	Index       int    `json:"index"`
	Size        string `json:"size"`
	Edges       int    `json:"edges"`
	Pending     int    `json:"pending"`
	Assigned    int    `json:"assigned"`
	Accepted    int    `json:"accepted"`
	Downloading int    `json:"downloading"`
	Installed   int    `json:"installed"`
	Committed   int    `json:"committed"`
	RolledBack  int    `json:"rolled_back"`
	Refused     int    `json:"refused"`
	Silent      int    `json:"silent"`
	Cancelled   int    `json:"cancelled"`
	Excused     int    `json:"excused"`
	State       string `json:"state"` // done, active, pending
	// Reasons are the rolled back and refused edges' reasons, by edge.
	Reasons map[string]string `json:"reasons,omitempty"`
}

// EdgeReason is one edge's failure reason.
type EdgeReason struct{ Edge, Why string }

// ReasonList is Reasons sorted by edge (the Fleet page lists them so).
func (s StageStatus) ReasonList() []EdgeReason {
	out := make([]EdgeReason, 0, len(s.Reasons))
	for e, why := range s.Reasons {
		out = append(out, EdgeReason{e, why})
	}
	slices.SortFunc(out, func(a, b EdgeReason) int { return strings.Compare(a.Edge, b.Edge) })
	return out
}

// EdgeStatus is one edge of a rollout.
type EdgeStatus struct {
	Edge       string     `json:"edge"`
	Stage      int        `json:"stage"`
	State      string     `json:"state"` // pending, assigned, accepted, downloading, installed, committed, rolled_back, refused, silent, cancelled
	Reason     string     `json:"reason"`
	Arch       string     `json:"arch"`
	Target     string     `json:"target"`
	Zone       string     `json:"zone,omitempty"`
	Seq        uint64     `json:"seq,omitempty"`
	AssignedAt *time.Time `json:"assigned_at,omitempty"`
	Excused    bool       `json:"excused,omitempty"` // a failure an operator's resume accepted
}

// Edge states (EdgeStatus.State).
const (
	EdgePending     = "pending"
	EdgeAssigned    = "assigned"
	EdgeAccepted    = "accepted"
	EdgeDownloading = "downloading"
	EdgeInstalled   = "installed"
	EdgeCommitted   = "committed"
	EdgeRolledBack  = "rolled_back"
	EdgeRefused     = "refused"
	EdgeSilent      = "silent"
	EdgeCancelled   = "cancelled"
)

// view is a rollout_edges row with what the OTA state projection says of
// it.
type view struct {
	Edge, Arch, Target, Zone, Row string
	Stage, Ord                    int
	Seq                           uint64
	AssignedAt                    *time.Time
	AcceptedSeq                   uint64
	LastAt                        *time.Time // the edge's last ota.* event but a command refusal
	Kind, Reason                  string     // its latest step of this release since the assignment
	KindAt                        *time.Time
	Revoked                       bool // the edge was revoked since the plan
}

// readViews reads the edges of rollout r with their OTA state.
func readViews(ctx context.Context, q ledger.Querier, r *row) ([]view, error) {
	rows, err := q.Query(ctx, `SELECT re.edge, re.arch, re.target, re.zone, re.state, re.stage, re.ord, re.seq, re.assigned_at,
			coalesce(s.accepted_seq, 0), s.last_at, coalesce(v.kind, ''), coalesce(v.reason, ''), v.at,
			coalesce(e.status = 'revoked', false)
		FROM rollout_edges re
		LEFT JOIN edges e ON e.id = re.edge
		LEFT JOIN ota_edge_state s ON s.edge = re.edge
		LEFT JOIN LATERAL (SELECT kind, reason, at FROM ota_edge_versions v
			WHERE v.edge = re.edge AND re.assigned_at IS NOT NULL AND v.at >= re.assigned_at
			  AND (v.version = $2 OR (v.version = '' AND v.target = re.target))
			  AND (v.seq = 0 OR v.seq >= re.seq)
			ORDER BY v.pos DESC LIMIT 1) v ON true
		WHERE re.rollout = $1 ORDER BY re.stage, re.ord`, r.ID, r.Release)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(cr pgx.CollectableRow) (view, error) {
		var v view
		var seq *int64
		var acc int64
		err := cr.Scan(&v.Edge, &v.Arch, &v.Target, &v.Zone, &v.Row, &v.Stage, &v.Ord, &seq, &v.AssignedAt,
			&acc, &v.LastAt, &v.Kind, &v.Reason, &v.KindAt, &v.Revoked)
		if seq != nil {
			v.Seq = uint64(*seq)
		}
		v.AcceptedSeq = uint64(acc)
		return v, err
	})
}

// state is what v's edge is doing now, and why (for failures).
func (v *view) state(now time.Time, silence time.Duration, window string) (state, reason string, accepted bool) {
	if v.Row == "pending" {
		return EdgePending, "", false
	}
	accepted = v.AcceptedSeq >= v.Seq && v.Seq > 0 || v.Kind != ""
	switch v.Kind {
	case "committed":
		return EdgeCommitted, "", true
	case "rolled_back":
		return EdgeRolledBack, v.Reason, true
	case "refused":
		return EdgeRefused, v.Reason, true
	case "cancelled":
		return EdgeCancelled, v.Reason, true
	}
	state = EdgeAssigned
	switch {
	case v.Kind == "installed" || v.Kind == "started":
		state = EdgeInstalled
	case v.Kind == "downloaded" || v.Kind == "verified":
		state = EdgeDownloading
	case v.Row == "cancelled":
		return EdgeCancelled, "withdrawn before it started", accepted
	case accepted:
		state = EdgeAccepted
	}
	if v.Row == "assigned" && v.AssignedAt != nil {
		since := *v.AssignedAt
		if v.LastAt != nil && v.LastAt.After(since) {
			since = *v.LastAt
		}
		quiet := now.Sub(since)
		if window != "" && (state == EdgeAssigned || state == EdgeAccepted) {
			// An edge told to wait for its window may: only the time
			// inside the window counts (an assignment made just before the
			// window closed is not silent overnight).
			quiet = windowOverlap(window, zoneOf(v.Zone), since, now)
		}
		if quiet > silence {
			return EdgeSilent, fmt.Sprintf("no ota event for %s (since %s; --silence %s) while %s",
				quiet.Truncate(time.Second), since.UTC().Format(time.RFC3339), silence, state), accepted
		}
	}
	return state, "", accepted
}

func isFailure(state string) bool {
	return state == EdgeRolledBack || state == EdgeRefused || state == EdgeSilent
}

// tally is what the controller and Status count over a rollout's edges.
type tally struct {
	stages                      []StageStatus
	edges                       []EdgeStatus
	failures                    int
	rolledBack, refused, silent int
	total                       int
	budget                      int
	inflight                    int    // assigned, neither committed nor failed (nor excused)
	stageDone                   []bool // every edge committed or excused
}

func count(r *row, vs []view, now time.Time) (*tally, error) {
	p, err := r.Spec.check()
	if err != nil {
		return nil, err
	}
	t := &tally{total: len(vs)}
	t.budget = p.failures.budget(len(vs))
	t.stages = make([]StageStatus, len(p.stages))
	t.stageDone = make([]bool, len(p.stages))
	for i := range t.stages {
		t.stages[i] = StageStatus{Index: i, Size: p.stages[i].String()}
		t.stageDone[i] = true
	}
	for i := range vs {
		v := &vs[i]
		st, reason, accepted := v.state(now, r.Silence, r.Window)
		excused := v.Row == "excused"
		if v.Revoked && st != EdgeCommitted {
			// It can never commit: left out, neither a failure nor
			// holding its stage (nor assigned, if it was not yet).
			excused = true
			reason = strings.TrimSuffix("edge revoked: left out of the rollout; "+reason, "; ")
		}
		es := EdgeStatus{Edge: v.Edge, Stage: v.Stage, State: st, Reason: reason, Arch: v.Arch, Target: v.Target, Zone: v.Zone,
			Seq: v.Seq, AssignedAt: v.AssignedAt, Excused: excused}
		t.edges = append(t.edges, es)
		if v.Stage >= len(t.stages) {
			continue
		}
		s := &t.stages[v.Stage]
		s.Edges++
		if st != EdgePending {
			s.Assigned++
		}
		if accepted {
			s.Accepted++
		}
		switch st {
		case EdgePending:
			s.Pending++
		case EdgeDownloading:
			s.Downloading++
		case EdgeInstalled:
			s.Installed++
		case EdgeCommitted:
			s.Committed++
		case EdgeRolledBack:
			s.RolledBack++
		case EdgeRefused:
			s.Refused++
		case EdgeSilent:
			s.Silent++
		case EdgeCancelled:
			s.Cancelled++
		}
		if (st == EdgeRolledBack || st == EdgeRefused) && reason != "" {
			if s.Reasons == nil {
				s.Reasons = map[string]string{}
			}
			s.Reasons[v.Edge] = reason
		}
		if excused {
			s.Excused++
		}
		if v.Row == "assigned" && st != EdgeCommitted && !isFailure(st) && !excused {
			t.inflight++
		}
		if st != EdgeCommitted && !excused {
			t.stageDone[v.Stage] = false
		}
		if isFailure(st) && !excused {
			t.failures++
			switch st {
			case EdgeRolledBack:
				t.rolledBack++
			case EdgeRefused:
				t.refused++
			case EdgeSilent:
				t.silent++
			}
		}
	}
	return t, nil
}

// failureText says what the failures are: "2 failures (1 rolled back, 1
// silent)".
func (t *tally) failureText() string {
	var parts []string
	for _, p := range []struct {
		n    int
		what string
	}{{t.rolledBack, "rolled back"}, {t.refused, "refused"}, {t.silent, "silent"}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", p.n, p.what))
		}
	}
	noun := "failures"
	if t.failures == 1 {
		noun = "failure"
	}
	return fmt.Sprintf("%d %s (%s)", t.failures, noun, strings.Join(parts, ", "))
}

// exceeded reports whether the failures exceed the budget.
func (t *tally) exceeded() bool { return t.failures > t.budget }

func (t *tally) pauseReason(r *row) string {
	return fmt.Sprintf("paused: %s exceed %d of %d (%s)", t.failureText(), t.budget, t.total, r.MaxFailures)
}

// Get returns rollout id's status, with its edges. q may be a
// ledger.ReadAs transaction (the API's reads: row-level security shows a
// tenant only its own rollouts and edges).
func Get(ctx context.Context, db ledger.DB, id string, now time.Time) (Status, error) {
	var s Status
	err := snapshot(ctx, db, func(q pgx.Tx) error {
		r, err := scanRow(q.QueryRow(ctx, `SELECT `+rowColumns+` FROM rollouts WHERE id = $1`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("rollout %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("rollout %s: %w", id, err)
		}
		s, err = status(ctx, q, r, now, true)
		return err
	})
	return s, err
}

// snapshot runs f in a read-only, repeatable-read transaction (a
// savepoint of one when db is a transaction already, such as the API's
// read transaction, which is one too), so that a rollout's row and its
// edges are read from one state of the database.
func snapshot(ctx context.Context, db ledger.DB, f func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`); err != nil {
		return err
	}
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func status(ctx context.Context, q ledger.Querier, r *row, now time.Time, withEdges bool) (Status, error) {
	vs, err := readViews(ctx, q, r)
	if err != nil {
		return Status{}, fmt.Errorf("rollout %s: %w", r.ID, err)
	}
	t, err := count(r, vs, now)
	if err != nil {
		return Status{}, fmt.Errorf("rollout %s: %w", r.ID, err)
	}
	s := Status{ID: r.ID, Tenant: r.Tenant, Release: r.Release, Channel: r.Channel, To: r.To, State: r.State, Reason: r.Reason,
		Stage: r.Stage, StageSizes: r.Stages, MaxFailures: r.MaxFailures, Budget: t.budget, Failures: t.failures,
		Silence: r.Silence.String(), Window: r.Window, Expires: r.Expires.String(), Total: t.total,
		Skipped: r.Skipped, SkippedWhy: r.SkippedWhy, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		Stages: t.stages}
	for i := range s.Stages {
		switch {
		case !r.Planned:
			s.Stages[i].State = "pending"
		case i < r.Stage || r.State == StateCompleted:
			s.Stages[i].State = "done"
		case i == r.Stage:
			s.Stages[i].State = "active"
		default:
			s.Stages[i].State = "pending"
		}
	}
	if withEdges {
		s.Edges = t.edges
	}
	return s, nil
}

// List returns the newest limit rollouts in q's scope (limit <= 0: all),
// newest first, with stage counts but without the per-edge list.
func List(ctx context.Context, db ledger.DB, now time.Time, limit int) ([]Status, error) {
	var out []Status
	if limit <= 0 {
		limit = math.MaxInt32
	}
	err := snapshot(ctx, db, func(q pgx.Tx) error {
		rows, err := q.Query(ctx, `SELECT `+rowColumns+` FROM rollouts ORDER BY created_at DESC, id LIMIT $1`, limit)
		if err != nil {
			return fmt.Errorf("list rollouts: %w", err)
		}
		rs, err := pgx.CollectRows(rows, func(cr pgx.CollectableRow) (*row, error) { return scanRow(cr) })
		if err != nil {
			return fmt.Errorf("list rollouts: %w", err)
		}
		out = make([]Status, 0, len(rs))
		for _, r := range rs {
			s, err := status(ctx, q, r, now, false)
			if err != nil {
				return err
			}
			out = append(out, s)
		}
		return nil
	})
	return out, err
}

// Tenant returns the tenant of rollout id ("" for a global one).
func Tenant(ctx context.Context, q ledger.DB, id string) (string, error) {
	var t string
	err := q.QueryRow(ctx, `SELECT tenant FROM rollouts WHERE id = $1`, id).Scan(&t)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("rollout %s: %w", id, ErrNotFound)
	}
	return t, err
}

// Tag puts tags on edge (and, with remove, takes them off).
func Tag(ctx context.Context, db ledger.DB, edge string, tags []string, remove bool) error {
	if len(tags) == 0 {
		return fmt.Errorf("tag edge %s: %w: no tags given", edge, ErrInvalid)
	}
	for _, t := range tags {
		if err := CheckTag(t); err != nil {
			return fmt.Errorf("tag edge %s: %w: %w", edge, ErrInvalid, err)
		}
	}
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM edges WHERE id = $1`, edge).Scan(&n); err != nil {
		return fmt.Errorf("tag edge %s: %w", edge, err)
	}
	if n == 0 {
		return fmt.Errorf("tag edge %s: %w", edge, ErrNotFound)
	}
	q := `INSERT INTO edge_tags (edge, tag) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING`
	if remove {
		q = `DELETE FROM edge_tags WHERE edge = $1 AND tag = ANY($2::text[])`
	}
	if _, err := db.Exec(ctx, q, edge, tags); err != nil {
		return fmt.Errorf("tag edge %s: %w", edge, err)
	}
	return nil
}

// Tags returns edge's tags, sorted.
func Tags(ctx context.Context, q ledger.Querier, edge string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT tag FROM edge_tags WHERE edge = $1 ORDER BY tag`, edge)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Operator actions.

// Pause stops rollout id: no new assignment; every assignment an edge has
// not started is withdrawn (its commands cancelled, an ota.cancel to the
// edges that may hold it). Pausing a paused rollout does nothing.
func Pause(ctx context.Context, db ledger.DB, cmds Commands, id, who string) error {
	return act(ctx, db, id, func(tx pgx.Tx, r *row) error {
		switch r.State {
		case StatePaused:
			return nil
		case StateCompleted, StateAborted:
			return fmt.Errorf("pause rollout %s: it is %s: %w", id, r.State, ErrFinished)
		}
		return withdraw(ctx, tx, cmds, r, StatePaused, "paused by "+who, time.Now())
	})
}

// Abort ends rollout id for good: as Pause, and it never resumes.
func Abort(ctx context.Context, db ledger.DB, cmds Commands, id, who string) error {
	return act(ctx, db, id, func(tx pgx.Tx, r *row) error {
		switch r.State {
		case StateAborted:
			return nil
		case StateCompleted:
			return fmt.Errorf("abort rollout %s: it is %s: %w", id, r.State, ErrFinished)
		}
		return withdraw(ctx, tx, cmds, r, StateAborted, "aborted by "+who, time.Now())
	})
}

// Resume runs a paused rollout again. The failures so far are accepted
// (excused: they no longer count against --max-failures nor hold their
// stage); edges whose assignment was withdrawn, or that were silent, are
// assigned again (anew, in their window) on the controller's next tick.
// Resuming a running rollout does nothing.
func Resume(ctx context.Context, db ledger.DB, id, who string, now time.Time) error {
	return act(ctx, db, id, func(tx pgx.Tx, r *row) error {
		switch r.State {
		case StateRunning:
			return nil
		case StateCompleted, StateAborted:
			return fmt.Errorf("resume rollout %s: it is %s: %w", id, r.State, ErrFinished)
		}
		vs, err := readViews(ctx, tx, r)
		if err != nil {
			return err
		}
		var repend, excuse, reassigned []string
		for i := range vs {
			v := &vs[i]
			if v.Row == "pending" || v.Row == "excused" {
				continue
			}
			st, _, _ := v.state(now, r.Silence, r.Window)
			switch st {
			case EdgeRolledBack, EdgeRefused:
				excuse = append(excuse, v.Edge)
			case EdgeCommitted, EdgeDownloading, EdgeInstalled:
				if v.Row == "cancelled" {
					reassigned = append(reassigned, v.Edge) // it went ahead: watch it again
				}
			default: // assigned, accepted, silent, cancelled
				repend = append(repend, v.Edge)
			}
		}
		b := &pgx.Batch{}
		b.Queue(`UPDATE rollout_edges SET state = 'pending', seq = NULL, assigned_at = NULL WHERE rollout = $1 AND edge = ANY($2)`, id, repend)
		b.Queue(`UPDATE rollout_edges SET state = 'excused' WHERE rollout = $1 AND edge = ANY($2)`, id, excuse)
		b.Queue(`UPDATE rollout_edges SET state = 'assigned' WHERE rollout = $1 AND edge = ANY($2)`, id, reassigned)
		b.Queue(`UPDATE rollouts SET state = 'running', reason = $2, updated_at = now() WHERE id = $1`, id,
			fmt.Sprintf("resumed by %s (%d failures accepted, %d edges to assign again)", who, len(excuse), len(repend)))
		return tx.SendBatch(ctx, b).Close()
	})
}

// act runs fn on rollout id's row, locked, in one transaction.
func act(ctx context.Context, db ledger.DB, id string, fn func(pgx.Tx, *row) error) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		r, err := lockRow(ctx, tx, id, false)
		if err != nil {
			return fmt.Errorf("rollout %s: %w", id, err)
		}
		if r == nil {
			return fmt.Errorf("rollout %s: %w", id, ErrNotFound)
		}
		return fn(tx, r)
	})
}

// withdraw sets r's state (paused or aborted) and withdraws what its edges
// have not started: CancelRef, then an ota.cancel to each edge that may
// hold its assignment. tx holds r's row lock.
func withdraw(ctx context.Context, tx pgx.Tx, cmds Commands, r *row, state, reason string, now time.Time) error {
	if _, err := tx.Exec(ctx, `UPDATE rollouts SET state = $2, reason = $3, updated_at = now() WHERE id = $1`, r.ID, state, reason); err != nil {
		return err
	}
	if _, err := cmds.CancelRef(ctx, tx, r.ID); err != nil {
		return err
	}
	vs, err := readViews(ctx, tx, r)
	if err != nil {
		return err
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Edge < vs[j].Edge }) // Enqueue's lock order
	var withdrawn []string
	for i := range vs {
		v := &vs[i]
		if v.Row != "assigned" {
			continue
		}
		st, _, _ := v.state(now, r.Silence, r.Window)
		switch st {
		case EdgeCommitted, EdgeRolledBack, EdgeRefused, EdgeCancelled:
			continue // settled
		}
		if st != EdgeSilent {
			// A silent edge stays silent (a failure, as the pause said);
			// its command is cancelled all the same.
			withdrawn = append(withdrawn, v.Edge)
		}
		held, err := cmds.Held(ctx, tx, v.Edge, v.Seq)
		if err != nil {
			return err
		}
		if !held {
			continue
		}
		body := protocol.EncodeCancel(protocol.Cancel{Rollout: r.ID, Reason: reason})
		if _, err := cmds.Enqueue(ctx, tx, v.Edge, protocol.CommandCancel, "", body, now.Add(r.Expires)); err != nil {
			return err
		}
	}
	_, err = tx.Exec(ctx, `UPDATE rollout_edges SET state = 'cancelled' WHERE rollout = $1 AND edge = ANY($2)`, r.ID, withdrawn)
	return err
}
