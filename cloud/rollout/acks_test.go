package rollout_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// inbox is a command.Publisher playing an edge's cmd subscription: it
// keeps the seqs published to it, in order.
type inbox struct {
	keys protocol.Keys
	mu   sync.Mutex
	got  []uint64
}

func (in *inbox) PublishCommand(_ context.Context, edge string, signed []byte) error {
	c, err := protocol.VerifyCommand(signed, in.keys)
	if err != nil {
		return err
	}
	if c.Edge != edge {
		return fmt.Errorf("command for %s published to %s", c.Edge, edge)
	}
	in.mu.Lock()
	in.got = append(in.got, c.Seq)
	in.mu.Unlock()
	return nil
}

func (in *inbox) seqs() []uint64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.got)
}

// waitFor waits until seq has been published to in, and returns what was.
func (in *inbox) waitFor(tb testing.TB, seq uint64) []uint64 {
	tb.Helper()
	poll.For(tb, time.Minute, func() error {
		if got := in.seqs(); !slices.Contains(got, seq) {
			return fmt.Errorf("published %v, waiting for %d", got, seq)
		}
		return nil
	})
	return in.seqs()
}

func accepted(kind string, seq uint64) ota {
	return ota{kind: "command_accepted", target: kind, reason: fmt.Sprintf("command %d", seq), id: fmt.Sprintf("cmd-%d-accepted", seq)}
}

