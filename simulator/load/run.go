package load

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/simulator/traffic"
)

// counters are the run's live totals, shared by every edge.
type counters struct {
	committed     atomic.Int64 // records receipted
	segments      atomic.Int64 // segments published, every copy
	resent        atomic.Int64 // of which carried records published before
	nacks         atomic.Int64
	timeouts      atomic.Int64
	helloTimeouts atomic.Int64
	ackWaits      atomic.Int64
	dupWaits      atomic.Int64 // ack timeouts stuck inside the broker's duplicate window (nothing resent)
	dupAcks       atomic.Int64 // publishes the broker dropped as duplicates (JetStream PubAck "duplicate")
	dialFailures  atomic.Int64
	errors        atomic.Int64 // protocol violations by the cloud
	connected     atomic.Int64 // edges that have connected at least once
	drained       atomic.Int64 // edges done
}

type run struct {
	cfg      Config
	c        counters
	http     *http.Client
	cloudKID protocol.KeyID
	cloudKey ed25519.PublicKey
	edges    []*edge
	loopback bool // edges connect from their own 127/8 addresses
	pool     []protocol.Event
	poolSize int // 0: poolSize (tests make fewer)
}

// Run plays cfg.Edges synthetic edges against the cloud and returns the
// report. The error is for a run that could not be carried out (the cloud
// unreachable, enrollment refused); a run whose check fails returns a
// report whose OK is false, and no error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, http: &http.Client{Timeout: 60 * time.Second}}
	r.printf("load: enrolling %d edges (%s-1 to %s-%d) with %s", cfg.Edges, cfg.EdgePrefix, cfg.EdgePrefix, cfg.Edges, cfg.Cloud.API)
	t0 := time.Now()
	if err := r.enroll(ctx); err != nil {
		return nil, err
	}
	r.printf("load: enrolled in %s", time.Since(t0).Round(time.Millisecond))

	rep := &Report{Config: reportConfig(&cfg), Started: time.Now().UTC()}
	if cfg.Ceiling != nil {
		segs := r.sample(min(200000, max(20000, r.expected())))
		r.printf("load: measuring the COPY ceiling (%d rows, 1 and %d streams)", countRecords(segs), cfg.Workers)
		c, err := cfg.Ceiling(ctx, segs, cfg.Workers)
		if err != nil {
			return nil, fmt.Errorf("measure the COPY ceiling: %w", err)
		}
		rep.Ceiling = &c
		r.printf("load: COPY ceiling %.0f rows/s (1 stream), %.0f rows/s (%d streams)", c.OneStream, c.SameWorkers, c.Workers)
	}

	var dial dialer
	switch cfg.Transport {
	case MQTT:
		dial = mqttDialer(cfg.Cloud.MQTT)
		r.loopback = loopbackSources(cfg.Cloud.MQTT)
	case NATS:
		dial = natsDialer(cfg.Cloud.NATS)
		r.loopback = loopbackSources(cfg.Cloud.NATS)
	}
	if r.loopback {
		r.printf("load: the broker is on this host: each edge connects from its own 127/8 address")
	}
	limit := cfg.ConnectWithin + cfg.Duration + cfg.DrainTimeout
	runCtx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	r.printf("load: %s; %d edges over %s, connecting within %s", describe(&cfg), cfg.Edges, cfg.Transport, cfg.ConnectWithin)
	cpu0, self0, db0 := r.cloudCPU(), selfCPU(), r.dbCPU()
	start := time.Now()
	trafficEnd := start.Add(cfg.ConnectWithin + cfg.Duration)
	var wg sync.WaitGroup
	for i, e := range r.edges {
		at := start
		if cfg.Edges > 1 {
			at = start.Add(time.Duration(int64(cfg.ConnectWithin) * int64(i) / int64(cfg.Edges-1)))
		}
		wg.Go(func() { e.run(runCtx, at, dial) })
	}
	// The committed count when the traffic window closes: the sustained
	// rate while every edge sends.
	var atTrafficEnd atomic.Int64
	atTrafficEnd.Store(-1)
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() { r.watch(runCtx, start, trafficEnd, &atTrafficEnd, stopWatch, rep) })
	wg.Wait()
	close(stopWatch)
	watch.Wait()
	end := time.Now()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	rep.CloudCPU = (r.cloudCPU() - cpu0).Seconds()
	rep.LoadCPU = (selfCPU() - self0).Seconds()
	rep.DatabaseCPU = (r.dbCPU() - db0).Seconds()
	r.report(rep, start, trafficEnd, end, atTrafficEnd.Load())
	if runCtx.Err() != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d of %d edges not drained within %s (connect spread + duration + drain timeout)",
			cfg.Edges-int(r.c.drained.Load()), cfg.Edges, limit))
	}
	if n, err := r.quarantined(ctx); err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("read the quarantine: %v", err))
	} else {
		rep.Quarantined = n
		if n > 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%d of this run's segments are in quarantine (GET /v1/quarantine)", n))
		}
	}
	if cfg.CloudRSS != nil {
		rep.CloudPeakRSS = max(rep.CloudPeakRSS, cfg.CloudRSS())
	}
	if cfg.Ceiling != nil {
		// Once more after the load: on a shared machine the ceiling moves,
		// and the ratios are to the mean of the two.
		c, err := cfg.Ceiling(ctx, r.sample(rep.Ceiling.Rows), cfg.Workers)
		if err != nil {
			return nil, fmt.Errorf("measure the COPY ceiling again: %w", err)
		}
		rep.CeilingAfter = &c
		r.printf("load: COPY ceiling after the load %.0f rows/s (1 stream), %.0f rows/s (%d streams)", c.OneStream, c.SameWorkers, c.Workers)
		rep.ratios()
	}
	if !cfg.NoCheck {
		r.printf("load: reading %d streams back from the API", len(r.edges))
		rep.Check = r.check(ctx)
		rep.Problems = append(rep.Problems, rep.Check.Problems...)
	}
	rep.OK = len(rep.Problems) == 0
	return rep, nil
}

