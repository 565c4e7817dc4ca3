package command_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// MustSigner returns a fresh cloud signer and the keys that verify it.
func MustSigner(tb testing.TB) (*protocol.Signer, protocol.Keys) {
	tb.Helper()
	pub, priv, err := protocol.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	s, err := protocol.NewSigner(priv)
	if err != nil {
		tb.Fatal(err)
	}
	return s, protocol.NewKeyMap(pub)
}

// MustEdges adds the edges to the directory, as enrollment would.
func MustEdges(tb testing.TB, db *pgxpool.Pool, ids ...string) {
	tb.Helper()
	for _, id := range ids {
		if _, err := db.Exec(context.Background(), `INSERT INTO edges (id) VALUES ($1)`, id); err != nil {
			tb.Fatal(err)
		}
	}
}

// MustEnqueue enqueues one command in its own transaction.
func MustEnqueue(tb testing.TB, db *pgxpool.Pool, s *protocol.Signer, edge, kind, ref string, body []byte, expires time.Time) uint64 {
	tb.Helper()
	seq, err := enqueue(db, s, edge, kind, ref, body, expires)
	if err != nil {
		tb.Fatal(err)
	}
	return seq
}

func enqueue(db *pgxpool.Pool, s *protocol.Signer, edge, kind, ref string, body []byte, expires time.Time) (uint64, error) {
	var seq uint64
	err := pgx.BeginFunc(context.Background(), db, func(tx pgx.Tx) error {
		var err error
		seq, err = command.Enqueue(context.Background(), tx, s, edge, kind, ref, body, expires)
		return err
	})
	return seq, err
}

func mustList(tb testing.TB, db *pgxpool.Pool, edge string) []command.Status {
	tb.Helper()
	l, err := command.List(context.Background(), db, edge)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func seqs(ps []command.Pending) []uint64 {
	var out []uint64
	for _, p := range ps {
		out = append(out, p.Seq)
	}
	return out
}

// Commands get each edge's next seq from 1, are signed for that edge with
// that seq, kind, body and expiry, and a hello hands out, in order, what
// it has not accepted yet, marking what it has accepted.
func TestEnqueueTakeList(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, keys := MustSigner(t)
	MustEdges(t, db, "e1", "e2")
	exp := time.Now().Add(time.Hour).Truncate(time.Millisecond)

	for i := range 3 {
		body := fmt.Appendf(nil, `{"n":%d}`, i)
		if seq := MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "r-1", body, exp); seq != uint64(i+1) {
			t.Fatalf("command %d of e1 has seq %d, want %d", i, seq, i+1)
		}
	}
	if seq := MustEnqueue(t, db, s, "e2", protocol.CommandCancel, "", nil, exp); seq != 1 {
		t.Fatalf("first command of e2 has seq %d, want 1", seq)
	}

	if pending, err := command.NoteHello(ctx, db, "e1", 0, time.Now()); err != nil || !pending {
		t.Fatalf("hello with cmd 0: pending %v, %v; want true", pending, err)
	}
	got, err := command.Take(ctx, db, "e1", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs(got), []uint64{1, 2, 3}) {
		t.Fatalf("hello with cmd 0 takes %v, want [1 2 3]", seqs(got))
	}
	for i, p := range got {
		c, err := protocol.VerifyCommand(p.Signed, keys)
		if err != nil {
			t.Fatalf("command %d: %v", p.Seq, err)
		}
		want := protocol.Command{Edge: "e1", Seq: p.Seq, Expires: exp.UnixMilli(), Kind: protocol.CommandAssign,
			Body: fmt.Appendf(nil, `{"n":%d}`, i), KID: s.KeyID()}
		if c.Edge != want.Edge || c.Seq != want.Seq || c.Expires != want.Expires || c.Kind != want.Kind || string(c.Body) != string(want.Body) || c.KID != want.KID {
			t.Fatalf("command %d is %+v, want %+v", p.Seq, c, want)
		}
	}

	// The edge accepted 1 and 2: they are acknowledged and not sent again;
	// 3 is (redelivery is normal), with the same bytes.
	if pending, err := command.NoteHello(ctx, db, "e1", 2, time.Now()); err != nil || !pending {
		t.Fatalf("hello with cmd 2: pending %v, %v; want true", pending, err)
	}
	if last, err := command.LastHello(ctx, db, "e1"); err != nil || last != 2 {
		t.Fatalf("LastHello: %d, %v; want 2", last, err)
	}
	again, err := command.Take(ctx, db, "e1", 2, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs(again), []uint64{3}) || string(again[0].Signed) != string(got[2].Signed) {
		t.Fatalf("hello with cmd 2 takes %v, want [3] with the bytes sent before", seqs(again))
	}
	l := mustList(t, db, "e1")
	if len(l) != 3 {
		t.Fatalf("list has %d commands, want 3", len(l))
	}
	for _, st := range l {
		if st.DeliveredAt == nil {
			t.Errorf("command %d: not marked delivered", st.Seq)
		}
		if acked := st.AckedAt != nil; acked != (st.Seq <= 2) {
			t.Errorf("command %d: acked %v, want %v", st.Seq, acked, st.Seq <= 2)
		}
		if st.Edge != "e1" || st.Kind != protocol.CommandAssign || st.Ref != "r-1" || !st.Expires.Equal(exp) || st.CancelledAt != nil {
			t.Errorf("command %d: %+v", st.Seq, st)
		}
	}
	// An edge that accepted everything has nothing pending; one whose
	// state was reset says a lower cmd, and gets again what is kept.
	if pending, err := command.NoteHello(ctx, db, "e1", 3, time.Now()); err != nil || pending {
		t.Fatalf("hello with cmd 3: pending %v, %v; want false", pending, err)
	}
	if pending, err := command.NoteHello(ctx, db, "e1", 0, time.Now()); err != nil || !pending {
		t.Fatalf("hello of a reset edge: pending %v, %v; want true", pending, err)
	}
	if last, err := command.LastHello(ctx, db, "e1"); err != nil || last != 0 {
		t.Fatalf("LastHello after a reset: %d, %v; want 0", last, err)
	}
	if last, err := command.LastHello(ctx, db, "e2"); err != nil || last != 0 {
		t.Fatalf("LastHello of an edge that never said hello: %d, %v; want 0", last, err)
	}
	if l := mustList(t, db, "e2"); len(l) != 1 || l[0].DeliveredAt != nil || l[0].Kind != protocol.CommandCancel {
		t.Fatalf("e2's commands: %+v", l)
	}
}