// TestLedgerAcceptanceStopsRedelivery: an edge that stays connected says
// no hello, so the cloud learned that it accepted a command only from its
// next one, and every push in between (a new command, a pause's
// ota.cancel) sent again what it had accepted. Its ota.command_accepted,
// signed by the edge and committed, now acknowledges the command it
// names: a push starts after it, a pause leaves the accepted assignment
// acknowledged (not cancelled) and sends one ota.cancel, and that cancel,
// once accepted, is not sent again with the next assignment.
func TestLedgerAcceptanceStopsRedelivery(t *testing.T) {
	ctx := t.Context()
	r := newRig(t)
	r.edges("e", 1, "linux/amd64")
	const edge = "e-00"
	d, err := command.NewDeliverer(command.DelivererOptions{DB: r.pool, PushDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	in := &inbox{keys: protocol.NewKeyMap(r.cmds.Signer.Public())}
	if err := d.Hello(ctx, edge, 0, in); err != nil { // connected, nothing accepted yet
		t.Fatal(err)
	}

	c := r.controller(r.pool)
	id := r.create(rollout.Spec{Release: "1.1.0", To: "all", Stages: "100%", MaxFailures: "1"})
	r.step(c)
	as := assigned(r.status(id))
	if len(as) != 1 {
		t.Fatalf("assigned %d, want 1", len(as))
	}
	assign := as[0].Seq
	in.waitFor(t, assign)
	r.commit(edge, accepted(protocol.CommandAssign, assign))
	if cs := r.commands(edge, protocol.CommandAssign); len(cs) != 1 || cs[0].State(time.Now()) != command.StateAcknowledged {
		t.Errorf("the assignment the edge's ledger says it accepted: %+v, want acknowledged", cs)
	}

	if err := rollout.Pause(ctx, r.pool, r.cmds, id, "op"); err != nil {
		t.Fatal(err)
	}
	cancels := r.commands(edge, protocol.CommandCancel)
	if len(cancels) != 1 {
		t.Fatalf("the pause enqueued %d ota.cancel, want 1", len(cancels))
	}
	if cs := r.commands(edge, protocol.CommandAssign); cs[0].State(time.Now()) != command.StateAcknowledged {
		t.Errorf("the accepted assignment after the pause: %s, want acknowledged (the edge holds it)", cs[0].State(time.Now()))
	}
	cancel := cancels[0].Seq
	before := len(in.waitFor(t, cancel))
	r.commit(edge, accepted(protocol.CommandCancel, cancel))

	if err := rollout.Resume(ctx, r.pool, id, "op", time.Now()); err != nil {
		t.Fatal(err)
	}
	r.step(c)
	var again uint64
	for _, c := range r.commands(edge, protocol.CommandAssign) {
		again = max(again, c.Seq)
	}
	if again <= cancel {
		t.Fatalf("no new assignment after the resume: %+v", r.commands(edge, protocol.CommandAssign))
	}
	got := in.waitFor(t, again)
	for _, s := range got[before:] {
		if s <= cancel {
			t.Fatalf("published %v: after the edge's ledger said it accepted %d and %d, the push for %d sent %d again",
				got, assign, cancel, again, s)
		}
	}
}

// TestLedgerAcceptanceNamesItsCommand: an ota.command_accepted
// acknowledges only the command it names, of the edge whose signed stream
// it is in: the seq (its reason "command N" and its id "cmd-N-accepted"
// agree), the kind (its target), and a command that was published to the
// edge. One from a device, from another edge's stream, of another kind,
// naming a command never published, or a seq never given acknowledges
// nothing and does not move where the next push starts; one that names a
// seq acknowledges no other, and a second copy changes nothing.
func TestLedgerAcceptanceNamesItsCommand(t *testing.T) {
	ctx := t.Context()
	r := newRig(t)
	r.edges("e", 2, "linux/amd64")
	a, b := "e-00", "e-01"
	exp := time.Now().Add(time.Hour)
	enqueue := func(edge, kind, ref string) uint64 {
		t.Helper()
		var seq uint64
		if err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
			var err error
			seq, err = r.cmds.Enqueue(ctx, tx, edge, kind, ref, []byte("{}"), exp)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	deliver := func(edge string) {
		t.Helper()
		if _, err := command.Take(ctx, r.pool, edge, 0, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	assign1 := enqueue(a, protocol.CommandAssign, "r-1") // 1
	cancel2 := enqueue(a, protocol.CommandCancel, "")    // 2
	deliver(a)
	pending3 := enqueue(a, protocol.CommandAssign, "r-2") // 3, never published
	enqueue(b, protocol.CommandAssign, "r-1")             // b's 1
	deliver(b)

	acked := func(edge string) []uint64 {
		t.Helper()
		cs, err := command.List(ctx, r.pool, edge)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, c := range cs {
			if c.AckedAt != nil {
				out = append(out, c.Seq)
			}
		}
		return out
	}
	check := func(what string, wantA, wantB []uint64, wantLast uint64) {
		t.Helper()
		if got := acked(a); !slices.Equal(got, wantA) {
			t.Fatalf("%s: %s's acknowledged commands %v, want %v", what, a, got, wantA)
		}
		if got := acked(b); !slices.Equal(got, wantB) {
			t.Fatalf("%s: %s's acknowledged commands %v, want %v", what, b, got, wantB)
		}
		if last, err := command.LastHello(ctx, r.pool, a); err != nil || last != wantLast {
			t.Fatalf("%s: %s's next push starts after %d (%v), want %d", what, a, last, err, wantLast)
		}
	}

	// digest is what an edge that says which command it accepted sends:
	// the SHA-256 of the signed bytes of the command it accepted.
	digest := func(edge string, seq uint64) string {
		t.Helper()
		var signed []byte
		if err := r.pool.QueryRow(ctx, `SELECT signed FROM edge_commands WHERE edge = $1 AND seq = $2`, edge, int64(seq)).Scan(&signed); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(signed)
		return hex.EncodeToString(sum[:])
	}
	naming := func(ev ota, command string) ota { ev.extra = map[string]any{"command": command}; return ev }
	for _, tc := range []struct {
		name string
		edge string
		ev   ota
	}{
		// The command a seq named before the cloud's database was restored
		// from an older backup, and reissued since: the acceptance says
		// which command it accepted, and it is not this one.
		{"another command's digest", a, naming(accepted(protocol.CommandCancel, cancel2), digest(a, assign1))},
		{"b's command's digest", a, naming(accepted(protocol.CommandAssign, assign1), digest(b, 1))},
		{"a malformed digest", a, naming(accepted(protocol.CommandCancel, cancel2), "zz")},
		{"a short digest", a, naming(accepted(protocol.CommandCancel, cancel2), digest(a, cancel2)[:32])},
		{"a device of the edge", a, ota{kind: "command_accepted", target: protocol.CommandAssign, reason: "command 1", id: "cmd-1-accepted", device: "till-1"}},
		{"another edge's stream, a seq it was never given", b, accepted(protocol.CommandCancel, cancel2)},
		{"the wrong kind", a, accepted(protocol.CommandCancel, assign1)},
		{"a command never published", a, accepted(protocol.CommandAssign, pending3)},
		{"a seq never given", a, accepted(protocol.CommandAssign, 99)},
		{"id and reason disagree", a, ota{kind: "command_accepted", target: protocol.CommandAssign, reason: "command 1", id: "cmd-9-accepted"}},
		{"no kind", a, ota{kind: "command_accepted", reason: "command 1", id: "cmd-1-accepted"}},
	} {
		r.commit(tc.edge, tc.ev)
		check(tc.name, nil, nil, 0)
	}

	// b's own acceptance of its seq 1 acknowledges b's, not a's.
	r.commit(b, accepted(protocol.CommandAssign, 1))
	check("b's own", nil, []uint64{1}, 0)
	// a's acceptance of 2, naming its command, acknowledges 2 only: 1 is
	// not named.
	r.commit(a, naming(accepted(protocol.CommandCancel, cancel2), digest(a, cancel2)))
	check("a's cancel", []uint64{cancel2}, []uint64{1}, cancel2)
	var at time.Time
	if err := r.pool.QueryRow(ctx, `SELECT acked_at FROM edge_commands WHERE edge = $1 AND seq = $2`, a, int64(cancel2)).Scan(&at); err != nil {
		t.Fatal(err)
	}
	// A second copy of the event (the edge recorded it again after a
	// crash) changes nothing.
	r.commit(a, accepted(protocol.CommandCancel, cancel2))
	check("a second copy", []uint64{cancel2}, []uint64{1}, cancel2)
	var at2 time.Time
	if err := r.pool.QueryRow(ctx, `SELECT acked_at FROM edge_commands WHERE edge = $1 AND seq = $2`, a, int64(cancel2)).Scan(&at2); err != nil || !at2.Equal(at) {
		t.Fatalf("acked_at %v then %v (%v)", at, at2, err)
	}
	// The command never published is still handed out after it.
	ps, err := command.Take(ctx, r.pool, a, cancel2, time.Now())
	if err != nil || len(ps) != 1 || ps[0].Seq != pending3 {
		t.Fatalf("after the acknowledged %d: %+v, %v; want %d", cancel2, ps, err, pending3)
	}
	// An older acceptance folded late does not move the start back.
	r.commit(a, accepted(protocol.CommandAssign, assign1))
	check("an older one late", []uint64{assign1, cancel2}, []uint64{1}, cancel2)
}
