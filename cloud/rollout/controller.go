package rollout

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/protocol"
)

// DefaultTick is how often a Controller looks at the running rollouts.
const DefaultTick = 5 * time.Second

// lockRolloutClass is the first key of the transaction advisory lock
// under which rollouts are planned ("rout").
const lockRolloutClass int32 = 0x726f7574

// TargetsFunc returns the published TUF targets (name -> custom metadata),
// cloud/release.Repo.Status's Targets.
type TargetsFunc func(ctx context.Context) (map[string]firmware.Custom, error)

// Controller drives the running rollouts: it plans a new one (freezes its
// edges and stages), assigns the edges of the active stage inside their
// store's maintenance window, advances a stage once every edge of it has
// committed, completes the rollout after the last, and pauses it by
// itself when its failures exceed --max-failures.
//
// Every cloud replica runs one. Each rollout is worked on under its row
// lock (SELECT ... FOR UPDATE SKIP LOCKED: a replica skips a rollout
// another one is working on), and an assignment's command and row commit
// in that same transaction; Pause, Resume and Abort take the same lock. So
// two replicas never assign one edge twice, and a pause is never lost to a
// tick that read the rollout before it: the tick either ran before the
// pause took the lock (and the pause withdraws what it assigned), or after
// it (and sees the rollout paused).
type Controller struct {
	DB       ledger.DB
	Commands Commands
	Targets  TargetsFunc // nil: no release repository; rollouts wait
	Tick     time.Duration
	// MaxAssign bounds the assignments of one rollout per tick (default
	// DefaultMaxAssign), so that a large stage is assigned over a few
	// ticks in short transactions (Enqueue holds each edge's command
	// counter locked until the transaction ends).
	MaxAssign int
	Now       func() time.Time
	Logger    *slog.Logger

	stats struct{ steps, stepErrors, assigned, autoPauses, completed atomic.Uint64 }
}

// Stats are what a Controller has done since it was made.
type Stats struct {
	Steps      uint64 // Step calls
	StepErrors uint64 // of them, failed (retried next tick)
	Assigned   uint64 // ota.assign commands made
	AutoPauses uint64 // rollouts it paused for too many failures
	Completed  uint64 // rollouts it completed
}

// Stats returns the controller's counters.
func (c *Controller) Stats() Stats {
	return Stats{Steps: c.stats.steps.Load(), StepErrors: c.stats.stepErrors.Load(), Assigned: c.stats.assigned.Load(),
		AutoPauses: c.stats.autoPauses.Load(), Completed: c.stats.completed.Load()}
}

// DefaultMaxAssign is Controller.MaxAssign's default.
const DefaultMaxAssign = 500

