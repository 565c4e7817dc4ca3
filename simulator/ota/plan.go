package ota

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/simulator/fleet"
)

// Plan is the scenario's rollouts over a running fleet whose edges run
// under `edge supervise` on V1, with the repository of Releases served by
// the cloud and --ota-repo given to every edge.
type Plan struct {
	Releases *Releases
	Rollouts *CLI
	Edges    []*fleet.Edge

	// Good is the rollout of V2: its stages (default "1,50%,100%").
	GoodStages string
	// BadStages and MaxFailures are the rollout of V3 (default: a first
	// stage of one edge more than are offline, then 50% and 100%; and
	// "1"). The rollout orders its edges its own way, so a first stage
	// that big always holds an online edge (which fails) and may hold
	// offline ones (whose assignments wait for them, and must be
	// withdrawn by the pause); the threshold is passed in that stage, so
	// the rollout pauses before the rest of the fleet has it.
	BadStages, MaxFailures string
	// Silence is both rollouts' --silence: an edge assigned and not heard
	// from for that long is a failure. Default 45s: a supervised edge's
	// events come 10 to 20 s apart while it installs and is on probation,
	// more under load, and a good edge taken for silent would pause the
	// good rollout.
	Silence time.Duration
	// Offline is the share of the edges offline during the bad rollout
	// (default 0.2, at least one edge).
	Offline float64
	// RollbackWithin bounds how long an edge may stay on V3 (default 60s).
	RollbackWithin time.Duration
	// Quiet is how long the offline edges are watched once they are back
	// online (default 20s: several rollout ticks and hellos).
	Quiet time.Duration
	// Timeout bounds each rollout (default 5m).
	Timeout time.Duration
	// Every is how often the rollout's progress line is printed when it
	// has not changed (default 5s; a change prints at once).
	Every time.Duration
	// Logf gets what happens.
	Logf func(format string, args ...any)
}

// Result is what the plan saw. Problems lists each check that failed.
type Result struct {
	Good, Bad *Rollout // the rollouts as last read
	GoodTime  Duration `json:"good_time_ms"` // from the create to every edge committed on V2
	// PausedAfter is from the bad rollout's create to its pause.
	PausedAfter Duration `json:"paused_after_ms"`
	Offline     []string `json:"offline"`
	// OfflineAssigned are the offline edges the bad rollout had assigned
	// 1.2.0 to when it paused (their commands waited for them).
	OfflineAssigned []string `json:"offline_assigned"`
	// TookBad are the edges that ran V3, and how long each did.
	TookBad  []EdgeBad `json:"took_bad"`
	Problems []string  `json:"problems"`
}

// EdgeBad is an edge that took the bad release.
type EdgeBad struct {
	Edge string `json:"edge"`
	// Seen is when it was first seen on V3 (current or on probation).
	Seen time.Time `json:"seen"`
	// Returned says it was back on V2, committed, with V3 pinned
	// known-bad; Back is how long after Seen.
	Returned bool     `json:"returned"`
	Back     Duration `json:"back_ms"`
	// Reason is why V3 was rolled back (the known-bad pin's reason).
	Reason string `json:"reason"`
}

// Duration is milliseconds in JSON.
type Duration time.Duration

// MarshalJSON writes milliseconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprint(time.Duration(d).Milliseconds())), nil
}

func (d Duration) String() string { return time.Duration(d).Round(100 * time.Millisecond).String() }

func (p *Plan) defaults() {
	if p.GoodStages == "" {
		p.GoodStages = "1,50%,100%"
	}
	if p.MaxFailures == "" {
		p.MaxFailures = "1"
	}
	if p.Silence <= 0 {
		p.Silence = 45 * time.Second
	}
	if p.Offline <= 0 {
		p.Offline = 0.2
	}
	if p.RollbackWithin <= 0 {
		p.RollbackWithin = 60 * time.Second
	}
	if p.Quiet <= 0 {
		p.Quiet = 20 * time.Second
	}
	if p.Timeout <= 0 {
		p.Timeout = 5 * time.Minute
	}
	if p.Every <= 0 {
		p.Every = 5 * time.Second
	}
	if p.Logf == nil {
		p.Logf = func(string, ...any) {}
	}
}

