package rollout_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// rig is a migrated database with a ledger that folds the OTA state
// projection in every commit, a cloud key for commands, and edges that
// commit their ota.* events through the real ledger.
type rig struct {
	tb     testing.TB
	url    string
	pool   *pgxpool.Pool
	l      *ledger.Ledger
	cmds   rollout.CommandQueue
	mu     sync.Mutex
	chains map[string]*protocoltest.Stream
	ts     time.Time
}

// targets is the repository the rig's controllers read: release 1.1.0 of
// channel stable for linux/amd64 and linux/arm64, and 1.2.0 for amd64.
var targets = map[string]firmware.Custom{
	"edge-1.1.0-linux-amd64": {Version: "1.1.0", Release: 11, Channel: "stable", Arch: "linux/amd64"},
	"edge-1.1.0-linux-arm64": {Version: "1.1.0", Release: 11, Channel: "stable", Arch: "linux/arm64"},
	"edge-1.2.0-linux-amd64": {Version: "1.2.0", Release: 12, Channel: "stable", Arch: "linux/amd64"},
	"edge-1.1.0-beta":        {Version: "1.1.0", Release: 11, Channel: "beta"},
}

func newRig(tb testing.TB) *rig {
	tb.Helper()
	url := ledgertest.URL(tb)
	r := &rig{tb: tb, url: url, pool: ledgertest.Pool(tb, url), chains: map[string]*protocoltest.Stream{},
		cmds: rollout.CommandQueue{Signer: protocoltest.NewSigner(tb)}, ts: time.Now().UTC().Add(-time.Hour)}
	r.l = ledger.New(r.pool, ledger.Options{Projections: []ledger.Projection{rollout.Projection{}}})
	r.exec(`INSERT INTO tenants (id, name) VALUES ('t1', 'Tenant one'), ('t2', 'Tenant two')`)
	r.exec(`INSERT INTO stores (tenant, id, name, time_zone, currency) VALUES
		('t1', 'tokyo', 'Tokyo', 'Asia/Tokyo', 'JPY'), ('t1', 'nyc', 'New York', 'America/New_York', 'USD'),
		('t2', 'berlin', 'Berlin', 'Europe/Berlin', 'EUR')`)
	return r
}

func (r *rig) exec(sql string, args ...any) {
	r.tb.Helper()
	if _, err := r.pool.Exec(context.Background(), sql, args...); err != nil {
		r.tb.Fatalf("%s: %v", sql, err)
	}
}

// edge registers edge id of tenant in store (may be "") whose hello said
// agent (may be "").
func (r *rig) edge(id, tenant, store, agent string) {
	r.tb.Helper()
	s := protocoltest.NewSigner(r.tb)
	if _, err := r.l.AddEdge(context.Background(), id, s.Public()); err != nil {
		r.tb.Fatal(err)
	}
	var st any
	if store != "" {
		st = store
	}
	var ag any
	if agent != "" {
		ag = agent
	}
	r.exec(`UPDATE edges SET tenant = $2, store = $3, agent = $4 WHERE id = $1`, id, tenant, st, ag)
	r.mu.Lock()
	r.chains[id] = protocoltest.NewStream(r.tb, id, s)
	r.mu.Unlock()
}

// edges registers n edges "<prefix>-NN" of tenant t1, without a store,
// running 1.0.0 on arch.
func (r *rig) edges(prefix string, n int, arch string) []string {
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%02d", prefix, i)
		r.edge(id, "t1", "", "outpost-edge/1.0.0 ("+arch+")")
		ids = append(ids, id)
	}
	return ids
}

// ota is one ota.* event of an edge's updater.
type ota struct {
	kind, version, target, reason string
	device                        string         // "" is protocol.EdgeDevice
	id                            string         // "" is "<kind>-<seq>"
	extra                         map[string]any // more body fields
}

// commit commits evs of edge through the ledger, as the edge's uplink
// would, in one segment.
func (r *rig) commit(edge string, evs ...ota) {
	r.tb.Helper()
	if err := r.tryCommit(edge, evs...); err != nil {
		r.tb.Fatal(err)
	}
}

