package command_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// edgeInbox is a Publisher that plays the edge's subscription: it keeps
// the seqs it got, in order, and can be made to fail.
type edgeInbox struct {
	keys  protocol.Keys
	mu    sync.Mutex
	got   []uint64
	fail  error
	fails int // publishes to fail with fail, then succeed (0: fail always)
}

func (e *edgeInbox) PublishCommand(_ context.Context, edge string, signed []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fail != nil {
		if e.fails > 0 {
			e.fails--
			if e.fails == 0 {
				defer func() { e.fail = nil }()
			}
		}
		return e.fail
	}
	c, err := protocol.VerifyCommand(signed, e.keys)
	if err != nil {
		return err
	}
	if c.Edge != edge {
		return fmt.Errorf("command for %s published to %s", c.Edge, edge)
	}
	e.got = append(e.got, c.Seq)
	return nil
}

func (e *edgeInbox) seqs() []uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

// accepted is what an edge's gate would accept of what it got: each seq
// above the last accepted.
func (e *edgeInbox) accepted() []uint64 {
	var out []uint64
	for _, s := range e.seqs() {
		if len(out) == 0 || s > out[len(out)-1] {
			out = append(out, s)
		}
	}
	return out
}

// MustDeliverer runs a Deliverer on db until the test ends.
func MustDeliverer(tb testing.TB, db *pgxpool.Pool, opts command.DelivererOptions) *command.Deliverer {
	tb.Helper()
	opts.DB = db
	d, err := command.NewDeliverer(opts)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	return d
}

// A command enqueued while the edge is away is sent at its hello, in
// order; an expired or cancelled one is not; one enqueued while it is
// connected is pushed without a new hello.
func TestDelivererHelloAndPush(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, keys := MustSigner(t)
	MustEdges(t, db, "e1", "e2")
	d := MustDeliverer(t, db, command.DelivererOptions{})
	now := time.Now()

	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "r-1", nil, now.Add(time.Hour)) // 1
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "r-2", nil, now.Add(time.Hour)) // 2: cancelled
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", nil, now.Add(-time.Second)) // 3: expired
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", nil, now.Add(time.Hour))    // 4
	cancelRef(t, db, "r-2")

	in := &edgeInbox{keys: keys}
	if err := d.Hello(ctx, "e1", 0, in); err != nil {
		t.Fatal(err)
	}
	if got := in.seqs(); !slices.Equal(got, []uint64{1, 4}) {
		t.Fatalf("the hello delivered %v, want [1 4]", got)
	}

	// Connected now: a new command arrives without a hello, after what the
	// edge's last hello did not acknowledge (redelivery is normal).
	MustEnqueue(t, db, s, "e1", protocol.CommandCancel, "", nil, now.Add(time.Hour)) // 5
	poll.For(t, time.Minute, func() error {
		if got := in.accepted(); !slices.Equal(got, []uint64{1, 4, 5}) {
			return fmt.Errorf("the edge accepted %v (got %v), want [1 4 5]", got, in.seqs())
		}
		return nil
	})
	// A hello that acknowledges 5 gets nothing; the next push starts after it.
	if err := d.Hello(ctx, "e1", 5, in); err != nil {
		t.Fatal(err)
	}
	n := len(in.seqs())
	MustEnqueue(t, db, s, "e1", protocol.CommandCancel, "", nil, now.Add(time.Hour)) // 6
	poll.For(t, time.Minute, func() error {
		if got := in.seqs()[n:]; !slices.Equal(got, []uint64{6}) {
			return fmt.Errorf("after a hello with cmd 5 the push sent %v, want [6]", got)
		}
		return nil
	})
	// An edge this process never heard from gets nothing pushed.
	MustEnqueue(t, db, s, "e2", protocol.CommandAssign, "", nil, now.Add(time.Hour))
	if st := mustList(t, db, "e2"); st[0].DeliveredAt != nil {
		t.Fatalf("a command of an edge never seen was delivered: %+v", st[0])
	}
}

