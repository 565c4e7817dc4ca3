package command

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// BenchmarkQueueDrain queues a push for each of n served edges at once (a
// rollout's stage enqueued in one transaction) and takes them all as the
// workers do. next scans the queue under the Deliverer's mutex, which
// Hello also takes; ns/edge stays flat as n grows because the first due
// entry the scan meets is taken (so draining is not quadratic).
func BenchmarkQueueDrain(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprintf("edges=%d", n), func(b *testing.B) {
			pool, err := pgxpool.New(b.Context(), "postgres://127.0.0.1:1/none") // never connected
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close()
			d, err := NewDeliverer(DelivererOptions{DB: pool, PushDelay: -1})
			if err != nil {
				b.Fatal(err)
			}
			edges := make([]string, n)
			for i := range edges {
				edges[i] = fmt.Sprintf("e%d", i)
				d.served[edges[i]] = served{pub: nopPublisher{}}
			}
			b.ResetTimer()
			for b.Loop() {
				now := d.o.Now()
				for _, e := range edges {
					d.queueAt(e, now, 0)
				}
				for {
					if e, _, _, _ := d.next(); e == "" {
						break
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/edge")
		})
	}
}

type nopPublisher struct{}

func (nopPublisher) PublishCommand(ctx context.Context, edge string, signed []byte) error { return nil }
