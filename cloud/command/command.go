// Package command keeps the cloud's commands to its edges (the command
// channel: docs/OTA.md "Commands", DESIGN.md topics .../cmd) in Postgres
// (migration 0012, table edge_commands) until they are delivered,
// acknowledged, cancelled or expired.
//
// A command is signed once, when it is made (Enqueue), with the edge's next
// sequence number: the stored bytes are what every delivery publishes, so a
// redelivery is byte-identical and the edge drops it as already accepted.
//
// Invariants:
//   - One edge's seqs start at 1, are unique, are never reused (the counter
//     in edge_command_seqs outlives pruned rows) and commit in order: Enqueue
//     row-locks the edge's counter until its transaction ends, so seq N+1
//     cannot become visible before seq N, and a delivery that sent N+1 can
//     never have skipped N (the edge would then drop N as a replay).
//   - A cancelled or expired command is never handed out for publishing
//     again (Take).
//   - delivered_at is committed before the command is handed out for
//     publishing (Take marks, then reads what is marked), so CancelRef
//     never reports "not received" for a command that was, or is being,
//     published.
//
// Delivery (the Deliverer in deliver.go) calls NoteHello and Take on every
// hello, and Take whenever Enqueue's NOTIFY says an edge it serves has a
// new command. The edge's own ledger acknowledges too: cloud/rollout's
// projection calls NoteAccepted for each ota.command_accepted it commits.
package command

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// NotifyChannel is the Postgres NOTIFY channel on which Enqueue announces,
// when its transaction commits, the edge that has a new command (the
// payload is the edge id).
const NotifyChannel = "outpost_edge_commands"

// MaxRefLen bounds a command's ref (a rollout id).
const MaxRefLen = protocol.MaxIDLen

// Errors of the package.
var (
	// ErrUnknownEdge: Enqueue was given an edge the cloud does not know.
	ErrUnknownEdge = errors.New("unknown edge")
	// ErrInvalid: an argument is malformed; the error says which and why.
	ErrInvalid = errors.New("invalid command")
)

