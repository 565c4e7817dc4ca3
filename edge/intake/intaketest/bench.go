package intaketest

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/outpost-edge/outpost/edge/intake"
)

// AckLatency measures QoS 1 acknowledgement latency through an intake
// started on app: publishers MQTT 3.1.1 clients (one device, distinct
// client ids) each keep up to window publishes in flight, b.N publishes in
// all, one event each. It reports p50-µs and p99-µs (from Publish to the
// PUBACK reaching the client), msgs/s, and when app is a *FakeAppender,
// events/commit. Pass the real outbox (through its adapter) to measure the
// whole path; with window 1 it measures one publish at a time. It returns
// the latencies, sorted.
func AckLatency(b *testing.B, app intake.Appender, publishers, window int) []time.Duration {
	h := MustStart(b, app, nil)
	f, _ := app.(*FakeAppender)
	commits0 := 0
	if f != nil {
		commits0 = f.Commits()
	}
	lat := Publish(b, h.MQTTAddr(), "dev-1", h.Secret("dev-1"), publishers, window)
	if f != nil {
		if c := f.Commits() - commits0; c > 0 {
			b.ReportMetric(float64(len(lat))/float64(c), "events/commit")
		}
	}
	return lat
}

// Publish runs the publishers against any MQTT broker at addr (the intake,
// or a plain broker as a baseline) and reports p50-µs, p99-µs and msgs/s.
// It returns the latencies, sorted.
func Publish(b *testing.B, addr, user, pass string, publishers, window int) []time.Duration {
	clients := dialPublishers(b, addr, user, pass, publishers)
	defer disconnect(clients)
	b.ResetTimer()
	all, elapsed := publishRound(b, clients, user, b.N, window)
	b.StopTimer()
	if len(all) == 0 {
		return nil
	}
	b.ReportMetric(float64(Percentile(all, 0.50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(Percentile(all, 0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "msgs/s")
	return all
}

// VersusMochi measures the intake started on app against its ceiling in
// the same run: a bare mochi broker that acknowledges each QoS 1 publish at
// once (no hook, no decoding, no fsync), driven by the same publishers with
// the same payloads. The machine is shared and its speed drifts, so the two
// take turns, rounds rounds each, and the ratio is of the sums. It reports
// msgs/s (the intake's), mochi_msgs/s, ratio_to_mochi, the intake's p50-µs
// and p99-µs, the disk's fsync-p50-µs (one-byte write and fsync), the process's CPU time per message in each (cpu_ns/msg,
// mochi_cpu_ns/msg), and events/commit when app is a *FakeAppender.
func VersusMochi(b *testing.B, app intake.Appender, publishers, window int) {
	const rounds = 4
	h := MustStart(b, app, nil)
	plain := StartPlainMochi(b)
	intakeClients := dialPublishers(b, h.MQTTAddr(), "dev-1", h.Secret("dev-1"), publishers)
	defer disconnect(intakeClients)
	mochiClients := dialPublishers(b, plain, "dev-1", "x", publishers)
	defer disconnect(mochiClients)
	f, _ := app.(*FakeAppender)
	commits0 := 0
	if f != nil {
		commits0 = f.Commits()
	}
	// The disk's own fsync, the floor under every durable ack.
	fsync := Percentile(FsyncLatency(b, b.TempDir(), 100), 0.5)
	var intakeTime, mochiTime, intakeCPU, mochiCPU time.Duration
	var lat []time.Duration
	b.ResetTimer()
	for r := range rounds {
		n := b.N / rounds
		if r == rounds-1 {
			n = b.N - n*(rounds-1)
		}
		cpu := processCPU()
		l, d := publishRound(b, intakeClients, "dev-1", n, window)
		intakeCPU += processCPU() - cpu
		lat = append(lat, l...)
		intakeTime += d
		b.StopTimer()
		cpu = processCPU()
		_, d = publishRound(b, mochiClients, "dev-1", n, window)
		mochiCPU += processCPU() - cpu
		mochiTime += d
		b.StartTimer()
	}
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/intakeTime.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/mochiTime.Seconds(), "mochi_msgs/s")
	b.ReportMetric(mochiTime.Seconds()/intakeTime.Seconds(), "ratio_to_mochi")
	b.ReportMetric(float64(Percentile(lat, 0.50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(Percentile(lat, 0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(fsync.Microseconds()), "fsync-p50-µs")
	// CPU time of the process (publishers included) per message: on a
	// shared machine, the part of the cost that does not depend on how
	// much of the machine this process gets.
	b.ReportMetric(float64(intakeCPU.Nanoseconds())/float64(b.N), "cpu_ns/msg")
	b.ReportMetric(float64(mochiCPU.Nanoseconds())/float64(b.N), "mochi_cpu_ns/msg")
	if f != nil {
		if c := f.Commits() - commits0; c > 0 {
			b.ReportMetric(float64(b.N)/float64(c), "events/commit")
		}
	}
}

// StartPlainMochi starts the ceiling VersusMochi measures against: a bare
// mochi broker on a free port that lets anyone in and acknowledges QoS 1
// publishes at once. It is closed by tb.Cleanup.
func StartPlainMochi(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		tb.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("plain", ln)); err != nil {
		tb.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func dialPublishers(tb testing.TB, addr, user, pass string, publishers int) []paho.Client {
	clients := make([]paho.Client, publishers)
	for i := range clients {
		clients[i] = mustPaho(tb, addr, user, pass, fmt.Sprintf("bench-%d", i))
	}
	return clients
}

func disconnect(clients []paho.Client) {
	for _, c := range clients {
		c.Disconnect(0)
	}
}

// publishRound publishes n events (one per QoS 1 publish, with ids unique
// to the round) spread over the clients, each keeping up to window
// publishes unacknowledged, and returns the publish-to-PUBACK latencies,
// sorted, and how long the round took.
func publishRound(b *testing.B, clients []paho.Client, user string, n, window int) ([]time.Duration, time.Duration) {
	publishers := len(clients)
	run := time.Now().UnixNano()
	lat := make([][]time.Duration, publishers)
	per := make([]int, publishers)
	for i := range n {
		per[i%publishers]++
	}
	start := time.Now()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			type sent struct {
				tok paho.Token
				t0  time.Time
			}
			inflight := make(chan sent, window)
			slots := make(chan struct{}, window) // at most window publishes unacknowledged
			waited := make(chan struct{})
			go func() {
				defer close(waited)
				for s := range inflight {
					<-s.tok.Done()
					lat[p] = append(lat[p], time.Since(s.t0))
					<-slots
					if err := s.tok.Error(); err != nil {
						b.Error(err)
					}
				}
			}()
			for i := range per[p] {
				payload := fmt.Appendf(nil, `{"id":"b%d-%d-%d","type":"bench.tick","ts":%d,"body":{"n":%d}}`, run, p, i, time.Now().UnixMilli(), i)
				slots <- struct{}{}
				t0 := time.Now()
				inflight <- sent{clients[p].Publish("outpost/v1/dev/"+user+"/ev", 1, false, payload), t0}
			}
			close(inflight)
			<-waited
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	return all, elapsed
}

// Percentile returns the q-quantile of sorted durations.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}

// FsyncLatency measures n write+fsync cycles of one byte on a file in dir
// and returns their sorted durations: the raw ceiling that ack latency is
// reported against.
func FsyncLatency(tb testing.TB, dir string, n int) []time.Duration {
	tb.Helper()
	f, err := os.CreateTemp(dir, "fsync-*")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	out := make([]time.Duration, n)
	for i := range out {
		t0 := time.Now()
		f.Write([]byte{0})
		if err := f.Sync(); err != nil {
			tb.Fatal(err)
		}
		out[i] = time.Since(t0)
	}
	slices.Sort(out)
	return out
}

func mustPaho(tb testing.TB, addr, user, pass, clientID string) paho.Client {
	tb.Helper()
	o := paho.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(clientID).
		SetUsername(user).
		SetPassword(pass).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetCleanSession(true).
		SetProtocolVersion(4)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		tb.Fatalf("connect %s: %v", user, tok.Error())
	}
	return c
}

// HTTPBatches measures the HTTP intake started on app: posters concurrent
// clients each POST JSON arrays of batch events to /v1/events, one request
// at a time, b.N events in all. It reports events/s, requests/s, the p50
// and p99 of a request (p50-ms, p99-ms), and the process's CPU time per
// event (cpu_ns/event). Every request must be answered 201 (new records
// stored); the caller checks that its store holds all b.N.
func HTTPBatches(b *testing.B, app intake.Appender, posters, batch int) {
	h := MustStart(b, app, nil)
	url := h.HTTPURL() + intake.EventsPath
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: posters}}
	defer client.CloseIdleConnections()
	reqs := (b.N + batch - 1) / batch
	run := time.Now().UnixNano()
	var next atomic.Int64
	lat := make([][]time.Duration, posters)
	b.ResetTimer()
	cpu := processCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for p := range posters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body []byte
			for {
				r := int(next.Add(1)) - 1
				if r >= reqs {
					return
				}
				body = append(body[:0], '[')
				for i := r * batch; i < min((r+1)*batch, b.N); i++ {
					if i > r*batch {
						body = append(body, ',')
					}
					body = fmt.Appendf(body, `{"id":"h%d-%d","type":"bench.tick","ts":%d,"body":{"n":%d}}`, run, i, time.Now().UnixMilli(), i)
				}
				body = append(body, ']')
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				req.SetBasicAuth("dev-1", h.Secret("dev-1"))
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				res, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				reply, _ := io.ReadAll(res.Body)
				res.Body.Close()
				lat[p] = append(lat[p], time.Since(t0))
				if res.StatusCode != http.StatusCreated {
					b.Errorf("status %d: %s", res.StatusCode, reply)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	used := processCPU() - cpu
	b.StopTimer()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "requests/s")
	b.ReportMetric(float64(Percentile(all, 0.5).Microseconds())/1e3, "p50-ms")
	b.ReportMetric(float64(Percentile(all, 0.99).Microseconds())/1e3, "p99-ms")
	b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu_ns/event")
}
