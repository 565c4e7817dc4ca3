package command_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// waitBlocked waits until a backend other than the caller's waits for a
// lock in a statement that contains like.
func waitBlocked(tb testing.TB, db *pgxpool.Pool, like string) {
	tb.Helper()
	poll.For(tb, time.Minute, func() error {
		var n int
		err := db.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, like).Scan(&n)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no statement with %q waits for a lock yet", like)
		}
		return nil
	})
}

// A rollout's transaction cancels its commands (CancelRef) and then
// enqueues an ota.cancel for the edges that may hold one, as the contract
// says. A hello of such an edge arriving in between must not deadlock with
// it: the hello waits for (or skips) the cancelled rows, and must not hold
// the edge's counter meanwhile, which the transaction's Enqueue needs next.
func TestHelloDuringCancelThenEnqueue(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, _ := MustSigner(t)
	MustEdges(t, db, "e1")
	exp := time.Now().Add(time.Hour)
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "r-1", []byte(`{}`), exp)
	if _, err := command.Take(ctx, db, "e1", 0, time.Now()); err != nil {
		t.Fatal(err)
	}

	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	held, err := command.CancelRef(ctx, tx, "r-1")
	if err != nil || len(held) != 1 {
		t.Fatalf("CancelRef: %v, %v; want [e1]", held, err)
	}
	hello := make(chan error, 1)
	go func() {
		_, err := command.NoteHello(ctx, db, "e1", 1, time.Now())
		hello <- err
	}()
	waitBlocked(t, db, "edge_command_seqs")
	if _, err := command.Enqueue(ctx, tx, s, "e1", protocol.CommandCancel, "r-1", []byte(`{}`), exp); err != nil {
		t.Fatalf("the rollout's Enqueue after CancelRef, with a hello waiting: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit the rollout's transaction: %v", err)
	}
	if err := <-hello; err != nil {
		t.Fatalf("the hello waiting for the rollout's transaction: %v", err)
	}
}

// Only an edge that is registered and active is served. The ledger answers
// a hello of an id it does not know (with an empty receipt), so a hello
// under any id reaches the Deliverer: such ids must not pile up in what it
// serves (one entry each, as long as the process runs). A revoked edge is
// sent nothing, neither at a hello (through an external broker a revoked
// edge may still say one) nor by a push to the session it had before it
// was revoked.
func TestDelivererServesActiveEdgesOnly(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, keys := MustSigner(t)
	MustEdges(t, db, "e1", "e2")
	d := MustDeliverer(t, db, command.DelivererOptions{})
	exp := time.Now().Add(time.Hour)
	in := &edgeInbox{keys: keys}

	for i := range 100 {
		if err := d.Hello(ctx, fmt.Sprintf("ghost-%d", i), 0, in); err != nil {
			t.Fatal(err)
		}
	}
	if n := d.Stats().Served; n != 0 {
		t.Fatalf("after hellos of 100 unknown ids the deliverer serves %d edges, want 0", n)
	}

	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "r-1", []byte(`{}`), exp)
	if _, err := db.Exec(ctx, `UPDATE edges SET status = 'revoked', revoked_at = now() WHERE id = 'e1'`); err != nil {
		t.Fatal(err)
	}
	if err := d.Hello(ctx, "e1", 0, in); err != nil {
		t.Fatal(err)
	}
	if got := in.seqs(); len(got) != 0 {
		t.Fatalf("a revoked edge's hello was sent %v, want nothing", got)
	}
	if got, err := command.Take(ctx, db, "e1", 0, time.Now()); err != nil || len(got) != 0 {
		t.Fatalf("Take for a revoked edge: %v, %v; want nothing (what a push would send)", seqs(got), err)
	}
	if st := mustList(t, db, "e1"); st[0].DeliveredAt != nil {
		t.Fatalf("a revoked edge's command is marked delivered: %+v", st[0])
	}
	if n := d.Stats().Served; n != 0 {
		t.Fatalf("the deliverer serves %d edges after a revoked edge's hello, want 0", n)
	}
	if err := d.Hello(ctx, "e2", 0, in); err != nil {
		t.Fatal(err)
	}
	if n := d.Stats().Served; n != 1 {
		t.Fatalf("the deliverer serves %d edges after an active edge's hello, want 1", n)
	}
}