// Run runs the plan. The error is for a plan that could not be carried
// out (a command failed, ctx ended); checks that fail are Problems.
func (p *Plan) Run(ctx context.Context) (*Result, error) {
	p.defaults()
	res := &Result{}
	if err := p.good(ctx, res); err != nil || len(res.Problems) > 0 {
		return res, err
	}
	offline := p.pickOffline()
	for _, e := range offline {
		res.Offline = append(res.Offline, e.ID())
	}
	p.Logf("ota: taking %d of %d edges offline (their edge supervise stopped): %s", len(offline), len(p.Edges), strings.Join(res.Offline, ", "))
	var wg sync.WaitGroup
	for _, e := range offline {
		wg.Add(1)
		go func() { defer wg.Done(); e.Stop() }()
	}
	wg.Wait()
	if p.BadStages == "" {
		p.BadStages = fmt.Sprintf("%d,50%%,100%%", len(offline)+1)
	}
	if err := p.bad(ctx, res, offline); err != nil {
		// Bring them back all the same, so that the run can drain and
		// verify what their devices sent.
		for _, e := range offline {
			if !e.Proc.Running() {
				_ = e.Start(ctx)
			}
		}
		return res, err
	}
	return res, p.comeBack(ctx, res, offline)
}

func (p *Plan) problem(res *Result, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	res.Problems = append(res.Problems, msg)
	p.Logf("ota: PROBLEM: %s", msg)
}

// create creates a rollout to every edge.
func (p *Plan) create(ctx context.Context, version, stages, maxFailures string, more ...string) (string, error) {
	args := append([]string{"--release", version, "--channel", Channel, "--to", "all",
		"--stages", stages, "--max-failures", maxFailures, "--silence", p.Silence.String(), "--release-dir", p.Releases.RepoDir}, more...)
	id, err := p.Rollouts.Create(ctx, args...)
	if err != nil {
		return "", err
	}
	p.Logf("ota: cloud rollouts create --release %s --channel %s --to all --stages %s --max-failures %s --silence %s: %s",
		version, Channel, stages, maxFailures, p.Silence, id)
	return id, nil
}

// printer prints a rollout's progress line when it changes, and every
// Every when it does not.
type printer struct {
	p    *Plan
	last string
	at   time.Time
}

func (pr *printer) show(r *Rollout) {
	line := r.Line()
	if line != pr.last || time.Since(pr.at) >= pr.p.Every {
		pr.p.Logf("ota: %s", line)
		pr.last, pr.at = line, time.Now()
	}
}

