package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

// poolOfOne returns a Ledger on a pool of one connection to url.
func poolOfOne(t *testing.T, url string) *ledger.Ledger {
	t.Helper()
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return ledger.New(ledgertest.Pool(t, url+sep+"pool_max_conns=1"), ledger.Options{})
}

// TestEarlyGivesBackItsConnection: on every way a commit can end without
// committing (every input forged, the context already ended, the context
// ending while the early transaction waits for an edge lock another
// transaction holds), the early transaction gives back its connection and
// its edge locks: on a pool of one, the next commit of the same edge
// commits (within a deadline, not waiting for the first to be collected).
func TestEarlyGivesBackItsConnection(t *testing.T) {
	url := MustMigratedDB(t)
	l := poolOfOne(t, url)
	admin := MustLedger(t, url, ledger.Options{})
	e := MustAddEdge(t, admin, "edge-early")
	c := makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 40, time.Now())
	next := uint64(1)
	commitNext := func(t *testing.T) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := l.Commit(ctx, inputs(segment(c, e, next, next+4)))
		if err != nil || out[0].Kind != ledger.KindCommitted || out[0].HWM != next+4 {
			t.Fatalf("the commit after: %+v, %v", out, err)
		}
		next += 5
	}
	forged := func() *protocol.Segment {
		s := segment(c, e, next, next+4)
		r := bytes.Clone(s.Records[2])
		r[len(r)-2] ^= 0x01
		s.Records[2] = r
		return s
	}

	t.Run("all forged", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := l.Commit(ctx, inputs(forged(), forged()))
		if err != nil || out[0].Kind != ledger.KindQuarantined || out[1].Kind != ledger.KindQuarantined {
			t.Fatalf("%+v, %v", out, err)
		}
		commitNext(t)
	})
	t.Run("context ended", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := l.Commit(ctx, inputs(segment(c, e, next, next+4))); err == nil {
			t.Fatal("a commit with an ended context returned no error")
		}
		commitNext(t)
	})
	t.Run("context ends waiting for the edge lock", func(t *testing.T) {
		conn := MustConn(t, url)
		tx, err := conn.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// The edge's lock, as the commit takes it (lockEdgeClass, "outp").
		if _, err := tx.Exec(context.Background(), `SELECT pg_advisory_xact_lock($1, hashtext($2))`, int32(0x6f757470), e.ID); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := l.Commit(ctx, inputs(segment(c, e, next, next+4)))
			done <- err
		}()
		watch := MustConn(t, url)
		poll.For(t, time.Minute, func() error {
			if n := count(t, watch, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`); n != 1 {
				return fmt.Errorf("%d advisory locks waited for, want 1", n)
			}
			return nil
		})
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("commit cancelled waiting for the edge lock: %v", err)
		}
		if err := tx.Rollback(context.Background()); err != nil {
			t.Fatal(err)
		}
		commitNext(t)
	})
}

// TestEarlyConcurrentOnAPoolOfOne: commits of the same and of different
// edges at once on a pool of one connection all finish (each early
// transaction holds the one connection while its batch verifies; none
// waits for a second one while holding it), and commit every record once.
func TestEarlyConcurrentOnAPoolOfOne(t *testing.T) {
	url := MustMigratedDB(t)
	l := poolOfOne(t, url)
	admin := MustLedger(t, url, ledger.Options{})
	var chains []*chain
	var edges []*testEdge
	for i := range 3 {
		e := MustAddEdge(t, admin, fmt.Sprintf("edge-%d", i))
		edges = append(edges, e)
		chains = append(chains, makeChain(t, protocol.Stream{Edge: e.ID, Epoch: newEpoch(t)}, 60, time.Now()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for w := range 6 {
		wg.Go(func() {
			// Each worker sends every segment of every chain in its own order
			// until all are committed; gaps are sent again.
			for round := 0; round < 200; round++ {
				left := 0
				for k := range chains {
					i := (k + w) % len(chains)
					out, err := l.Commit(ctx, inputs(cut(chains[i], edges[i], 10)...))
					if err != nil {
						errs <- err
						return
					}
					for _, o := range out {
						if o.Kind == ledger.KindGap {
							left++
						}
					}
				}
				if left == 0 {
					return
				}
			}
			errs <- errors.New("still gaps after 200 rounds")
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	conn := MustConn(t, url)
	for _, c := range chains {
		seqs, raws := storedRows(t, conn, c.Stream)
		checkLedger(t, c, seqs, raws)
	}
}