// A publish that fails stops the burst (a later command arriving first
// would make the edge drop the earlier one); the next hello sends it all.
func TestDelivererStopsAtFailure(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, keys := MustSigner(t)
	MustEdges(t, db, "e1")
	d, err := command.NewDeliverer(command.DelivererOptions{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", nil, time.Now().Add(time.Hour))
	}
	in := &edgeInbox{keys: keys, fail: errors.New("broker gone")}
	if err := d.Hello(ctx, "e1", 0, in); err == nil {
		t.Fatal("Hello with a failing publisher did not fail")
	}
	if st := d.Stats(); st.PublishErrors != 1 || st.Published != 0 {
		t.Fatalf("stats %+v, want one publish error and nothing published", st)
	}
	in.fail = nil
	if err := d.Hello(ctx, "e1", 0, in); err != nil {
		t.Fatal(err)
	}
	if got := in.seqs(); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("the next hello delivered %v, want [1 2 3]", got)
	}
}

// Two replicas' deliverers pushing to one edge while it says hello to
// both (with the last seq it accepted, as an edge does) and commands are
// enqueued through both never make it skip a command: what it accepts is
// every seq, in order.
func TestDeliverersTakeTurns(t *testing.T) {
	ctx := context.Background()
	url := ledgertest.URL(t)
	dbs := []*pgxpool.Pool{ledgertest.Pool(t, url), ledgertest.Pool(t, url)}
	s, keys := MustSigner(t)
	MustEdges(t, dbs[0], "e1")
	in := &edgeInbox{keys: keys}
	var ds []*command.Deliverer
	for _, db := range dbs {
		d := MustDeliverer(t, db, command.DelivererOptions{})
		if err := d.Hello(ctx, "e1", 0, in); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	const n = 40
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() {
			for i := range n / 2 {
				if _, err := enqueue(dbs[r], s, "e1", protocol.CommandAssign, "", nil, time.Now().Add(time.Hour)); err != nil {
					t.Error(err)
					return
				}
				if i%5 == 0 {
					var last uint64
					if a := in.accepted(); len(a) > 0 {
						last = a[len(a)-1]
					}
					if err := ds[r].Hello(ctx, "e1", last, in); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	want := make([]uint64, n)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	poll.For(t, time.Minute, func() error {
		if got := in.accepted(); !slices.Equal(got, want) {
			return fmt.Errorf("the edge accepted %v, want 1..%d", got, n)
		}
		return nil
	})
}

func cancelRef(tb testing.TB, db *pgxpool.Pool, ref string) []string {
	tb.Helper()
	tx, err := db.Begin(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	maybe, err := command.CancelRef(context.Background(), tx, ref)
	if err != nil {
		tb.Fatal(err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return maybe
}

// A push that fails (the broker was away) is tried again without a hello.
func TestDelivererRetriesPush(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, keys := MustSigner(t)
	MustEdges(t, db, "e1")
	d := MustDeliverer(t, db, command.DelivererOptions{})
	in := &edgeInbox{keys: keys}
	if err := d.Hello(ctx, "e1", 0, in); err != nil {
		t.Fatal(err)
	}
	in.mu.Lock()
	in.fail, in.fails = errors.New("broker away"), 2
	in.mu.Unlock()
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", nil, time.Now().Add(time.Hour))
	poll.For(t, time.Minute, func() error {
		if got := in.seqs(); !slices.Equal(got, []uint64{1}) {
			return fmt.Errorf("the edge got %v, want [1] after two failed pushes", got)
		}
		return nil
	})
	if st := d.Stats(); st.PublishErrors != 2 || st.Pushes < 3 {
		t.Fatalf("stats %+v, want 2 publish errors in 3 pushes", st)
	}
}

// A command enqueued while the deliverer was not listening (its LISTEN
// connection was down, so the notification went nowhere) is found by the
// sweep it makes once it listens, and pushed without a hello.
func TestDelivererSweepsWhatItMissed(t *testing.T) {
	ctx := context.Background()
	db := ledgertest.Pool(t, ledgertest.URL(t))
	s, keys := MustSigner(t)
	MustEdges(t, db, "e1")
	// No periodic sweep within the test: only the one made on listening.
	d, err := command.NewDeliverer(command.DelivererOptions{DB: db, Sweep: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	in := &edgeInbox{keys: keys}
	if err := d.Hello(ctx, "e1", 0, in); err != nil {
		t.Fatal(err)
	}
	MustEnqueue(t, db, s, "e1", protocol.CommandAssign, "", nil, time.Now().Add(time.Hour))
	if got := in.seqs(); len(got) != 0 {
		t.Fatalf("got %v before the deliverer ran", got)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	poll.For(t, time.Minute, func() error {
		if got := in.seqs(); !slices.Equal(got, []uint64{1}) {
			return fmt.Errorf("the edge got %v, want [1] from the sweep", got)
		}
		return nil
	})
}