// Querier is what List and Take need: a pool, a connection or a
// transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Status is one stored command, for the API and the CLI.
type Status struct {
	Edge        string     `json:"edge"`
	Seq         uint64     `json:"seq"`
	Kind        string     `json:"kind"`
	Ref         string     `json:"ref,omitempty"`
	Body        []byte     `json:"body,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	Expires     time.Time  `json:"expires"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
	AckedAt     *time.Time `json:"acked_at,omitempty"`
	CancelledAt *time.Time `json:"cancelled_at,omitempty"`
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// CheckKind checks a command kind as the edge does (protocol.VerifyCommand):
// 1 to 64 of a-z 0-9 . _ -.
func CheckKind(kind string) error {
	if kind == "" || len(kind) > 64 || strings.Trim(kind, "abcdefghijklmnopqrstuvwxyz0123456789._-") != "" {
		return invalid("kind %q is not 1 to 64 of a-z 0-9 . _ - (such as %q)", kind, protocol.CommandAssign)
	}
	return nil
}

func checkArgs(edge, kind, ref string, body []byte, expires time.Time) error {
	if err := protocol.ValidateName("edge", edge); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := CheckKind(kind); err != nil {
		return err
	}
	if ref != "" {
		if err := protocol.ValidateName("ref", ref); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if len(body) > protocol.MaxCommandBodyBytes {
		return invalid("body is %d bytes; the limit is %d", len(body), protocol.MaxCommandBodyBytes)
	}
	if expires.IsZero() || expires.UnixMilli() <= 0 {
		return invalid("expires is %v; want the time after which the edge must refuse the command", expires)
	}
	return nil
}

// Enqueue allocates edge's next command seq, signs the command and stores it
// in tx, so a caller's own rows (a rollout's assignment) commit with it. ref
// groups commands (a rollout's id; "" none). When tx commits, edges
// connected to any cloud replica get it within a few seconds (NOTIFY on
// NotifyChannel), and an edge that is offline gets it in reply to its next
// hello, unless it has expired or was cancelled by then.
//
// kind is 1 to 64 of a-z 0-9 . _ -; ref, when given, 1 to 64 of
// [A-Za-z0-9_-]; body at most protocol.MaxCommandBodyBytes; expires must be
// set (an expiry already past is stored, and never sent). A bad argument is
// ErrInvalid naming it, an edge that is not registered ErrUnknownEdge.
//
// The edge's counter stays row-locked until tx ends: keep tx short, and
// when one transaction enqueues for several edges, do so in a consistent
// order (sorted edge ids) so that two such transactions cannot deadlock.
func Enqueue(ctx context.Context, tx pgx.Tx, signer *protocol.Signer, edge, kind, ref string, body []byte, expires time.Time) (seq uint64, err error) {
	if err := checkArgs(edge, kind, ref, body, expires); err != nil {
		return 0, fmt.Errorf("enqueue command for edge %q: %w", edge, err)
	}
	if signer == nil {
		return 0, fmt.Errorf("enqueue command for edge %q: %w: no signer (the cloud key)", edge, ErrInvalid)
	}
	if body == nil {
		body = []byte{}
	}
	var last int64
	err = tx.QueryRow(ctx, `INSERT INTO edge_command_seqs (edge, last) VALUES ($1, 1)
		ON CONFLICT (edge) DO UPDATE SET last = edge_command_seqs.last + 1
		RETURNING last`, edge).Scan(&last)
	if err != nil {
		return 0, enqueueErr(edge, err)
	}
	seq = uint64(last)
	signed := signer.SignCommand(protocol.Command{
		Edge: edge, Seq: seq, Expires: expires.UnixMilli(), Kind: kind, Body: body,
	})
	if _, err := tx.Exec(ctx, `INSERT INTO edge_commands (edge, seq, kind, ref, body, signed, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, edge, last, kind, ref, body, signed, expires.UTC()); err != nil {
		return 0, enqueueErr(edge, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, edge); err != nil {
		return 0, enqueueErr(edge, err)
	}
	return seq, nil
}

func enqueueErr(edge string, err error) error {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "23503" {
		return fmt.Errorf("enqueue command for edge %q: %w (enroll it first, or check the id)", edge, ErrUnknownEdge)
	}
	return fmt.Errorf("enqueue command for edge %q: %w", edge, err)
}

// CancelRef cancels every command with ref that the edge has not
// acknowledged (hello.Cmd < seq): it is never sent again. It returns the
// edges of cancelled commands that were already published at least once
// (they may hold it), sorted and without duplicates, so the caller can
// follow with an ota.cancel. Cancelling again is a no-op that returns none.
func CancelRef(ctx context.Context, tx pgx.Tx, ref string) (maybeReceived []string, err error) {
	if ref == "" {
		return nil, fmt.Errorf("cancel commands: %w: ref is empty (it would match every command without one)", ErrInvalid)
	}
	rows, err := tx.Query(ctx, `UPDATE edge_commands SET cancelled_at = now()
		WHERE ref = $1 AND acked_at IS NULL AND cancelled_at IS NULL
		RETURNING edge, delivered_at IS NOT NULL`, ref)
	if err != nil {
		return nil, fmt.Errorf("cancel commands of %q: %w", ref, err)
	}
	seen := map[string]bool{}
	for rows.Next() {
		var edge string
		var delivered bool
		if err := rows.Scan(&edge, &delivered); err != nil {
			return nil, fmt.Errorf("cancel commands of %q: %w", ref, err)
		}
		if delivered && !seen[edge] {
			seen[edge] = true
			maybeReceived = append(maybeReceived, edge)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cancel commands of %q: %w", ref, err)
	}
	slices.Sort(maybeReceived)
	return maybeReceived, nil
}

// List returns edge's stored commands, in seq order.
func List(ctx context.Context, q Querier, edge string) ([]Status, error) {
	if err := protocol.ValidateName("edge", edge); err != nil {
		return nil, fmt.Errorf("list commands: %w: %w", ErrInvalid, err)
	}
	rows, err := q.Query(ctx, `SELECT edge, seq, kind, ref, body, created_at, expires_at, delivered_at, acked_at, cancelled_at
		FROM edge_commands WHERE edge = $1 ORDER BY seq`, edge)
	if err != nil {
		return nil, fmt.Errorf("list commands of edge %q: %w", edge, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Status, error) {
		var s Status
		var seq int64
		err := r.Scan(&s.Edge, &seq, &s.Kind, &s.Ref, &s.Body, &s.CreatedAt, &s.Expires, &s.DeliveredAt, &s.AckedAt, &s.CancelledAt)
		s.Seq = uint64(seq)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("list commands of edge %q: %w", edge, err)
	}
	return out, nil
}

// Pending is a command handed out for publishing: its seq and the signed
// bytes to publish as they are.
type Pending struct {
	Seq    uint64
	Signed []byte
}

// NoteHello records that edge said, in a hello, that it accepted every
// command up to cmd (hello.Cmd): those that were delivered are marked
// acknowledged (one never sent, cancelled or expired first, was skipped,
// not accepted), and cmd is
// kept as where the next push starts (Take after it). It reports whether
// the edge has commands to get (seq > cmd, neither cancelled nor expired
// at now). An edge whose state was reset says a lower cmd than before:
// that is kept too, so it gets again what it lost. A cmd above the last
// seq given raises the edge's counter to it (the counter went back). The
// hello of an edge that is not registered and active records nothing and
// gets nothing.
func NoteHello(ctx context.Context, q Querier, edge string, cmd uint64, now time.Time) (pending bool, err error) {
	_, pending, err = noteHello(ctx, q, edge, cmd, now)
	return pending, err
}

// noteHello is NoteHello, and says whether edge is active (registered and
// not revoked): only an active edge is served.
func noteHello(ctx context.Context, q Querier, edge string, cmd uint64, now time.Time) (active, pending bool, err error) {
	// The counter row is locked while an Enqueue for the edge is in
	// flight (a rollout's transaction): the hello does not wait for it,
	// and leaves acked as it was (lower or equal, which only means more
	// redelivery on the next push). A hello that says the cmd already
	// kept neither locks nor rewrites the row: an edge saying hello in a
	// loop costs reads only.
	//
	// A cmd above the counter's last means the counter went back (the
	// database restored from an older backup): the edge accepted those
	// seqs, signed by the cloud key, and would drop the next ones as
	// replays. The counter is raised to it (at most to maxRaise), so the
	// next Enqueue gives a seq the edge accepts. A forged cmd can only
	// raise it, which no edge minds. (An edge with no counter row at all
	// is not raised: inserting one would wait for an Enqueue in flight.)
	rows, err := q.Query(ctx, `WITH e AS (
			SELECT 1 FROM edges WHERE id = $1 AND status = $4
		), h AS (
			UPDATE edge_command_seqs SET acked = $2, last = greatest(last, $5)
			WHERE edge = (SELECT edge FROM edge_command_seqs
				WHERE edge = $1 AND (acked <> $2 OR last < $5) AND EXISTS (SELECT 1 FROM e) FOR UPDATE SKIP LOCKED)
		), a AS (
			UPDATE edge_commands SET acked_at = now()
			WHERE edge = $1 AND seq <= $2 AND acked_at IS NULL AND delivered_at IS NOT NULL AND EXISTS (SELECT 1 FROM e)
		)
		SELECT EXISTS (SELECT 1 FROM e), EXISTS (SELECT 1 FROM edge_commands
			WHERE edge = $1 AND seq > $2 AND cancelled_at IS NULL AND expires_at > $3 AND EXISTS (SELECT 1 FROM e))`,
		edge, clamp(cmd), now.UTC(), ledger.StatusActive, int64(min(cmd, maxRaise)))
	if err == nil {
		_, err = pgx.ForEachRow(rows, []any{&active, &pending}, func() error { return nil })
	}
	if err != nil {
		return false, false, fmt.Errorf("note the hello of edge %q: %w", edge, err)
	}
	return active, pending, nil
}

// NoteAccepted records that edge's gate accepted its command seq of kind,
// as the edge's own ledger says: an ota.command_accepted event of device
// _edge in the edge's signed stream, folded in the transaction tx that
// commits it (cloud/rollout.Projection). The event is signed by the edge
// and committed, so it is as good as a hello's cmd, and it comes without
// waiting for the edge's next hello: a connected edge is not sent again
// what it accepted.
//
// It acknowledges only the command it names: edge's seq, of that kind,
// that was published (delivered_at; a command never handed out cannot
// have been accepted). It sets acked_at on that one alone (unlike a
// hello's cmd, it says nothing of the seqs below), and raises where the
// next push starts (LastHello) to seq, never lowers it: the edge's
// accepted seq only grows, and the hello, the edge's latest word, may set
// it lower again (a reset edge). A seq never given, another edge's, or of
// another kind changes nothing. When digest is given (the SHA-256 of the
// signed command the edge accepted, which an edge since this field says;
// nil for the events before it) the command's signed bytes must have it:
// an acceptance then names exactly one command, not whatever holds its
// seq now (a database restored from an older backup reissues seqs). It
// reports whether it named such a command.
//
// It never waits for a row another transaction holds (SKIP LOCKED: a
// rollout's transaction enqueueing or cancelling for the edge): the
// commit must not stall behind the command tables, and an acknowledgement
// skipped so comes with the next hello, as before.
func NoteAccepted(ctx context.Context, tx pgx.Tx, edge string, seq uint64, kind string, digest []byte) (bool, error) {
	// A kind that is no command kind names none, and must not reach
	// Postgres: a NUL in it is an error that rolls back the commit it is
	// folded in (every edge's records in it, on every retry).
	if seq == 0 || seq > 1<<63-1 || CheckKind(kind) != nil || digest != nil && len(digest) != sha256.Size {
		return false, nil
	}
	var named bool
	err := tx.QueryRow(ctx, `WITH c AS (
			SELECT edge, seq, acked_at FROM edge_commands
			WHERE edge = $1 AND seq = $2 AND kind = $3 AND delivered_at IS NOT NULL
				AND ($4::bytea IS NULL OR sha256(signed) = $4::bytea)
			FOR UPDATE SKIP LOCKED
		), a AS (
			UPDATE edge_commands SET acked_at = now()
			WHERE edge = $1 AND seq = $2 AND EXISTS (SELECT 1 FROM c WHERE acked_at IS NULL)
		), s AS (
			UPDATE edge_command_seqs SET acked = $2
			WHERE edge = (SELECT edge FROM edge_command_seqs
				WHERE edge = $1 AND acked < $2 AND EXISTS (SELECT 1 FROM c) FOR UPDATE SKIP LOCKED)
		)
		SELECT EXISTS (SELECT 1 FROM c)`, edge, int64(seq), kind, digest).Scan(&named)
	if err != nil {
		return false, fmt.Errorf("note edge %q accepted command %d: %w", edge, seq, err)
	}
	return named, nil
}

// LastHello returns where a push to edge starts: the cmd of its last
// hello (NoteHello), or the seq of a command its ledger said it accepted
// since (NoteAccepted) when that is higher; 0 when it said none or has no
// commands.
func LastHello(ctx context.Context, q Querier, edge string) (uint64, error) {
	rows, err := q.Query(ctx, `SELECT acked FROM edge_command_seqs WHERE edge = $1`, edge)
	if err != nil {
		return 0, fmt.Errorf("last hello of edge %q: %w", edge, err)
	}
	acked, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("last hello of edge %q: %w", edge, err)
	}
	return uint64(acked), nil
}

// Take hands out, in seq order, every command of edge with seq > after
// that is neither cancelled nor expired at now, marking each delivered (the
// first time) before the caller publishes it; nothing when edge is not
// active (revoked since its hello: through an external broker it may
// still be subscribed). The caller publishes them in
// that order and stops at the first that fails: the edge accepts only a
// seq above the last it accepted, so a later one arriving first would make
// it drop the earlier ones. after must be a cmd the edge said (a hello's,
// or LastHello): see Deliverer.burst for why bursts then need no lock.
// q must give each statement its own snapshot (a pool, or a transaction
// at read committed).
func Take(ctx context.Context, q Querier, edge string, after uint64, now time.Time) ([]Pending, error) {
	// First mark what was never handed out. Only those rows are written
	// (a hello in a loop, or a push repeating what the edge has not
	// acknowledged, rewrites nothing), and the UPDATE waits for a Take or
	// a CancelRef in flight on them and checks them again after it.
	rows, err := q.Query(ctx, `UPDATE edge_commands SET delivered_at = now()
		WHERE edge = $1 AND seq > $2 AND cancelled_at IS NULL AND expires_at > $3 AND delivered_at IS NULL
			AND EXISTS (SELECT 1 FROM edges WHERE id = $1 AND status = $4)`, edge, clamp(after), now.UTC(), ledger.StatusActive)
	if err == nil {
		rows.Close()
		err = rows.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("take commands of edge %q: %w", edge, err)
	}
	// Then hand out, from a snapshot taken after the marks (ours and any
	// another Take made first), everything marked. A command committed
	// since the UPDATE and not marked yet is not handed out: it has a seq
	// above every one that is (seqs commit in order), so the burst has no
	// gap, and a later Take sends it. Every command handed out was marked
	// before this snapshot, so a CancelRef after it reports it as
	// possibly received, and one before it is not handed out.
	rows, err = q.Query(ctx, `SELECT seq, signed FROM edge_commands
		WHERE edge = $1 AND seq > $2 AND cancelled_at IS NULL AND expires_at > $3 AND delivered_at IS NOT NULL
			AND EXISTS (SELECT 1 FROM edges WHERE id = $1 AND status = $4)
		ORDER BY seq`, edge, clamp(after), now.UTC(), ledger.StatusActive)
	if err != nil {
		return nil, fmt.Errorf("take commands of edge %q: %w", edge, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Pending, error) {
		var p Pending
		var seq int64
		err := r.Scan(&seq, &p.Signed)
		p.Seq = uint64(seq)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("take commands of edge %q: %w", edge, err)
	}
	return out, nil
}

// maxRaise bounds how far a hello raises an edge's counter (NoteHello):
// far below bigint's limit, so an Enqueue for the edge always has room
// (one that failed would fail a rollout's whole transaction), and within
// the integers a JSON reader of the API holds exactly.
const maxRaise = 1 << 53

// clamp maps a seq an edge said onto bigint: no stored seq is above it.
func clamp(seq uint64) int64 { return int64(min(seq, 1<<63-1)) }

// States of a command, as View shows them.
const (
	StatePending      = "pending"      // kept, not sent yet
	StateDelivered    = "delivered"    // published at least once, not acknowledged yet
	StateAcknowledged = "acknowledged" // a hello of the edge, or its ledger (ota.command_accepted), said it accepted it
	StateCancelled    = "cancelled"    // withdrawn before the edge acknowledged it: never sent again
	StateExpired      = "expired"      // past its expiry unacknowledged: never sent again
)

// State is where the command stands at now.
func (s Status) State(now time.Time) string {
	switch {
	case s.AckedAt != nil:
		return StateAcknowledged
	case s.CancelledAt != nil:
		return StateCancelled
	case !s.Expires.After(now):
		return StateExpired
	case s.DeliveredAt != nil:
		return StateDelivered
	}
	return StatePending
}

// View is a command as the API (GET /v1/edges/{id}/commands) and the CLI
// (cloud commands list --json) show it: the body as JSON when it is JSON
// (the ota.* bodies are), else as base64 in body_base64.
type View struct {
	Seq         uint64          `json:"seq"`
	Kind        string          `json:"kind"`
	Ref         string          `json:"ref,omitempty"`
	State       string          `json:"state"`
	Body        json.RawMessage `json:"body,omitempty"`
	BodyBase64  []byte          `json:"body_base64,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	ExpiresAt   time.Time       `json:"expires_at"`
	DeliveredAt *time.Time      `json:"delivered_at,omitempty"`
	AckedAt     *time.Time      `json:"acked_at,omitempty"`
	CancelledAt *time.Time      `json:"cancelled_at,omitempty"`
}

// Views is List's answer for an edge as the API and the CLI show it.
type Views struct {
	Edge     string `json:"edge"`
	Commands []View `json:"commands"`
}

// ViewOf is s as View shows it at now.
func ViewOf(s Status, now time.Time) View {
	utc := func(t *time.Time) *time.Time {
		if t == nil {
			return nil
		}
		u := t.UTC()
		return &u
	}
	v := View{Seq: s.Seq, Kind: s.Kind, Ref: s.Ref, State: s.State(now), CreatedAt: s.CreatedAt.UTC(), ExpiresAt: s.Expires.UTC(),
		DeliveredAt: utc(s.DeliveredAt), AckedAt: utc(s.AckedAt), CancelledAt: utc(s.CancelledAt)}
	if len(s.Body) > 0 {
		if json.Valid(s.Body) {
			v.Body = json.RawMessage(s.Body)
		} else {
			v.BodyBase64 = s.Body
		}
	}
	return v
}

// ViewsOf is edge's commands as Views at now.
func ViewsOf(edge string, st []Status, now time.Time) Views {
	out := Views{Edge: edge, Commands: make([]View, 0, len(st))}
	for _, s := range st {
		out.Commands = append(out.Commands, ViewOf(s, now))
	}
	return out
}
