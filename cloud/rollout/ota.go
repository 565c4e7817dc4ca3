package rollout

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// Projection folds the ota.* records of device _edge into ota_edge_state
// and ota_edge_versions (migration 0013), inside every commit transaction
// (a ledger.Projection). It is a plain table projection rather than a tail
// behind a checkpoint: OTA events are a handful per install, so the cost in
// a commit is nothing for batches without them (one pass over the batch in
// memory) and two small upserts for those with them, and the rollout
// controller reads state that is exactly as committed, with no lag.
//
// Every upsert keeps the row of the highest ledger position, so rows do
// not depend on the order in which concurrent commits of different edges
// apply it: it is not a ledger.OrderedProjection, and needs no lock.
type Projection struct{}

var _ ledger.Projection = Projection{}

// otaBody is the body of an edge's ota.* event (cmd/edge/otaevents.go).
// Unknown fields are ignored (decodeOTABody): a later edge may say more.
type otaBody struct {
	Version string `json:"version" cbor:"version"`
	Release uint64 `json:"release" cbor:"release"`
	Target  string `json:"target,omitempty" cbor:"target,omitempty"`
	Reason  string `json:"reason,omitempty" cbor:"reason,omitempty"`
	// Command is an ota.command_accepted's hex SHA-256 of the signed
	// command it accepted (edge/ota.CommandGate); "" in the events of
	// edges before it.
	Command string `json:"command,omitempty" cbor:"command,omitempty"`
}

// otaBodyFields are the body fields the fold reads (otaBody's).
var otaBodyFields = map[string]bool{"version": true, "release": true, "target": true, "reason": true, "command": true}

// decodeOTABody decodes an ota.* body by the fields the fold knows,
// ignoring the others: protocol's body decoder refuses unknown fields,
// and an edge newer than the cloud that says one more thing must not have
// all its ota.* events dropped (never seen to accept, install or commit).
// A known field of the wrong type, or a body that does not decode, is a
// broken body (false).
func decodeOTABody(body protocol.Body) (otaBody, bool) {
	var b otaBody
	if len(body) == 0 {
		return b, true
	}
	if err := body.Decode(&b); err == nil {
		return b, true
	}
	var m map[string]any
	if err := body.Decode(&m); err != nil {
		return b, false
	}
	for k := range m {
		if !otaBodyFields[k] {
			delete(m, k)
		}
	}
	known, err := protocol.NewBody(m)
	if err != nil || known.Decode(&b) != nil {
		return otaBody{}, false
	}
	return b, true
}

// edgeRow is a row of ota_edge_state.
type edgeRow struct {
	Edge        string
	AcceptedSeq uint64
	AcceptedPos int64
	LastKind    string
	LastAt      time.Time
	LastPos     int64
}

// versionRow is a row of ota_edge_versions.
type versionRow struct {
	Edge, Version, Target, Kind string
	Release                     uint64
	Reason                      string
	Seq                         uint64 // the assignment the event's id names; 0 none
	At                          time.Time
	Pos                         int64
}

type versionKey struct{ edge, version, target string }

// otaFold is the state of the fold: the rows as they are after the
// records given to it.
type otaFold struct {
	edges    map[string]*edgeRow
	versions map[versionKey]*versionRow
	acks     []ack // the commands the edges' gates accepted, in fold order
}

// ack is an edge's ota.command_accepted: the command it names.
type ack struct {
	edge   string
	seq    uint64
	kind   string
	digest []byte // the signed command's SHA-256; nil when the event does not say
}

func newFold() *otaFold {
	return &otaFold{edges: map[string]*edgeRow{}, versions: map[versionKey]*versionRow{}}
}

// Bounds of what the fold keeps of an edge's own text.
const (
	maxVersionBytes = 64
	maxTargetBytes  = 255
	maxReasonBytes  = 512
)

