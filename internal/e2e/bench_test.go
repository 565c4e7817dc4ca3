package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BenchmarkEdgeToLedger measures end-to-end throughput from an edge's
// outbox to the cloud's ledger, over MQTT and over NATS JetStream (the
// cloud's embedded broker and server), with the real binaries, as a ratio
// to the raw ceiling measured in the same run: a plain COPY of the same
// rows into the same ledger table, 1000 rows per transaction (as the
// ledger's own benchmark does).
//
// One op is one drain: the edge is filled with records while it has no
// uplink, then started with one, and the rate is the records committed
// after the first commit over the time from the first commit to the last
// (commit times from the database's clock), so the edge's start-up and
// connect are not counted.
//
//	ratio_to_copy  end-to-end rows/s divided by COPY rows/s
func BenchmarkEdgeToLedger(b *testing.B) {
	const records = 40000
	for _, tr := range []struct {
		name string
		o    siteOptions
	}{
		{"mqtt", siteOptions{}},
		{"nats", siteOptions{nats: natsEmbedded}},
	} {
		b.Run(tr.name, func(b *testing.B) {
			var e2eRows, copyRows float64
			var e2eDur, copyDur time.Duration
			for range b.N {
				rows, d, crows, cd := drainOnce(b, tr.o, records)
				e2eRows += float64(rows)
				e2eDur += d
				copyRows += float64(crows)
				copyDur += cd
			}
			e2e, cp := e2eRows/e2eDur.Seconds(), copyRows/copyDur.Seconds()
			b.ReportMetric(e2e, "rows/s")
			b.ReportMetric(cp, "copy_rows/s")
			b.ReportMetric(e2e/cp, "ratio_to_copy")
		})
	}
}

// drainOnce runs one site, fills one edge with n records offline, drains
// it, and measures the commit rate and then the COPY rate of the same rows.
func drainOnce(b *testing.B, o siteOptions, n int) (rows int, d time.Duration, copied int, copyDur time.Duration) {
	b.StopTimer()
	o.edgeArgs = append(o.edgeArgs, "--log-level", "error")
	s := newSiteWith(b, o)
	e := s.addEdge("e1", "till-1")
	e.kill()
	// Offline: the same flags without the uplink.
	online := e.args
	var offline []string
	for _, a := range online {
		if !strings.HasPrefix(a, "--cloud-mqtt=") && !strings.HasPrefix(a, "--cloud-nats=") {
			offline = append(offline, a)
		}
	}
	e.args = offline
	e.startEdge()
	fill(b, e, "till-1", n)
	e.stop()
	e.args = online

	b.StartTimer()
	e.startEdge()
	s.drained(5 * time.Minute)
	b.StopTimer()

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var first, last time.Time
	var firstRows int
	if err := conn.QueryRow(ctx, `SELECT min(committed_at), max(committed_at), count(*) FROM ledger`).Scan(&first, &last, &rows); err != nil {
		b.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM ledger WHERE committed_at = $1`, first).Scan(&firstRows); err != nil {
		b.Fatal(err)
	}
	if rows < n || !last.After(first) {
		b.Fatalf("%d rows committed between %s and %s, want %d", rows, first, last, n)
	}

	// The ceiling: the same rows, COPYed into the same table.
	rs, err := conn.Query(ctx, `SELECT edge, epoch, seq, device, event_id, type, class, device_ts, edge_time, hlc, shed, hash, raw FROM ledger ORDER BY edge, epoch, seq`)
	if err != nil {
		b.Fatal(err)
	}
	var all [][]any
	for rs.Next() {
		v, err := rs.Values()
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, v)
	}
	if err := rs.Err(); err != nil {
		b.Fatal(err)
	}
	cols := []string{"edge", "epoch", "seq", "pos", "committed_at", "device", "event_id", "type", "class", "device_ts", "edge_time", "hlc", "shed", "hash", "raw"}
	t0 := time.Now()
	for i := 0; i < len(all); i += 1000 {
		chunk := all[i:min(i+1000, len(all))]
		now := time.Now()
		copyRows := make([][]any, len(chunk))
		for j, v := range chunk {
			copyRows[j] = append([]any{v[0], v[1], v[2], int64(0), now}, v[3:]...)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"ledger"}, cols, pgx.CopyFromRows(copyRows)); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
	copyDur = time.Since(t0)
	s.cloud.kill()
	e.kill()
	return rows - firstRows, last.Sub(first), len(all), copyDur
}

// fill posts n events to the edge in batches of 500 from four clients.
func fill(b *testing.B, e *edgeProc, dev string, n int) {
	const batch, clients = 500, 4
	next := make(chan int)
	go func() {
		for i := 0; i < n; i += batch {
			next <- i
		}
		close(next)
	}()
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	client := http.Client{Timeout: 30 * time.Second}
	for range clients {
		wg.Go(func() {
			for from := range next {
				var evs []json.RawMessage
				for j := from; j < min(from+batch, n); j++ {
					_, p := event(dev, j)
					evs = append(evs, p)
				}
				body, _ := json.Marshal(evs)
				req, _ := http.NewRequest(http.MethodPost, "http://"+e.http+"/v1/events", bytes.NewReader(body))
				req.SetBasicAuth(dev, e.secrets[dev])
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					errc <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 && resp.StatusCode != 201 {
					errc <- fmt.Errorf("POST /v1/events: %s", resp.Status)
					return
				}
			}
		})
	}
	wg.Wait()
	for range next { // after a failure, let the producer finish
	}
	close(errc)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}