// An expired or cancelled command is not handed out; CancelRef names the
// edges that may hold a cancelled command and leaves acknowledged ones.
func TestExpiredAndCancelled(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, _ := MustSigner(t)
	MustEdges(t, db, "e1", "e2", "e3")
	now := time.Now()

	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", nil, now.Add(time.Minute))  // 1: expires first
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "r-1", nil, now.Add(time.Hour)) // 2: cancelled, delivered
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "r-2", nil, now.Add(time.Hour)) // 3: kept
	MustEnqueue(t, db, s, "e2", protocol.CommandAssign, "r-1", nil, now.Add(time.Hour)) // 1: cancelled, never sent
	MustEnqueue(t, db, s, "e3", protocol.CommandAssign, "r-1", nil, now.Add(time.Hour)) // 1: acknowledged
	if got, err := command.Take(ctx, db, "e1", 0, now); err != nil || !slices.Equal(seqs(got), []uint64{1, 2, 3}) {
		t.Fatalf("e1 takes %v, %v; want [1 2 3]", seqs(got), err)
	}
	if got, err := command.Take(ctx, db, "e3", 0, now); err != nil || len(got) != 1 {
		t.Fatalf("e3 takes %v, %v; want [1]", seqs(got), err)
	}
	if pending, err := command.NoteHello(ctx, db, "e3", 1, now); err != nil || pending {
		t.Fatalf("e3 (acked 1): pending %v, %v; want false", pending, err)
	}

	var maybe []string
	if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) (err error) {
		maybe, err = command.CancelRef(ctx, tx, "r-1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(maybe, []string{"e1"}) {
		t.Fatalf("CancelRef says %v may hold r-1's command, want [e1]", maybe)
	}
	if got, err := command.Take(ctx, db, "e1", 0, now.Add(2*time.Minute)); err != nil || !slices.Equal(seqs(got), []uint64{3}) {
		t.Fatalf("e1 after cancel and expiry takes %v, %v; want [3]", seqs(got), err)
	}
	if got, err := command.Take(ctx, db, "e2", 0, now); err != nil || len(got) != 0 {
		t.Fatalf("e2 after cancel takes %v, %v; want none", seqs(got), err)
	}
	if pending, err := command.NoteHello(ctx, db, "e2", 0, now); err != nil || pending {
		t.Fatalf("e2 after cancel: pending %v, %v; want false", pending, err)
	}
	if l := mustList(t, db, "e3"); l[0].CancelledAt != nil || l[0].AckedAt == nil {
		t.Fatalf("the acknowledged command of e3 is %+v; want acked and not cancelled", l[0])
	}
	if l := mustList(t, db, "e2"); l[0].CancelledAt == nil {
		t.Fatalf("e2's command is not marked cancelled: %+v", l[0])
	}
	// A hello past a command never sent does not make it acknowledged.
	if _, err := command.NoteHello(ctx, db, "e2", 1, now); err != nil {
		t.Fatal(err)
	}
	if l := mustList(t, db, "e2"); l[0].AckedAt != nil {
		t.Fatalf("e2's command, never sent, is marked acknowledged: %+v", l[0])
	}
	if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) (err error) {
		maybe, err = command.CancelRef(ctx, tx, "r-1")
		return err
	}); err != nil || len(maybe) != 0 {
		t.Fatalf("cancelling again: %v, %v; want none", maybe, err)
	}
}