// add folds one committed record. Records not of device _edge, not of
// type ota.*, or with a body that does not decode are left out: a device
// cannot speak for the updater, and a broken body says nothing.
func (f *otaFold) add(edge string, pos int64, at time.Time, rec protocol.Record) {
	if rec.Device != protocol.EdgeDevice || !strings.HasPrefix(rec.Type, "ota.") {
		return
	}
	b, ok := decodeOTABody(protocol.Body(rec.Body))
	if !ok {
		return
	}
	kind := strings.TrimPrefix(rec.Type, "ota.")
	if kind == "command_refused" {
		// The gate's answer to whatever arrived on the edge's cmd topic,
		// which anyone on the broker can publish to: not a sign of life of
		// the updater (it would keep a stuck edge from ever going silent),
		// and its target is the command's kind, not a release.
		return
	}
	e := f.edges[edge]
	if e == nil {
		e = &edgeRow{Edge: edge}
		f.edges[edge] = e
	}
	if pos > e.LastPos {
		e.LastKind, e.LastAt, e.LastPos = kind, at, pos
	}
	if kind == "command_accepted" {
		// reason "command N" names the seq the edge's gate accepted, target
		// its kind, and the id is "cmd-N-accepted" (edge/ota.CommandGate).
		// Where all three agree it acknowledges that command, of the
		// edge whose stream it is in (command.NoteAccepted, in Apply).
		// When it says which command it accepted (the digest of its signed
		// bytes), that command only: one that does not say it right names
		// none.
		if seq, ok := acceptedSeq(rec.ID, b.Reason); ok && b.Target != "" {
			if digest, ok := commandDigest(b.Command); ok {
				f.acks = append(f.acks, ack{edge: edge, seq: seq, kind: b.Target, digest: digest})
			}
		}
		// Only an assignment's counts for the rollout: an edge back after
		// a pause accepts the ota.cancel, whose seq passes the withdrawn
		// assignment's, and that is no acceptance of the assignment.
		if b.Target != "" && b.Target != protocol.CommandAssign {
			return
		}
		if n, ok := strings.CutPrefix(b.Reason, "command "); ok {
			// The highest seq, first accepted at the lowest position: a
			// rule that does not depend on the order of folding.
			if seq, err := strconv.ParseUint(n, 10, 64); err == nil && seq > 0 &&
				(seq > e.AcceptedSeq || seq == e.AcceptedSeq && pos < e.AcceptedPos) {
				e.AcceptedSeq, e.AcceptedPos = seq, pos
			}
		}
		return
	}
	// printable, not just clipped: a NUL is valid UTF-8 that a text
	// column refuses, and the error would roll back the whole commit (every
	// edge's records in it), again on every retry.
	k := versionKey{edge, printable(b.Version, maxVersionBytes), printable(b.Target, maxTargetBytes)}
	if k.version == "" && k.target == "" {
		return
	}
	v := f.versions[k]
	if v == nil || pos > v.Pos {
		f.versions[k] = &versionRow{Edge: edge, Version: k.version, Target: k.target, Kind: kind,
			Release: b.Release, Reason: printable(b.Reason, maxReasonBytes), Seq: assignSeq(rec.ID), At: at, Pos: pos}
	}
}

// acceptedSeq is the seq an ota.command_accepted names when its id
// ("cmd-N-accepted") and its reason ("command N") name the same one.
func acceptedSeq(id, reason string) (uint64, bool) {
	n, ok := strings.CutPrefix(reason, "command ")
	if !ok || id != "cmd-"+n+"-accepted" {
		return 0, false
	}
	seq, err := strconv.ParseUint(n, 10, 64)
	if err != nil || seq == 0 || strconv.FormatUint(seq, 10) != n {
		return 0, false
	}
	return seq, true
}

// commandDigest is the digest an ota.command_accepted's command field
// gives: nil for none (events before it), false when it is not a hex
// SHA-256.
func commandDigest(s string) ([]byte, bool) {
	if s == "" {
		return nil, true
	}
	d, err := hex.DecodeString(s)
	if err != nil || len(d) != sha256.Size {
		return nil, false
	}
	return d, true
}

// assignSeq is the assignment seq an event id names: the edge's
// assignment events are "assign-N-<what>" (edge/ota); 0 for any other.
func assignSeq(id string) uint64 {
	rest, ok := strings.CutPrefix(id, "assign-")
	if !ok {
		return 0
	}
	n, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0
	}
	seq, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return 0
	}
	return seq
}