// A hello that says what the edge's last one said changes nothing, so it
// writes nothing: hellos (one per connect, or a flood of them from an edge
// that reconnects in a loop) must not rewrite the edge's counter row.
func TestRepeatedHelloWritesNothing(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, _ := MustSigner(t)
	MustEdges(t, db, "e1")
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", []byte(`{}`), time.Now().Add(time.Hour))
	if _, err := command.Take(ctx, db, "e1", 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	version := func() string {
		t.Helper()
		var v string
		if err := db.QueryRow(ctx, `SELECT xmin::text || '/' || xmax::text FROM edge_command_seqs WHERE edge = 'e1'`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if _, err := command.NoteHello(ctx, db, "e1", 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	before := version()
	for range 3 {
		if _, err := command.NoteHello(ctx, db, "e1", 1, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if after := version(); after != before {
		t.Fatalf("the counter row went from xmin/xmax %s to %s after hellos that said the same cmd; want it untouched", before, after)
	}
	if got, err := command.LastHello(ctx, db, "e1"); err != nil || got != 1 {
		t.Fatalf("LastHello = %d, %v; want 1", got, err)
	}
}

// A hello's cmd is the edge's word, any uint64: one above every seq the
// cloud gave (up to the largest) is taken without an error, hands out
// nothing, and does not stop the edge from getting its commands once a
// later hello says where it really stands.
func TestHelloWithHugeCmd(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, keys := MustSigner(t)
	MustEdges(t, db, "e1")
	d := MustDeliverer(t, db, command.DelivererOptions{})
	exp := time.Now().Add(time.Hour)
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", []byte(`{}`), exp)
	in := &edgeInbox{keys: keys}
	for _, cmd := range []uint64{math.MaxUint64, 1 << 63, 1<<63 - 1, 1000} {
		if err := d.Hello(ctx, "e1", cmd, in); err != nil {
			t.Fatalf("hello with cmd %d: %v", cmd, err)
		}
		if got, err := command.Take(ctx, db, "e1", cmd, time.Now()); err != nil || len(got) != 0 {
			t.Fatalf("Take after %d: %v, %v; want nothing", cmd, seqs(got), err)
		}
	}
	if got := in.seqs(); len(got) != 0 {
		t.Fatalf("hellos with cmds above every seq were sent %v, want nothing", got)
	}
	if err := d.Hello(ctx, "e1", 0, in); err != nil {
		t.Fatal(err)
	}
	if got := in.seqs(); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("the hello with cmd 0 after them was sent %v, want [1]", got)
	}
}

// A command whose publish failed is marked delivered (it may have reached
// the broker), so the sweep, which looks for commands never delivered,
// does not find it, and an edge acknowledges only in a hello, which it
// says when it connects. An edge that stays connected while the cloud's
// own link to the broker is down (a broker restart the edge rode out, the
// cloud's connection flapping) must still get it without reconnecting:
// after a hello whose burst failed, and after a push that failed more
// often than its quick retries, the deliverer keeps trying.
func TestDelivererKeepsTryingWhatFailed(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, keys := MustSigner(t)
	MustEdges(t, db, "e1")
	d := MustDeliverer(t, db, command.DelivererOptions{Sweep: 300 * time.Millisecond})
	exp := time.Now().Add(time.Hour)

	in := &edgeInbox{keys: keys, fail: errors.New("broker away"), fails: 1}
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", nil, exp)
	if err := d.Hello(ctx, "e1", 0, in); err == nil {
		t.Fatal("the hello's burst did not fail")
	}
	poll.For(t, time.Minute, func() error {
		if got := in.seqs(); !slices.Equal(got, []uint64{1}) {
			return fmt.Errorf("after the hello's failed burst the edge got %v, want [1] without a new hello", got)
		}
		return nil
	})

	in.mu.Lock()
	in.fail, in.fails = errors.New("broker away"), 6
	in.mu.Unlock()
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", nil, exp)
	poll.For(t, 2*time.Minute, func() error {
		if got := in.accepted(); !slices.Equal(got, []uint64{1, 2}) {
			return fmt.Errorf("after 6 failed pushes the edge accepted %v, want [1 2] without a new hello", got)
		}
		return nil
	})
}

// A hello whose own bookkeeping fails (the database briefly away after the
// ledger answered it: the edge has its receipt and asks nothing more) is
// retried as a push too: a command pushed while the edge was away is
// marked delivered, so no sweep finds it, and only this hello would have
// brought it.
func TestDelivererRetriesAFailedHello(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, keys := MustSigner(t)
	MustEdges(t, db, "e1")
	d := MustDeliverer(t, db, command.DelivererOptions{Sweep: 300 * time.Millisecond})
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", nil, time.Now().Add(time.Hour))
	// Pushed while the edge was away: delivered, never received.
	if _, err := command.Take(ctx, db, "e1", 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	exec := func(sql string) {
		t.Helper()
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	exec(`ALTER TABLE edge_commands RENAME TO edge_commands_away`)
	in := &edgeInbox{keys: keys}
	if err := d.Hello(ctx, "e1", 0, in); err == nil {
		t.Fatal("the hello did not fail without its table")
	}
	exec(`ALTER TABLE edge_commands_away RENAME TO edge_commands`)
	poll.For(t, time.Minute, func() error {
		if got := in.seqs(); !slices.Equal(got, []uint64{1}) {
			return fmt.Errorf("after a failed hello the edge got %v, want [1] without a new hello", got)
		}
		return nil
	})
}

// A Take that runs while a rollout's transaction is cancelling the edge's
// commands waits for it, and does not hand out what it cancelled; what the
// cancel reports as possibly received is what had been handed out before.
func TestTakeDuringCancel(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, _ := MustSigner(t)
	MustEdges(t, db, "e1")
	exp := time.Now().Add(time.Hour)
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "r-1", []byte(`{}`), exp) // 1: taken before
	if _, err := command.Take(ctx, db, "e1", 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "r-1", []byte(`{}`), exp) // 2: never taken
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "r-2", []byte(`{}`), exp) // 3: another rollout's

	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	held, err := command.CancelRef(ctx, tx, "r-1")
	if err != nil || !slices.Equal(held, []string{"e1"}) {
		t.Fatalf("CancelRef: %v, %v; want [e1] (seq 1 was handed out)", held, err)
	}
	type taken struct {
		seqs []uint64
		err  error
	}
	took := make(chan taken, 1)
	go func() {
		p, err := command.Take(ctx, db, "e1", 0, time.Now())
		took <- taken{seqs(p), err}
	}()
	waitBlocked(t, db, "SET delivered_at = now()")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got := <-took
	if got.err != nil || !slices.Equal(got.seqs, []uint64{3}) {
		t.Fatalf("the Take waiting for the cancel handed out %v, %v; want [3]", got.seqs, got.err)
	}
	if st := mustList(t, db, "e1"); st[1].DeliveredAt != nil {
		t.Fatalf("the cancelled, never-sent seq 2 is marked delivered: %+v", st[1])
	}
}

// An edge's cmd above the last seq the cloud gave it means the cloud's
// counter went back (its database restored from a backup older than the
// edge's last command): the edge accepted those seqs, signed by the cloud
// key, and drops anything at or below them as a replay. The hello raises
// the counter, so the next command gets a seq the edge accepts and is
// sent. (A forged hello can only raise it, which no edge minds, and not
// past what an Enqueue can still add to.)
func TestHelloAboveTheCounterRaisesIt(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, keys := MustSigner(t)
	MustEdges(t, db, "e1", "e2")
	d := MustDeliverer(t, db, command.DelivererOptions{})
	exp := time.Now().Add(time.Hour)
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", []byte(`{}`), exp) // 1
	in := &edgeInbox{keys: keys}
	if err := d.Hello(ctx, "e1", 5, in); err != nil {
		t.Fatal(err)
	}
	if seq := MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", []byte(`{}`), exp); seq != 6 {
		t.Fatalf("after a hello with cmd 5 the next command has seq %d, want 6", seq)
	}
	if err := d.Hello(ctx, "e1", 5, in); err != nil {
		t.Fatal(err)
	}
	if got := in.accepted(); !slices.Equal(got, []uint64{6}) {
		t.Fatalf("the edge at cmd 5 accepted %v, want [6]", got)
	}

	MustEnqueue(t, db, s, "e2", protocol.CommandAssign, "", []byte(`{}`), exp)
	if err := d.Hello(ctx, "e2", math.MaxUint64, in); err != nil {
		t.Fatal(err)
	}
	if _, err := enqueue(db, s, "e2", protocol.CommandAssign, "", []byte(`{}`), exp); err != nil {
		t.Fatalf("Enqueue after a hello with cmd MaxUint64: %v", err)
	}
}

// An edge revoked after its hello is not served for as long as the
// process runs: the sweep drops it (its pushes would hand out nothing, and
// each sweep would queue one again for its undelivered commands).
func TestSweepDropsRevokedEdges(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, keys := MustSigner(t)
	MustEdges(t, db, "e1", "e2")
	d := MustDeliverer(t, db, command.DelivererOptions{Sweep: 100 * time.Millisecond})
	in := &edgeInbox{keys: keys}
	for _, e := range []string{"e1", "e2"} {
		if err := d.Hello(ctx, e, 0, in); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(ctx, `UPDATE edges SET status = 'revoked', revoked_at = now() WHERE id = 'e1'`); err != nil {
		t.Fatal(err)
	}
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", []byte(`{}`), time.Now().Add(time.Hour))
	poll.For(t, time.Minute, func() error {
		if n := d.Stats().Served; n != 1 {
			return fmt.Errorf("the deliverer serves %d edges, want 1 (e2; e1 was revoked)", n)
		}
		return nil
	})
	MustEnqueue(t, db, s, "e2", protocol.CommandAssign, "", []byte(`{}`), time.Now().Add(time.Hour))
	poll.For(t, time.Minute, func() error {
		if got := in.seqs(); !slices.Equal(got, []uint64{1}) {
			return fmt.Errorf("e2 got %v, want its [1] pushed; nothing of e1's", got)
		}
		return nil
	})
}

// Handing out commands already marked delivered writes nothing: an edge
// that says hello in a loop with commands it has not acknowledged (or a
// push repeating them) costs reads and publishes, not a new version of
// each row every time.
func TestTakeAgainWritesNothing(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, _ := MustSigner(t)
	MustEdges(t, db, "e1")
	for range 3 {
		MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", []byte(`{}`), time.Now().Add(time.Hour))
	}
	versions := func() string {
		t.Helper()
		var v string
		if err := db.QueryRow(ctx, `SELECT string_agg(xmin::text || '/' || xmax::text, ' ' ORDER BY seq) FROM edge_commands WHERE edge = 'e1'`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got, err := command.Take(ctx, db, "e1", 0, time.Now()); err != nil || !slices.Equal(seqs(got), []uint64{1, 2, 3}) {
		t.Fatalf("first Take: %v, %v", seqs(got), err)
	}
	before := versions()
	for range 3 {
		if got, err := command.Take(ctx, db, "e1", 0, time.Now()); err != nil || !slices.Equal(seqs(got), []uint64{1, 2, 3}) {
			t.Fatalf("Take again: %v, %v; want [1 2 3]", seqs(got), err)
		}
	}
	if after := versions(); after != before {
		t.Fatalf("the rows went from xmin/xmax %s to %s when handed out again; want them untouched", before, after)
	}
	// A new one is marked and handed out after the rest.
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", []byte(`{}`), time.Now().Add(time.Hour))
	if got, err := command.Take(ctx, db, "e1", 1, time.Now()); err != nil || !slices.Equal(seqs(got), []uint64{2, 3, 4}) {
		t.Fatalf("Take after 1 with a new command: %v, %v; want [2 3 4]", seqs(got), err)
	}
	if st := mustList(t, db, "e1"); st[3].DeliveredAt == nil {
		t.Fatalf("the new command handed out is not marked delivered: %+v", st[3])
	}
}