// Bad arguments are refused with errors that say what is wrong.
func TestEnqueueRefuses(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, _ := MustSigner(t)
	MustEdges(t, db, "e1")
	exp := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name, edge, kind, ref string
		body                  []byte
		expires               time.Time
		signer                *protocol.Signer
		err                   error
		says                  string
	}{
		{"bad edge", "e/1", "ota.assign", "", nil, exp, s, command.ErrInvalid, "edge"},
		{"empty kind", "e1", "", "", nil, exp, s, command.ErrInvalid, "kind"},
		{"upper-case kind", "e1", "OTA", "", nil, exp, s, command.ErrInvalid, "kind"},
		{"bad ref", "e1", "ota.assign", "r 1", nil, exp, s, command.ErrInvalid, "ref"},
		{"large body", "e1", "ota.assign", "", make([]byte, protocol.MaxCommandBodyBytes+1), exp, s, command.ErrInvalid, "body"},
		{"no expiry", "e1", "ota.assign", "", nil, time.Time{}, s, command.ErrInvalid, "expires"},
		{"no signer", "e1", "ota.assign", "", nil, exp, nil, command.ErrInvalid, "signer"},
		{"unknown edge", "ghost", "ota.assign", "", nil, exp, s, command.ErrUnknownEdge, "ghost"},
	} {
		_, err := enqueue(db, tc.signer, tc.edge, tc.kind, tc.ref, tc.body, tc.expires)
		if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want %v naming %s", tc.name, err, tc.err, tc.says)
		}
	}
	if l := mustList(t, db, "e1"); len(l) != 0 {
		t.Fatalf("refused commands were stored: %+v", l)
	}
	if _, err := command.List(ctx, db, "e.1"); !errors.Is(err, command.ErrInvalid) {
		t.Fatalf("List of a bad edge id: %v, want ErrInvalid", err)
	}
	if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { _, err := command.CancelRef(ctx, tx, ""); return err }); !errors.Is(err, command.ErrInvalid) {
		t.Fatalf("CancelRef of no ref: %v, want ErrInvalid", err)
	}
	// The edge's first accepted seq is still 1.
	if seq := MustEnqueue(t, db, s, "e1", "ota.assign", "", nil, exp); seq != 1 {
		t.Fatalf("seq after refusals is %d, want 1", seq)
	}
}

// A rolled-back Enqueue gives its seq back, and a second enqueuer of the
// same edge waits for the first to end, so seq N+1 never commits before N.
func TestEnqueueOrder(t *testing.T) {
	ctx := context.Background()
	url := ledgertest.URL(t)
	a, b := ledgertest.Pool(t, url), ledgertest.Pool(t, url)
	s, _ := MustSigner(t)
	MustEdges(t, a, "e1")
	exp := time.Now().Add(time.Hour)

	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if seq, err := command.Enqueue(ctx, tx, s, "e1", "ota.assign", "", nil, exp); err != nil || seq != 1 {
		t.Fatalf("Enqueue: %d, %v; want 1", seq, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	first, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(ctx)
	if seq, err := command.Enqueue(ctx, first, s, "e1", "ota.assign", "", []byte("first"), exp); err != nil || seq != 1 {
		t.Fatalf("Enqueue after a rollback: %d, %v; want 1 again", seq, err)
	}
	type result struct {
		seq uint64
		err error
	}
	second := make(chan result, 1)
	go func() {
		seq, err := enqueue(b, s, "e1", "ota.assign", "", []byte("second"), exp)
		second <- result{seq, err}
	}()
	// The second waits on the first's lock (seen in pg_stat_activity), and
	// nothing of it is visible meanwhile.
	poll.For(t, time.Minute, func() error {
		var waiting int
		if err := a.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			return err
		}
		if waiting == 0 {
			return errors.New("no enqueuer waits on a lock")
		}
		return nil
	})
	select {
	case r := <-second:
		t.Fatalf("the second Enqueue ended (%d, %v) while the first holds the edge", r.seq, r.err)
	default:
	}
	if got, err := command.Take(ctx, a, "e1", 0, time.Now()); err != nil || len(got) != 0 {
		t.Fatalf("before either commits, Take gives %v, %v", seqs(got), err)
	}
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-second
	if r.err != nil || r.seq != 2 {
		t.Fatalf("second Enqueue: %d, %v; want 2", r.seq, r.err)
	}

	// A hello does not wait for an Enqueue in flight (a rollout's open
	// transaction): it sees what is committed.
	open, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Rollback(ctx)
	if _, err := command.Enqueue(ctx, open, s, "e1", "ota.assign", "", nil, exp); err != nil {
		t.Fatal(err)
	}
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second) // a hang guard: it must not wait at all
	defer cancel()
	if pending, err := command.NoteHello(hctx, b, "e1", 0, time.Now()); err != nil || !pending {
		t.Fatalf("a hello while an Enqueue is in flight: pending %v, %v; want true at once", pending, err)
	}
	if got, err := command.Take(hctx, b, "e1", 0, time.Now()); err != nil || !slices.Equal(seqs(got), []uint64{1, 2}) {
		t.Fatalf("Take while an Enqueue is in flight: %v, %v; want the committed [1 2]", seqs(got), err)
	}
}