func (c *Controller) defaults() {
	if c.Tick <= 0 {
		c.Tick = DefaultTick
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxAssign <= 0 {
		c.MaxAssign = DefaultMaxAssign
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Run steps every Tick until ctx ends. A failed step is logged and tried
// again on the next tick.
func (c *Controller) Run(ctx context.Context) error {
	c.defaults()
	t := time.NewTicker(c.Tick)
	defer t.Stop()
	for {
		if err := c.Step(ctx); err != nil && ctx.Err() == nil {
			c.Logger.Warn("rollout controller step failed; retrying next tick", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Step works once on every running rollout.
func (c *Controller) Step(ctx context.Context) error {
	c.defaults()
	c.stats.steps.Add(1)
	err := c.stepAll(ctx)
	if err != nil {
		c.stats.stepErrors.Add(1)
	}
	return err
}

func (c *Controller) stepAll(ctx context.Context) error {
	rows, err := c.DB.Query(ctx, `SELECT id FROM rollouts WHERE state = 'running' ORDER BY created_at, id`)
	if err != nil {
		return fmt.Errorf("rollouts: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("rollouts: %w", err)
	}
	var errs []error
	for _, id := range ids {
		if err := c.step(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("rollout %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (c *Controller) step(ctx context.Context, id string) error {
	var done tickResult
	err := pgx.BeginFunc(ctx, c.DB, func(tx pgx.Tx) error {
		r, err := lockRow(ctx, tx, id, true)
		if err != nil || r == nil || r.State != StateRunning {
			return err // another replica has it, or it is no longer running
		}
		if !r.Planned {
			if c.Targets == nil {
				return setReason(ctx, tx, r, "waiting: this cloud has no release repository (cloud serve --release-dir) to read the release's targets from")
			}
			targets, err := c.Targets(ctx)
			if err != nil {
				return setReason(ctx, tx, r, "waiting: cannot read the release repository: "+err.Error())
			}
			if done, err := c.plan(ctx, tx, r, targets); err != nil || done {
				return err
			}
		}
		return c.advance(ctx, tx, r, &done)
	})
	if err == nil { // counted once committed
		c.stats.assigned.Add(done.assigned)
		c.stats.autoPauses.Add(done.autoPauses)
		c.stats.completed.Add(done.completed)
	}
	return err
}

// tickResult is what one rollout's tick did, counted once it committed.
type tickResult struct{ assigned, autoPauses, completed uint64 }

func setReason(ctx context.Context, tx pgx.Tx, r *row, reason string) error {
	if r.Reason == reason {
		return nil
	}
	_, err := tx.Exec(ctx, `UPDATE rollouts SET reason = $2, updated_at = now() WHERE id = $1`, r.ID, reason)
	r.Reason = reason
	return err
}

// member is an edge of the target set as planned.
type member struct {
	edge, arch, target, zone string
	key                      [32]byte
}

// plan freezes r's edges and stages. done: the rollout is over (or waits)
// without anything to assign this tick.
func (c *Controller) plan(ctx context.Context, tx pgx.Tx, r *row, targets map[string]firmware.Custom) (done bool, err error) {
	p, err := r.Spec.check()
	if err != nil {
		return true, setReason(ctx, tx, r, "waiting: "+err.Error())
	}
	// The release's targets, by arch ("" for a target of any arch).
	byArch := map[string]string{}
	var names []string
	for name, cu := range targets {
		if cu.Version == r.Release && cu.Channel == r.Channel {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		a := targets[n].Arch
		if _, ok := byArch[a]; !ok {
			byArch[a] = n
		}
	}
	if len(byArch) == 0 {
		return true, setReason(ctx, tx, r, fmt.Sprintf("waiting: release %s of channel %s has no signed target in the repository (cloud release publish it first)", r.Release, r.Channel))
	}
	// Rollouts plan one at a time (a transaction lock, whichever replica),
	// so that two cannot both take an edge: an edge is in at most one
	// running or paused rollout.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext('rollout plan'))`, lockRolloutClass); err != nil {
		return true, err
	}
	q := `SELECT e.id, coalesce(e.agent, ''), coalesce(s.time_zone, ''),
			coalesce((SELECT min(o.id) FROM rollout_edges oe JOIN rollouts o ON o.id = oe.rollout
				WHERE oe.edge = e.id AND o.id <> $2 AND o.state IN ('running', 'paused')), '')
		FROM edges e LEFT JOIN stores s ON s.id = e.store
		WHERE e.status = 'active' AND ($1 = '' OR e.tenant = $1)`
	args := []any{r.Tenant, r.ID}
	switch p.toKind {
	case "tag":
		q += ` AND EXISTS (SELECT 1 FROM edge_tags t WHERE t.edge = e.id AND t.tag = $3)`
		args = append(args, p.toArgs[0])
	case "stores":
		q += ` AND e.store = ANY($3::text[])`
		args = append(args, p.toArgs)
	}
	rows, err := tx.Query(ctx, q+` ORDER BY e.id`, args...)
	if err != nil {
		return true, err
	}
	type cand struct{ ID, Agent, Zone, Other string }
	cands, err := pgx.CollectRows(rows, pgx.RowToStructByPos[cand])
	if err != nil {
		return true, err
	}
	var ms []member
	skipped := map[string]int{}
	for _, cd := range cands {
		version, arch, ok := ParseAgent(cd.Agent)
		switch {
		case cd.Other != "":
			skipped["in an unfinished rollout (finish or abort it first)"]++
			continue
		case !ok:
			skipped["no hello naming its software yet"]++
			continue
		case version == r.Release:
			skipped["already on "+r.Release]++
			continue
		}
		name, ok := targetFor(byArch, arch)
		if !ok {
			skipped["no target for "+arch]++
			continue
		}
		ms = append(ms, member{edge: cd.ID, arch: arch, target: name, zone: cd.Zone, key: sha256.Sum256([]byte(r.ID + "/" + cd.ID))})
	}
	// A deterministic order that spreads the first stages over stores
	// and tenants rather than taking the lowest edge ids.
	sort.Slice(ms, func(i, j int) bool { return string(ms[i].key[:]) < string(ms[j].key[:]) })
	b := &pgx.Batch{}
	prev := 0
	for si, sz := range p.stages {
		upto := sz.of(len(ms))
		if si == len(p.stages)-1 {
			upto = len(ms) // the last stage takes every edge left
		}
		upto = max(upto, prev)
		for i := prev; i < upto; i++ {
			m := ms[i]
			b.Queue(`INSERT INTO rollout_edges (rollout, edge, stage, ord, arch, target, zone) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				r.ID, m.edge, si, i, m.arch, m.target, m.zone)
		}
		prev = upto
	}
	var why []string
	n := 0
	for w, k := range skipped {
		why = append(why, fmt.Sprintf("%d %s", k, w))
		n += k
	}
	sort.Strings(why)
	tj, _ := json.Marshal(byArch)
	reason := fmt.Sprintf("planned: %d edges in %d stages", len(ms), len(p.stages))
	state := StateRunning
	if len(ms) == 0 {
		state, reason = StateCompleted, "completed: no edge of the target set can take it"
		if n > 0 {
			reason += " (" + strings.Join(why, "; ") + ")"
		}
	}
	b.Queue(`UPDATE rollouts SET planned_at = now(), targets = $2, skipped = $3, skipped_why = $4, state = $5, reason = $6, stage = 0, updated_at = now()
		WHERE id = $1`, r.ID, tj, n, strings.Join(why, "; "), state, reason)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return true, err
	}
	r.Planned, r.State, r.Reason, r.Stage = true, state, reason, 0
	c.Logger.Info("rollout planned", "rollout", r.ID, "release", r.Release, "edges", len(ms), "skipped", n)
	return state != StateRunning, nil
}

// targetFor picks the target for an edge of arch: one signed for that
// arch, else one signed for any arch.
func targetFor(byArch map[string]string, arch string) (string, bool) {
	var archs []string
	for a := range byArch {
		archs = append(archs, a)
	}
	sort.Strings(archs)
	for _, a := range archs {
		if a != "" && SameArch(a, arch) {
			return byArch[a], true
		}
	}
	n, ok := byArch[""]
	return n, ok
}

// SameArch compares GOOS/GOARCH, and the variant (arm's v7) only when both
// name one (firmware's rule: a running binary knows its GOARCH but not
// always its GOARM).
func SameArch(target, running string) bool {
	t, r := strings.Split(target, "/"), strings.Split(running, "/")
	if len(t) < 2 || len(r) < 2 || t[0] != r[0] || t[1] != r[1] {
		return false
	}
	return len(t) < 3 || len(r) < 3 || t[2] == r[2]
}

// ParseAgent reads a hello's agent field, "outpost-edge/VERSION
// (GOOS/GOARCH[/vN])": the version and the arch. It is the edge's own
// word, used to pick the artifact to assign; the edge checks the signed
// target's arch itself before it installs.
func ParseAgent(agent string) (version, arch string, ok bool) {
	rest, ok := strings.CutPrefix(agent, "outpost-edge/")
	if !ok {
		return "", "", false
	}
	version, rest, ok = strings.Cut(rest, " (")
	if !ok || version == "" {
		return "", "", false
	}
	arch, _, ok = strings.Cut(rest, ")")
	if !ok || strings.Count(arch, "/") < 1 || strings.ContainsAny(arch, " ") {
		return "", "", false
	}
	return version, arch, true
}

// advance pauses r on too many failures, moves its active stage on while
// every edge of it has committed, and assigns the active stage's edges
// whose window is open.
func (c *Controller) advance(ctx context.Context, tx pgx.Tx, r *row, done *tickResult) error {
	now := c.Now()
	vs, err := readViews(ctx, tx, r)
	if err != nil {
		return err
	}
	t, err := count(r, vs, now)
	if err != nil {
		return err
	}
	if t.exceeded() {
		reason := t.pauseReason(r)
		c.Logger.Warn("rollout paused by itself", "rollout", r.ID, "reason", reason)
		if err := withdraw(ctx, tx, c.Commands, r, StatePaused, reason, now); err != nil {
			return err
		}
		done.autoPauses++
		return nil
	}
	stage := r.Stage
	for stage < len(t.stageDone) && t.stageDone[stage] {
		stage++
	}
	if stage >= len(t.stageDone) {
		_, err := tx.Exec(ctx, `UPDATE rollouts SET state = 'completed', stage = $2, reason = $3, updated_at = now() WHERE id = $1`,
			r.ID, len(t.stageDone)-1, fmt.Sprintf("completed: %d edges committed %s", t.total, r.Release))
		c.Logger.Info("rollout completed", "rollout", r.ID)
		done.completed++
		return err
	}
	// Assign the pending edges of the stages up to the active one (those
	// of earlier stages are edges a resume gave back), in edge id order
	// (Enqueue's lock order).
	var todo []int
	for i := range vs {
		if vs[i].Row == "pending" && vs[i].Stage <= stage {
			todo = append(todo, i)
		}
	}
	sort.Slice(todo, func(a, b int) bool { return vs[todo[a]].Edge < vs[todo[b]].Edge })
	waiting, made, deferred := 0, 0, 0
	for _, i := range todo {
		v := &vs[i]
		loc := zoneOf(v.Zone)
		if !inWindow(r.Window, now, loc) {
			waiting++
			continue
		}
		if made == c.MaxAssign {
			deferred++ // the next tick
			continue
		}
		made++
		notAfter := now.Add(r.Expires)
		body := protocol.EncodeAssignment(protocol.Assignment{Rollout: r.ID, Channel: r.Channel, Target: v.Target, Version: r.Release,
			NotAfter: notAfter.UnixMilli(), Window: r.Window, Zone: loc.String()})
		seq, err := c.Commands.Enqueue(ctx, tx, v.Edge, protocol.CommandAssign, r.ID, body, notAfter)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE rollout_edges SET state = 'assigned', seq = $3, assigned_at = now()
			WHERE rollout = $1 AND edge = $2 AND state = 'pending'`, r.ID, v.Edge, int64(seq)); err != nil {
			return err
		}
		done.assigned++
		c.Logger.Debug("rollout assigned", "rollout", r.ID, "edge", v.Edge, "stage", v.Stage, "seq", seq, "target", v.Target)
	}
	if made > 0 {
		c.Logger.Info("rollout assigned edges", "rollout", r.ID, "stage", stage, "assigned", made, "waiting_for_window", waiting, "next_tick", deferred)
	}
	s := t.stages[stage]
	reason := fmt.Sprintf("stage %d of %d: %d of %d edges committed, %s", stage+1, len(t.stages), s.Committed, s.Edges, t.failureText())
	if t.failures == 0 {
		reason = fmt.Sprintf("stage %d of %d: %d of %d edges committed", stage+1, len(t.stages), s.Committed, s.Edges)
	}
	if waiting > 0 {
		reason += fmt.Sprintf("; %d waiting for their window %s", waiting, r.Window)
	}
	if deferred > 0 {
		reason += fmt.Sprintf("; %d more to assign on the next ticks", deferred)
	}
	if stage != r.Stage || reason != r.Reason {
		if _, err := tx.Exec(ctx, `UPDATE rollouts SET stage = $2, reason = $3, updated_at = now() WHERE id = $1`, r.ID, stage, reason); err != nil {
			return err
		}
	}
	return nil
}