// printable is an edge's own text as the fold keeps it: every rune that is
// not printable becomes '?', cut to n bytes (ledger.CleanAgent's rule).
func printable(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > n {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Apply implements ledger.Projection.
func (Projection) Apply(ctx context.Context, tx pgx.Tx, recs []ledger.Committed) error {
	f := newFold()
	for _, c := range recs {
		f.add(c.Stream.Edge, c.Pos, c.CommittedAt, c.Record)
	}
	if len(f.edges) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	f.queue(b, "")
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("ota state projection: %w", err)
	}
	// The edges' acceptances acknowledge their commands in the same
	// transaction: committed with the event, or not at all. (A rebuild
	// folds the old events again and acknowledges nothing.)
	slices.SortFunc(f.acks, func(x, y ack) int { return cmp.Or(strings.Compare(x.edge, y.edge), cmp.Compare(x.seq, y.seq)) })
	for _, a := range f.acks {
		if _, err := command.NoteAccepted(ctx, tx, a.edge, a.seq, a.kind, a.digest); err != nil {
			return fmt.Errorf("ota state projection: %w", err)
		}
	}
	return nil
}

// queue queues the upserts of f's rows into the tables with suffix.
func (f *otaFold) queue(b *pgx.Batch, suffix string) {
	for _, e := range f.sortedEdges() {
		b.Queue(`INSERT INTO ota_edge_state`+suffix+` AS s (edge, accepted_seq, accepted_pos, last_kind, last_at, last_pos)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (edge) DO UPDATE SET
				accepted_seq = GREATEST(s.accepted_seq, excluded.accepted_seq),
				accepted_pos = CASE WHEN excluded.accepted_seq > s.accepted_seq
					OR excluded.accepted_seq = s.accepted_seq AND excluded.accepted_seq > 0 AND excluded.accepted_pos < s.accepted_pos
					THEN excluded.accepted_pos ELSE s.accepted_pos END,
				last_kind = CASE WHEN excluded.last_pos > s.last_pos THEN excluded.last_kind ELSE s.last_kind END,
				last_at = CASE WHEN excluded.last_pos > s.last_pos THEN excluded.last_at ELSE s.last_at END,
				last_pos = GREATEST(s.last_pos, excluded.last_pos)`,
			e.Edge, int64(e.AcceptedSeq), e.AcceptedPos, e.LastKind, e.LastAt, e.LastPos)
	}
	for _, v := range f.sortedVersions() {
		b.Queue(`INSERT INTO ota_edge_versions`+suffix+` AS v (edge, version, target, kind, release, reason, seq, at, pos)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (edge, version, target) DO UPDATE SET
				kind = excluded.kind, release = excluded.release, reason = excluded.reason, seq = excluded.seq,
				at = excluded.at, pos = excluded.pos
			WHERE excluded.pos > v.pos`,
			v.Edge, v.Version, v.Target, v.Kind, int64(v.Release), v.Reason, int64(v.Seq), v.At, v.Pos)
	}
}

// sortedEdges and sortedVersions give rows in key order, so that
// concurrent commits lock them in one order.
func (f *otaFold) sortedEdges() []*edgeRow {
	out := make([]*edgeRow, 0, len(f.edges))
	for _, e := range f.edges {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *edgeRow) int { return strings.Compare(a.Edge, b.Edge) })
	return out
}

func (f *otaFold) sortedVersions() []*versionRow {
	out := make([]*versionRow, 0, len(f.versions))
	for _, v := range f.versions {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b *versionRow) int {
		return cmp.Or(strings.Compare(a.Edge, b.Edge), strings.Compare(a.Version, b.Version), strings.Compare(a.Target, b.Target))
	})
	return out
}

// RebuildResult is what RebuildOTAState did.
type RebuildResult struct {
	Records int      // ota.* records of device _edge folded
	Diffs   []string // how the live rows differed from the rebuild, row by row; empty when equal
	Swapped bool
}