// Two cloud replicas (two pools) enqueueing for the same edges at once get
// every seq exactly once, with no gaps.
func TestConcurrentEnqueueAcrossReplicas(t *testing.T) {
	url := ledgertest.URL(t)
	replicas := []*pgxpool.Pool{ledgertest.Pool(t, url), ledgertest.Pool(t, url)}
	s, keys := MustSigner(t)
	edges := []string{"e1", "e2"}
	MustEdges(t, replicas[0], edges...)
	exp := time.Now().Add(time.Hour)
	const perWorker, workers = 25, 4

	var wg sync.WaitGroup
	errs := make(chan error, len(replicas)*workers)
	for _, db := range replicas {
		for w := range workers {
			wg.Go(func() {
				for i := range perWorker {
					if _, err := enqueue(db, s, edges[(w+i)%len(edges)], "ota.assign", "", nil, exp); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for _, e := range edges {
		l := mustList(t, replicas[1], e)
		total += len(l)
		for i, st := range l {
			if st.Seq != uint64(i+1) {
				t.Fatalf("edge %s: command %d has seq %d; want 1..n without gaps", e, i, st.Seq)
			}
		}
		got, err := command.Take(context.Background(), replicas[0], e, 0, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range got {
			c, err := protocol.VerifyCommand(p.Signed, keys)
			if err != nil || c.Seq != uint64(i+1) || c.Edge != e {
				t.Fatalf("edge %s: handed-out command %d is %+v, %v", e, i, c, err)
			}
		}
	}
	if want := len(replicas) * workers * perWorker; total != want {
		t.Fatalf("%d commands stored, want %d", total, want)
	}
}

// The API reads commands as the reader role, under the tenant policy: a
// tenant sees its edges' commands only.
func TestListTenantScoped(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	l := ledger.New(db, ledger.Options{})
	s, _ := MustSigner(t)
	MustEdges(t, db, "e1", "e2")
	if _, err := l.AddTenant(ctx, "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `UPDATE edges SET tenant = 'acme' WHERE id = 'e1'`); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	MustEnqueue(t, db, s, "e1", "ota.assign", "", nil, exp)
	MustEnqueue(t, db, s, "e2", "ota.assign", "", nil, exp)
	for _, tc := range []struct {
		scope, edge string
		want        int
	}{
		{"acme", "e1", 1},
		{"acme", "e2", 0},
		{ledger.DefaultTenant, "e2", 1},
		{ledger.DefaultTenant, "e1", 0},
		{ledger.AllTenants, "e1", 1},
	} {
		err := l.ReadAs(ctx, tc.scope, func(scoped *ledger.Ledger) error {
			got, err := command.List(ctx, scoped.DB(), tc.edge)
			if err == nil && len(got) != tc.want {
				err = fmt.Errorf("sees %d commands, want %d", len(got), tc.want)
			}
			return err
		})
		if err != nil {
			t.Errorf("scope %s, edge %s: %v", tc.scope, tc.edge, err)
		}
	}
	// The seq counters are not readable through the API at all.
	err := l.ReadAs(ctx, ledger.AllTenants, func(scoped *ledger.Ledger) error {
		_, err := scoped.DB().Exec(ctx, `SELECT * FROM edge_command_seqs`)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("reading edge_command_seqs as the reader role: %v, want permission denied", err)
	}
}

// Enqueue announces the edge on NotifyChannel when its transaction commits.
func TestEnqueueNotifies(t *testing.T) {
	ctx := context.Background()
	url := ledgertest.URL(t)
	db := ledgertest.Pool(t, url)
	s, _ := MustSigner(t)
	MustEdges(t, db, "e1")
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `LISTEN `+command.NotifyChannel); err != nil {
		t.Fatal(err)
	}
	MustEnqueue(t, db, s, "e1", "ota.assign", "", nil, time.Now().Add(time.Hour))
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n, err := conn.WaitForNotification(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Channel != command.NotifyChannel || n.Payload != "e1" {
		t.Fatalf("notification %s %q, want %s \"e1\"", n.Channel, n.Payload, command.NotifyChannel)
	}
}