func (r *run) cloudCPU() time.Duration {
	if r.cfg.CloudCPU == nil {
		return 0
	}
	return r.cfg.CloudCPU()
}

func (r *run) dbCPU() time.Duration {
	if r.cfg.DatabaseCPU == nil {
		return 0
	}
	return r.cfg.DatabaseCPU()
}

// selfCPU is the CPU time this process (the load generator) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (r *run) printf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Out, format+"\n", args...)
}

func describe(c *Config) string {
	var parts []string
	if c.Backlog > 0 {
		parts = append(parts, fmt.Sprintf("a backlog of %d events per edge", c.Backlog))
	}
	if c.Rate > 0 {
		parts = append(parts, fmt.Sprintf("%.3g events/s per edge for %s", c.Rate, c.Duration))
	}
	if c.Saturate {
		parts = append(parts, fmt.Sprintf("as fast as receipts come for %s", c.Duration))
	}
	return strings.Join(parts, ", then ")
}

// expected is how many records the run makes, roughly.
func (r *run) expected() int {
	c := &r.cfg
	n := c.Edges * c.Backlog
	n += int(float64(c.Edges) * c.Rate * c.Duration.Seconds())
	if c.Saturate {
		n += 50000
	}
	return n
}

// watch prints progress, notes the committed count at the end of the
// traffic window, and samples the cloud's memory.
func (r *run) watch(ctx context.Context, start, trafficEnd time.Time, atEnd *atomic.Int64, stop chan struct{}, rep *Report) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	lastPrint, lastCommitted := start, int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case now := <-tick.C:
			if atEnd.Load() < 0 && !now.Before(trafficEnd) {
				atEnd.Store(r.c.committed.Load())
			}
			if r.cfg.CloudRSS != nil {
				rep.CloudPeakRSS = max(rep.CloudPeakRSS, r.cfg.CloudRSS())
			}
			if now.Sub(lastPrint) >= r.cfg.ProgressEvery {
				c := r.c.committed.Load()
				r.printf("load: %5.0fs: %d/%d edges connected, %d drained; %d records receipted (%.0f/s); %d segments, %d resent, %d nacks, %d ack timeouts, %d hello timeouts",
					now.Sub(start).Seconds(), r.c.connected.Load(), len(r.edges), r.c.drained.Load(), c,
					float64(c-lastCommitted)/now.Sub(lastPrint).Seconds(), r.c.segments.Load(), r.c.resent.Load(), r.c.nacks.Load(), r.c.timeouts.Load(), r.c.helloTimeouts.Load())
				lastPrint, lastCommitted = now, c
			}
		}
	}
}