// good rolls V2 out to every edge and checks that every edge ends on it,
// committed.
func (p *Plan) good(ctx context.Context, res *Result) error {
	t0 := time.Now()
	id, err := p.create(ctx, V2, p.GoodStages, "10%")
	if err != nil {
		return err
	}
	pr := &printer{p: p}
	deadline := t0.Add(p.Timeout)
	for {
		r, err := p.Rollouts.Status(ctx, id)
		if err != nil {
			return err
		}
		res.Good = r
		pr.show(r)
		if r.State == "completed" {
			break
		}
		if r.State == "paused" || r.State == "aborted" {
			p.problem(res, "the rollout of the good release %s is %s: %s", V2, r.State, r.Reason)
			return nil
		}
		if time.Now().After(deadline) {
			p.problem(res, "the rollout of the good release %s did not complete within %s: %s", V2, p.Timeout, r.Line())
			return nil
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	// The rollout counts an edge committed from its ota.committed event;
	// the edge's own files must say the same.
	var last string
	err = waitUntil(ctx, time.Minute, func() bool {
		last = ""
		for _, e := range p.Edges {
			st, err := p.state(ctx, e)
			if err != nil || st.Current != V2 || st.Committed != V2 || st.Pending != nil {
				last += fmt.Sprintf(" %s: current %q committed %q pending %v %v;", e.ID(), st.Current, st.Committed, st.Pending != nil, err)
			}
		}
		return last == ""
	})
	if err != nil {
		p.problem(res, "the rollout of %s completed, but not every edge is on it, committed:%s", V2, last)
		return nil
	}
	res.GoodTime = Duration(time.Since(t0))
	p.Logf("ota: every edge (%d) is on %s, committed, %s after the rollout was created", len(p.Edges), V2, res.GoodTime)
	return nil
}

// pickOffline picks the edges to take offline: Offline of them (at
// least one, never all), the last ones. Which of them the bad rollout
// assigns while they are away is steerID's business.
func (p *Plan) pickOffline() []*fleet.Edge {
	n := max(1, int(math.Round(p.Offline*float64(len(p.Edges)))))
	n = min(n, len(p.Edges)-1)
	return slices.Clone(p.Edges[len(p.Edges)-n:])
}

// state reads an edge's release state: from its status endpoint while
// the release serves, else from `edge ota status`.
func (p *Plan) state(ctx context.Context, e *fleet.Edge) (fleet.OTAStatus, error) {
	if st, err := e.State(ctx); err == nil && st.OTA != nil {
		return *st.OTA, nil
	}
	return e.OTA(ctx)
}

// bad rolls V3 out with the offline edges away: the rollout must pause by
// itself, and every edge that took V3 must be back on V2 within
// RollbackWithin.
func (p *Plan) bad(ctx context.Context, res *Result, offline []*fleet.Edge) error {
	t0 := time.Now()
	id, err := p.create(ctx, V3, p.BadStages, p.MaxFailures, "--id", steerID(p.Edges, offline))
	if err != nil {
		return err
	}
	online := slices.DeleteFunc(slices.Clone(p.Edges), func(e *fleet.Edge) bool { return slices.Contains(offline, e) })
	took := map[string]*EdgeBad{}
	late := map[string]bool{} // reported still on V3 past RollbackWithin
	pr := &printer{p: p}
	deadline := t0.Add(p.Timeout)
	var pausedAt time.Time
	for {
		r, err := p.Rollouts.Status(ctx, id)
		if err != nil {
			return err
		}
		res.Bad = r
		pr.show(r)
		now := time.Now()
		onBad := 0
		for _, e := range online {
			st, err := p.state(ctx, e)
			if err != nil {
				continue
			}
			v3 := st.Current == V3 || st.Pending != nil && st.Pending.Version == V3
			back := st.Current == V2 && st.Committed == V2 && st.Pending == nil && st.KnownBad[V3] != ""
			tb := took[e.ID()]
			switch {
			case !v3 && back && tb == nil:
				// Installed, failed and rolled back between two looks.
				took[e.ID()] = &EdgeBad{Edge: e.ID(), Seen: now, Returned: true, Reason: st.KnownBad[V3]}
				p.Logf("ota: edge %s took %s and was back on %s before the next look (within about a second): %s", e.ID(), V3, V2, st.KnownBad[V3])
			case v3 && tb == nil:
				took[e.ID()] = &EdgeBad{Edge: e.ID(), Seen: now}
				p.Logf("ota: edge %s took %s", e.ID(), V3)
				onBad++
			case v3:
				onBad++
				if now.Sub(tb.Seen) > p.RollbackWithin && !late[e.ID()] {
					late[e.ID()] = true
					p.problem(res, "edge %s still on %s %s after it took it", e.ID(), V3, now.Sub(tb.Seen).Round(time.Second))
				}
			case tb != nil && !tb.Returned && back:
				tb.Returned, tb.Back, tb.Reason = true, Duration(now.Sub(tb.Seen)), st.KnownBad[V3]
				p.Logf("ota: edge %s back on %s %s after it took %s: %s", e.ID(), V2, tb.Back, V3, tb.Reason)
			}
		}
		if r.State == "paused" && pausedAt.IsZero() {
			pausedAt = now
			res.PausedAfter = Duration(now.Sub(t0))
			p.Logf("ota: the rollout of %s paused by itself %s after it was created: %s", V3, res.PausedAfter, r.Reason)
		}
		if r.State == "completed" || r.State == "aborted" {
			p.problem(res, "the rollout of the bad release %s is %s, not paused: %s", V3, r.State, r.Line())
			break
		}
		// Done once it paused, no edge is on V3, and the paused rollout had
		// a few ticks to assign nothing more.
		if !pausedAt.IsZero() && onBad == 0 && now.Sub(pausedAt) > 10*time.Second {
			break
		}
		if now.After(deadline) {
			p.problem(res, "the rollout of the bad release %s did not pause with every edge back on %s within %s: %s", V3, V2, p.Timeout, r.Line())
			break
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	for _, tb := range took {
		res.TookBad = append(res.TookBad, *tb)
		if !tb.Returned {
			p.problem(res, "edge %s took %s and is not back on %s, committed", tb.Edge, V3, V2)
		} else if time.Duration(tb.Back) > p.RollbackWithin {
			p.problem(res, "edge %s was back on %s only %s after it took %s (want within %s)", tb.Edge, V2, tb.Back, V3, p.RollbackWithin)
		}
	}
	slices.SortFunc(res.TookBad, func(a, b EdgeBad) int { return strings.Compare(a.Edge, b.Edge) })
	if len(took) == 0 {
		p.problem(res, "no edge took the bad release %s: the rollout proved nothing", V3)
	}
	// The first stage passes the threshold by itself: the rollout must
	// stop there, before any later stage assigns the rest of the fleet.
	if r := res.Bad; r != nil && r.State == "paused" && r.Stage != 0 {
		p.problem(res, "the rollout of the bad release %s paused in stage %d, not in its first, which passed the threshold", V3, r.Stage+1)
	}
	if len(took) >= len(online) {
		p.problem(res, "every online edge (%d) took the bad release %s: the rollout did not stop before the fleet had it", len(online), V3)
	}
	return nil
}

// comeBack starts the offline edges again and checks that they install
// nothing from the paused rollout.
func (p *Plan) comeBack(ctx context.Context, res *Result, offline []*fleet.Edge) error {
	for _, e := range offline {
		if err := e.Start(ctx); err != nil {
			return fmt.Errorf("start edge %s again: %w", e.ID(), err)
		}
	}
	p.Logf("ota: the %d offline edges are back; watching them for %s", len(offline), p.Quiet)
	t0 := time.Now()
	for time.Since(t0) < p.Quiet {
		for _, e := range offline {
			st, err := p.state(ctx, e)
			if err != nil {
				continue
			}
			if st.Current != V2 || st.Pending != nil {
				p.problem(res, "edge %s, back online, is not on %s alone: current %s, pending %v", e.ID(), V2, st.Current, st.Pending)
				return nil
			}
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	if res.Bad != nil {
		r, err := p.Rollouts.Status(ctx, res.Bad.ID)
		if err != nil {
			return err
		}
		res.Bad = r
		p.Logf("ota: %s", r.Line())
		if r.State != "paused" {
			p.problem(res, "the rollout of %s is %s once the offline edges are back, not paused", V3, r.State)
		}
		for _, e := range offline {
			re := r.Edge(e.ID())
			if re.State != "" && re.State != "pending" {
				res.OfflineAssigned = append(res.OfflineAssigned, e.ID())
				state := re.State
				if re.Reason != "" {
					state += " (" + re.Reason + ")"
				}
				p.Logf("ota: edge %s was assigned %s while offline; the pause withdrew it, and in the paused rollout it is %s", e.ID(), V3, state)
			}
			switch s := re.State; s {
			case "", "pending", "assigned", "silent", "cancelled":
			default:
				p.problem(res, "edge %s, offline during the rollout of %s, is %s in it", e.ID(), V3, s)
			}
		}
	}
	p.Logf("ota: the offline edges are back on %s and installed nothing from the paused rollout", V2)
	return nil
}

// steerID picks the bad rollout's id so that an offline edge comes first
// in it. The controller orders a rollout's edges by sha256("<id>/<edge>")
// (cloud/rollout), so that its first stages spread over stores; with the
// id chosen this way the first stage holds an edge that is away, whose
// assignment waits in the cloud, and the pause has it to withdraw: that
// edge, back online, must install nothing. Should the controller order
// them otherwise, the scenario still runs, and the result says whether an
// offline edge was assigned (OfflineAssigned).
func steerID(edges, offline []*fleet.Edge) string {
	var salt [4]byte
	_, _ = rand.Read(salt[:]) // runs may share a database: ids must differ
	for n := 0; ; n++ {
		id := fmt.Sprintf("ota-bad-%x-%d", salt, n)
		var first *fleet.Edge
		var key [sha256.Size]byte
		for _, e := range edges {
			k := sha256.Sum256([]byte(id + "/" + e.ID()))
			if first == nil || bytes.Compare(k[:], key[:]) < 0 {
				first, key = e, k
			}
		}
		if slices.Contains(offline, first) || n == 1000 {
			return id
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitUntil polls cond every second until it holds or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	return nil
}
