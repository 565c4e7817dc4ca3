package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/jackc/pgx/v5"
)

// oracle is what devices know: every id they sent, and the ones the edge
// acknowledged.
type oracle struct {
	mu    sync.Mutex
	sent  map[string]bool // device/id
	acked map[string]bool
}

func newOracle() *oracle { return &oracle{sent: map[string]bool{}, acked: map[string]bool{}} }

func (o *oracle) note(key string, acked bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sent[key] = true
	if acked {
		o.acked[key] = true
	}
}

func (o *oracle) ackedCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.acked)
}

func event(dev string, i int) (id string, payload []byte) {
	id = fmt.Sprintf("%s-%05d", dev, i)
	var ev map[string]any
	if i%4 == 3 {
		ev = map[string]any{"id": id, "type": "telemetry.reading", "ts": time.Now().UnixMilli(),
			"body": map[string]any{"sensor": dev, "metric": "temp_c", "value": float64(i%40) / 4}}
	} else {
		ev = map[string]any{"id": id, "type": "inventory.adjusted", "ts": time.Now().UnixMilli(),
			"body": map[string]any{"store": "s1", "sku": fmt.Sprintf("sku-%d", i%13), "qty_delta": 1000 + i, "reason": "received"}}
	}
	b, _ := json.Marshal(ev)
	return id, b
}

// mqttDevice publishes n events at QoS 1 through paho (MQTT 3.1.1),
// retrying each until it is acknowledged (so a crash means a retransmit of
// the same id), and publishing every 10th event twice on purpose.
func mqttDevice(ctx context.Context, t *testing.T, e *edgeProc, dev string, n int, o *oracle) error {
	opts := paho.NewClientOptions().AddBroker("tcp://" + e.mqtt).SetClientID(dev).
		SetUsername(dev).SetPassword(e.secrets[dev]).SetCleanSession(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(500 * time.Millisecond).SetConnectTimeout(2 * time.Second)
	c := paho.NewClient(opts)
	c.Connect()
	defer c.Disconnect(100)
	topic := "outpost/v1/dev/" + dev + "/ev"
	for i := 0; i < n; i++ {
		id, payload := event(dev, i)
		copies := 1
		if i%10 == 0 {
			copies = 2 // a device retransmit
		}
		for k := 0; k < copies; k++ {
			for {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				o.note(dev+"/"+id, false)
				tok := c.Publish(topic, 1, false, payload)
				if tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
					o.note(dev+"/"+id, true)
					break
				}
				time.Sleep(50 * time.Millisecond) // the edge is restarting
			}
		}
	}
	return nil
}

// httpDevice posts batches of 10 events, retrying a batch until 200/201.
func httpDevice(ctx context.Context, e *edgeProc, dev string, n int, o *oracle, from int) error {
	client := http.Client{Timeout: 3 * time.Second}
	for i := from; i < from+n; i += 10 {
		var batch []json.RawMessage
		var ids []string
		for j := i; j < i+10 && j < from+n; j++ {
			id, p := event(dev, j)
			batch = append(batch, p)
			ids = append(ids, id)
		}
		body, _ := json.Marshal(batch)
		for {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			for _, id := range ids {
				o.note(dev+"/"+id, false)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+e.http+"/v1/events", bytes.NewReader(body))
			req.SetBasicAuth(dev, e.secrets[dev])
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 || resp.StatusCode == 201 {
					for _, id := range ids {
						o.note(dev+"/"+id, true)
					}
					break
				}
			}
			time.Sleep(50 * time.Millisecond) // the edge is restarting: back off, then resend the batch
		}
	}
	return nil
}

type row struct {
	edge, epoch, device, id string
	seq                     int64
	shed                    bool
}