// tryCommit is commit, returning what went wrong (for a goroutine).
func (r *rig) tryCommit(edge string, evs ...ota) error {
	r.mu.Lock()
	c := r.chains[edge]
	first := c.Last() + 1
	for _, e := range evs {
		body := map[string]any{"version": e.version, "release": 11}
		if e.target != "" {
			body["target"] = e.target
		}
		if e.reason != "" {
			body["reason"] = e.reason
		}
		for k, v := range e.extra {
			body[k] = v
		}
		b, err := protocol.NewBody(body)
		if err != nil {
			r.mu.Unlock()
			return err
		}
		dev := e.device
		if dev == "" {
			dev = protocol.EdgeDevice
		}
		r.ts = r.ts.Add(time.Millisecond)
		id := e.id
		if id == "" {
			id = fmt.Sprintf("%s-%d", e.kind, c.Last()+1)
		}
		c.AddEvent(dev, protocol.Event{ID: id, Type: "ota." + e.kind, TS: r.ts, Body: b})
	}
	seg := c.Segment(first, c.Last())
	r.mu.Unlock()
	out, err := r.l.Commit(context.Background(), []ledger.Input{{TopicEdge: edge, Segment: seg}})
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if out[0].Kind != ledger.KindCommitted {
		return fmt.Errorf("commit of %s: %v, not committed", edge, out[0])
	}
	return nil
}

// install commits the events of an assigned install of target that ends
// in last (committed, rolled_back, ...), after the command seq's
// acceptance.
func (r *rig) install(edge string, seq uint64, target, last, reason string) {
	r.tb.Helper()
	evs := []ota{{kind: "command_accepted", target: protocol.CommandAssign, reason: fmt.Sprintf("command %d", seq)}}
	switch last {
	case "accepted":
	case "refused":
		evs = append(evs, ota{kind: "refused", version: "1.1.0", target: target, reason: reason})
	default:
		evs = append(evs, ota{kind: "downloaded", version: "1.1.0", target: target},
			ota{kind: "verified", version: "1.1.0", target: target},
			ota{kind: "installed", version: "1.1.0", target: target})
		if last != "installed" {
			evs = append(evs, ota{kind: "started", version: "1.1.0"}, ota{kind: last, version: "1.1.0", reason: reason})
		}
	}
	r.commit(edge, evs...)
}

func (r *rig) controller(pool *pgxpool.Pool) *rollout.Controller {
	return &rollout.Controller{DB: pool, Commands: r.cmds,
		Targets: func(context.Context) (map[string]firmware.Custom, error) { return targets, nil }}
}

func (r *rig) create(spec rollout.Spec) string {
	r.tb.Helper()
	id, err := rollout.Create(context.Background(), r.pool, spec)
	if err != nil {
		r.tb.Fatal(err)
	}
	return id
}

func (r *rig) step(c *rollout.Controller) {
	r.tb.Helper()
	if err := c.Step(context.Background()); err != nil {
		r.tb.Fatal(err)
	}
}

func (r *rig) status(id string) rollout.Status {
	r.tb.Helper()
	return r.statusAt(id, time.Now())
}

// statusAt is the rollout's status as of now (silence is counted to it).
func (r *rig) statusAt(id string, now time.Time) rollout.Status {
	r.tb.Helper()
	s, err := rollout.Get(context.Background(), r.pool, id, now)
	if err != nil {
		r.tb.Fatal(err)
	}
	return s
}

// assigns returns edge's ota.assign commands (of any rollout).
func (r *rig) commands(edge, kind string) []command.Status {
	r.tb.Helper()
	cs, err := command.List(context.Background(), r.pool, edge)
	if err != nil {
		r.tb.Fatal(err)
	}
	var out []command.Status
	for _, c := range cs {
		if c.Kind == kind {
			out = append(out, c)
		}
	}
	return out
}

// edgeStates maps each edge of s to its state.
func edgeStates(s rollout.Status) map[string]rollout.EdgeStatus {
	m := map[string]rollout.EdgeStatus{}
	for _, e := range s.Edges {
		m[e.Edge] = e
	}
	return m
}

// assigned returns the edges of s with an assignment (not pending).
func assigned(s rollout.Status) []rollout.EdgeStatus {
	var out []rollout.EdgeStatus
	for _, e := range s.Edges {
		if e.State != rollout.EdgePending {
			out = append(out, e)
		}
	}
	return out
}