// enroll makes every edge: a key, a one-time token, enrollment, and the
// cloud key it pins.
func (r *run) enroll(ctx context.Context) error {
	cfg := &r.cfg
	r.makePool()
	r.edges = make([]*edge, cfg.Edges)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	var mu sync.Mutex
	for i := range r.edges {
		g.Go(func() error {
			id := fmt.Sprintf("%s-%d", cfg.EdgePrefix, i+1)
			_, priv, err := protocol.GenerateKey()
			if err != nil {
				return err
			}
			signer, err := protocol.NewSigner(priv)
			if err != nil {
				return err
			}
			epoch, err := protocol.NewEpoch(nil)
			if err != nil {
				return err
			}
			var tok struct {
				Token string `json:"token"`
			}
			if err := r.post(gctx, "/v1/tokens", cfg.Cloud.AdminToken, map[string]string{"edge": id, "ttl": "1h"}, http.StatusCreated, &tok); err != nil {
				return err
			}
			var en struct {
				CloudPublicKey string         `json:"cloud_public_key"`
				CloudKID       protocol.KeyID `json:"cloud_kid"`
			}
			if err := r.post(gctx, "/v1/enroll", "", map[string]string{"token": tok.Token, "public_key": hex.EncodeToString(signer.Public())}, http.StatusOK, &en); err != nil {
				return err
			}
			pub, err := protocol.ParsePublicKey(en.CloudPublicKey)
			if err != nil {
				return fmt.Errorf("enroll %s: the cloud's key: %w", id, err)
			}
			if protocol.KeyIDOf(pub) != en.CloudKID {
				return fmt.Errorf("enroll %s: the cloud's key id %s is not that of its key %s", id, en.CloudKID, protocol.KeyIDOf(pub))
			}
			mu.Lock()
			defer mu.Unlock()
			if r.cloudKey == nil {
				r.cloudKey, r.cloudKID = pub, en.CloudKID
			} else if !r.cloudKey.Equal(pub) {
				return fmt.Errorf("enroll %s: the cloud answered with key %s, earlier edges got %s (two clouds behind one URL?)", id, en.CloudKID, r.cloudKID)
			}
			seed := cfg.Seed ^ uint64(i+1)*0x9e3779b97f4a7c15
			dev := "till-1"
			e := &edge{id: id, index: i, r: r, signer: signer, cloudKeys: protocol.NewKeyMap(pub),
				stream: protocol.Stream{Edge: id, Epoch: epoch}, device: dev,
				rng:  rand.New(rand.NewPCG(seed, 0x10ad)),
				pool: r.pool, poolAt: int(seed % uint64(len(r.pool))),
				backlog: cfg.Backlog}
			e.hlc.Now = func() time.Time { return e.clock }
			// The backlog is what the edge stored during an afternoon's
			// outage: its events are spread over the four hours before
			// now.
			if cfg.Backlog > 0 {
				e.backStep = 4 * time.Hour / time.Duration(cfg.Backlog)
				e.backT = time.Now().Add(-4 * time.Hour)
			}
			r.edges[i] = e
			return nil
		})
	}
	return g.Wait()
}