func ledgerRows(t *testing.T, dbURL string) []row {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rs, err := conn.Query(ctx, `SELECT edge, encode(epoch,'hex'), seq, device, event_id FROM ledger ORDER BY edge, epoch, seq`)
	if err != nil {
		t.Fatal(err)
	}
	var out []row
	for rs.Next() {
		var r row
		if err := rs.Scan(&r.edge, &r.epoch, &r.seq, &r.device, &r.id); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// verifyLedger checks the ledger against the oracle: every acknowledged
// event exactly once, nothing that was not sent, no gaps in any stream.
func verifyLedger(t *testing.T, rows []row, o *oracle) {
	t.Helper()
	seen := map[string]int{}
	next := map[string]int64{}
	for _, r := range rows {
		stream := r.edge + "/" + r.epoch
		if want := next[stream] + 1; r.seq != want {
			t.Errorf("stream %s: seq %d where %d was due", stream, r.seq, want)
		}
		next[stream] = r.seq
		if r.device == "" || r.id == "" {
			continue
		}
		key := r.device + "/" + r.id
		seen[key]++
		if !o.sent[key] {
			t.Errorf("ledger holds %s, which no device sent", key)
		}
	}
	var dups, lost []string
	for k, n := range seen {
		if n > 1 {
			dups = append(dups, k)
		}
	}
	for k := range o.acked {
		if seen[k] == 0 {
			lost = append(lost, k)
		}
	}
	sort.Strings(dups)
	sort.Strings(lost)
	if len(dups) > 0 {
		t.Errorf("%d events doubled, such as %v", len(dups), dups[:min(5, len(dups))])
	}
	if len(lost) > 0 {
		t.Errorf("%d acknowledged events lost, such as %v", len(lost), lost[:min(5, len(lost))])
	}
	t.Logf("verdict: %d rows, %d acknowledged events, %d distinct events sent, %d streams", len(rows), len(o.acked), len(o.sent), len(next))
}

// drained waits until every edge's outbox is acknowledged up to its head.
func (s *site) drained(timeout time.Duration) {
	s.t.Helper()
	var procs []*proc
	procs = append(procs, s.cloud)
	for _, e := range s.edges {
		procs = append(procs, e.proc)
	}
	waitFor(s.t, "every edge drained", timeout, func() bool {
		for _, e := range s.edges {
			st, ok := e.edgeStatus()
			if !ok || st.AckedHWM != st.NextSeq-1 {
				return false
			}
		}
		return true
	}, procs...)
}

// TestEndToEndCrashes runs two edges and a cloud while devices publish over
// MQTT and HTTP, with device retransmits, and kills an edge and then the
// cloud with SIGKILL mid-stream. The ledger must hold every acknowledged
// event exactly once, in gapless streams. It runs over each transport (see
// transports), and once with one edge on MQTT and the other on NATS.
func TestEndToEndCrashes(t *testing.T) {
	forTransports(t, slices.Concat(transports, []transport{transportMixed}), testEndToEndCrashes)
}

func testEndToEndCrashes(t *testing.T, so siteOptions) {
	s := newSiteWith(t, so)
	e1 := s.addEdge("e1", "till-1", "till-2")
	e2 := s.addEdge("e2", "till-9")
	o := newOracle()
	const n = 300
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var failed atomic.Value
	goDev := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				failed.Store(err)
			}
		}()
	}
	goDev(func() error { return mqttDevice(ctx, t, e1, "till-1", n, o) })
	goDev(func() error { return mqttDevice(ctx, t, e1, "till-2", n, o) })
	goDev(func() error { return httpDevice(ctx, e2, "till-9", n, o, 0) })

	waitFor(t, "a third acknowledged", 60*time.Second, func() bool { return o.ackedCount() >= n }, e1.proc, s.cloud)
	e1.kill()
	t.Logf("killed edge e1 with SIGKILL after %d acks", o.ackedCount())
	e1.startEdge()
	waitFor(t, "two thirds acknowledged", 60*time.Second, func() bool { return o.ackedCount() >= 2*n }, e1.proc, s.cloud)
	s.cloud.kill()
	t.Logf("killed the cloud with SIGKILL after %d acks", o.ackedCount())
	s.startCloud()
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	s.drained(60 * time.Second)
	verifyLedger(t, ledgerRows(t, s.dbURL), o)
	if got := o.ackedCount(); got != 3*n {
		t.Fatalf("%d events acknowledged, want %d", got, 3*n)
	}
}

// TestCloudKilledBetweenCommitAndReceipt makes the cloud kill itself after
// every third commit, after the transaction and before any receipt goes
// out, and restarts it each time. The edges' resends must produce no
// duplicate, and the edges must still end with every record acknowledged.
// It runs over each transport.
func TestCloudKilledBetweenCommitAndReceipt(t *testing.T) {
	forTransports(t, transports, testCloudKilledBetweenCommitAndReceipt)
}

func testCloudKilledBetweenCommitAndReceipt(t *testing.T, so siteOptions) {
	so.env = append(so.env, "OUTPOST_FAULT_CRASH_AFTER_COMMIT=2")
	s := newSiteWith(t, so)
	e1 := s.addEdge("e1", "till-1")
	o := newOracle()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()

	var crashes atomic.Int64
	stopSup := make(chan struct{})
	supDone := make(chan struct{})
	go func() { // restart the cloud whenever it dies
		defer close(supDone)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSup:
				return
			case <-tick.C:
				if s.cloud.exited() {
					crashes.Add(1)
					s.cloud.start()
				}
			}
		}
	}()
	defer func() { close(stopSup); <-supDone }()
	// Publish in rounds, each drained to the cloud, until the cloud has
	// been killed enough times.
	for round := 0; crashes.Load() < 8; round++ {
		if round == 60 {
			t.Fatalf("only %d crashes after %d rounds", crashes.Load(), round)
		}
		if err := httpDevice(ctx, e1, "till-1", 30, o, round*30); err != nil {
			t.Fatal(err)
		}
		s.drained(60 * time.Second)
	}
	s.drained(90 * time.Second)
	verifyLedger(t, ledgerRows(t, s.dbURL), o)
	t.Logf("the cloud was killed %d times between commit and receipt", crashes.Load())

}