// RebuildOTAState folds every ota.* record of device _edge in the ledger
// again, in pos order, compares the result with the live rows and, with
// swap, replaces them. It locks both tables (EXCLUSIVE: reads go on,
// commits that carry ota.* records wait at their upsert) for its one
// transaction, so every commit is either in what it reads or applies its
// rows after it: a rebuild while ingest runs misses nothing.
func RebuildOTAState(ctx context.Context, db ledger.DB, swap bool) (RebuildResult, error) {
	var res RebuildResult
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE ota_edge_state, ota_edge_versions IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT edge, pos, committed_at, raw FROM ledger
			WHERE device = $1 AND type LIKE 'ota.%' ORDER BY pos`, protocol.EdgeDevice)
		if err != nil {
			return err
		}
		f := newFold()
		for rows.Next() {
			var edge string
			var pos int64
			var at time.Time
			var raw []byte
			if err := rows.Scan(&edge, &pos, &at, &raw); err != nil {
				return err
			}
			rec, err := protocol.DecodeRecord(raw)
			if err != nil {
				return fmt.Errorf("ledger position %d: %w", pos, err)
			}
			f.add(edge, pos, at, rec)
			res.Records++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		live, err := readFold(ctx, tx)
		if err != nil {
			return err
		}
		res.Diffs = diffFolds(live, f)
		if !swap || len(res.Diffs) == 0 {
			return nil
		}
		b := &pgx.Batch{}
		b.Queue(`DELETE FROM ota_edge_versions`)
		b.Queue(`DELETE FROM ota_edge_state`)
		f.queue(b, "")
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		res.Swapped = true
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("rebuild the ota state: %w", err)
	}
	return res, nil
}

// readFold reads the live rows.
func readFold(ctx context.Context, q ledger.Querier) (*otaFold, error) {
	f := newFold()
	rows, err := q.Query(ctx, `SELECT edge, accepted_seq, accepted_pos, last_kind, last_at, last_pos FROM ota_edge_state`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		e := &edgeRow{}
		var seq int64
		if err := rows.Scan(&e.Edge, &seq, &e.AcceptedPos, &e.LastKind, &e.LastAt, &e.LastPos); err != nil {
			return nil, err
		}
		e.AcceptedSeq = uint64(seq)
		f.edges[e.Edge] = e
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = q.Query(ctx, `SELECT edge, version, target, kind, release, reason, seq, at, pos FROM ota_edge_versions`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		v := &versionRow{}
		var rel, seq int64
		if err := rows.Scan(&v.Edge, &v.Version, &v.Target, &v.Kind, &rel, &v.Reason, &seq, &v.At, &v.Pos); err != nil {
			return nil, err
		}
		v.Release, v.Seq = uint64(rel), uint64(seq)
		f.versions[versionKey{v.Edge, v.Version, v.Target}] = v
	}
	return f, rows.Err()
}

// diffFolds says how live differs from want, row by row.
func diffFolds(live, want *otaFold) []string {
	var out []string
	for _, w := range want.sortedEdges() {
		l := live.edges[w.Edge]
		if l == nil {
			out = append(out, fmt.Sprintf("ota_edge_state %s: missing, want %+v", w.Edge, *w))
		} else if !l.LastAt.Equal(w.LastAt) || l.AcceptedSeq != w.AcceptedSeq || l.AcceptedPos != w.AcceptedPos || l.LastKind != w.LastKind || l.LastPos != w.LastPos {
			out = append(out, fmt.Sprintf("ota_edge_state %s: live %+v, rebuilt %+v", w.Edge, *l, *w))
		}
	}
	for _, l := range live.sortedEdges() {
		if want.edges[l.Edge] == nil {
			out = append(out, fmt.Sprintf("ota_edge_state %s: live %+v, not in the rebuild", l.Edge, *l))
		}
	}
	for _, w := range want.sortedVersions() {
		k := versionKey{w.Edge, w.Version, w.Target}
		l := live.versions[k]
		if l == nil {
			out = append(out, fmt.Sprintf("ota_edge_versions %v: missing, want %+v", k, *w))
		} else if !l.At.Equal(w.At) || l.Kind != w.Kind || l.Release != w.Release || l.Reason != w.Reason || l.Seq != w.Seq || l.Pos != w.Pos {
			out = append(out, fmt.Sprintf("ota_edge_versions %v: live %+v, rebuilt %+v", k, *l, *w))
		}
	}
	for _, l := range live.sortedVersions() {
		if want.versions[versionKey{l.Edge, l.Version, l.Target}] == nil {
			out = append(out, fmt.Sprintf("ota_edge_versions %s/%s/%s: live %+v, not in the rebuild", l.Edge, l.Version, l.Target, *l))
		}
	}
	return out
}