func (r *run) post(ctx context.Context, path, token string, body any, want int, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(r.cfg.Cloud.API, "/")+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, strings.TrimSpace(string(rb)))
	}
	if err := json.Unmarshal(rb, out); err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	return nil
}

func (r *run) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(r.cfg.Cloud.API, "/")+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+r.cfg.Cloud.AdminToken)
	resp, err := r.http.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// quarantined counts the quarantine entries of this run's edges.
func (r *run) quarantined(ctx context.Context) (int, error) {
	n := 0
	after := int64(0)
	for {
		var page struct {
			Entries []struct {
				ID   int64  `json:"id"`
				Edge string `json:"edge"`
			} `json:"entries"`
			Next int64 `json:"next"`
		}
		if err := r.get(ctx, fmt.Sprintf("/v1/quarantine?limit=1000&after=%d", after), &page); err != nil {
			return n, err
		}
		for _, e := range page.Entries {
			if strings.HasPrefix(e.Edge, r.cfg.EdgePrefix+"-") {
				n++
			}
		}
		if len(page.Entries) < 1000 || page.Next <= after {
			return n, nil
		}
		after = page.Next
	}
}

// poolSize is how many POS events the run makes with the traffic
// generator; every edge's records cycle through them (with ids of their
// own). Making each event afresh costs about ten times what the cloud
// spends on a record, which on a shared machine would measure the load
// generator instead of the cloud.
const poolSize = 4096

// makePool makes the run's events: a till's sales, voids and refunds over
// a business day.
func (r *run) makePool() {
	if r.pool != nil {
		return
	}
	day := time.Now().UTC().Format(time.DateOnly)
	gen := traffic.New(traffic.Options{Seed: r.cfg.Seed, Store: r.cfg.EdgePrefix, Device: "till-1", Kind: traffic.Till, BusinessDay: day})
	now := time.Now()
	n := poolSize
	if r.poolSize > 0 {
		n = r.poolSize
	}
	r.pool = make([]protocol.Event, n)
	for i := range r.pool {
		r.pool[i] = gen.Next(now.Add(time.Duration(i) * time.Second))
	}
}

// sample returns about n records like the run's, in segments of the run's
// size over several streams, for the COPY ceiling. They are made by the
// same generator and never sent.
func (r *run) sample(n int) []*protocol.Segment {
	size := r.cfg.SegmentRecords
	streams := max(r.cfg.Workers*4, 8)
	per := max(n/streams, 1)
	var out []*protocol.Segment
	for s := range streams {
		_, priv, _ := protocol.GenerateKey()
		signer, _ := protocol.NewSigner(priv)
		epoch, _ := protocol.NewEpoch(nil)
		id := fmt.Sprintf("%s-ceiling-%d", r.cfg.EdgePrefix, s+1)
		e := &edge{id: id, r: r, signer: signer, stream: protocol.Stream{Edge: id, Epoch: epoch}, device: "till-1",
			pool: r.pool, poolAt: s * 97}
		e.hlc.Now = func() time.Time { return e.clock }
		now := time.Now()
		for range per {
			e.makeRecord(now, true)
		}
		for first := uint64(1); first <= e.head; first += uint64(size) {
			last := min(first+uint64(size)-1, e.head)
			out = append(out, &protocol.Segment{V: protocol.SegmentVersion, Edge: id, Epoch: epoch, First: first, Last: last,
				Records: e.raws[first-1 : last],
				Checkpoint: signer.SignCheckpoint(protocol.Checkpoint{Edge: id, Epoch: epoch, Seq: last,
					Head: e.links[last-1], EdgeTime: e.times[last-1]})})
		}
	}
	return out
}

func countRecords(segs []*protocol.Segment) int {
	n := 0
	for _, s := range segs {
		n += len(s.Records)
	}
	return n
}
