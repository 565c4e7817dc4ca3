package intaketest

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
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
	clients := make([]paho.Client, publishers)
	for i := range clients {
		clients[i] = mustPaho(b, addr, user, pass, fmt.Sprintf("bench-%d", i))
	}
	run := time.Now().UnixNano()
	lat := make([][]time.Duration, publishers)
	per := make([]int, publishers)
	for i := range b.N {
		per[i%publishers]++
	}
	b.ResetTimer()
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
	b.StopTimer()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) == 0 {
		return nil
	}
	b.ReportMetric(float64(Percentile(all, 0.50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(Percentile(all, 0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "msgs/s")
	for _, c := range clients {
		c.Disconnect(0)
	}
	return all
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
