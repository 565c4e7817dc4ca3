package simulator

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/simulator/fault"
	"github.com/outpost-edge/outpost/simulator/fleet"
	"github.com/outpost-edge/outpost/simulator/oracle"
	"github.com/outpost-edge/outpost/simulator/ota"
	"github.com/outpost-edge/outpost/simulator/traffic"
	"github.com/outpost-edge/outpost/simulator/verify"
)

// run is one simulation in progress.
type run struct {
	cfg    Config
	oracle *oracle.Oracle
	c      counters
	out    *printer

	bins    fleet.Binaries
	cloud   *fleet.Cloud
	edges   []*fleet.Edge
	links   []*fault.Link
	devices []*device

	start      time.Time // of the traffic
	limitOnce  sync.Once
	trafficEnd chan struct{} // closed when the traffic is to stop

	drained     time.Duration // how long the drain after the traffic took
	trafficTime time.Duration // from the start of the traffic to the last device's last acknowledgement

	releases *ota.Releases // the OTA scenario's (Config.OTA)

	mu        sync.Mutex
	active    map[int]activeFault // faults in force, by index in the schedule
	faults    []FaultResult
	otaResult *ota.Result
}

// Run runs a simulation as cfg describes: it starts the cloud and one edge
// per store as child processes, sends the devices' traffic through them
// while it injects the faults, waits for every edge to drain, checks the
// cloud's ledger against what the devices sent, and returns the report.
// The error is for a run that could not be carried out; a run whose
// verdict fails returns a report whose Verdict.OK is false, and no error.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, oracle: oracle.New(), out: newPrinter(cfg.Out, cfg.Progress, cfg.TTY),
		trafficEnd: make(chan struct{}), active: map[int]activeFault{}}
	for _, d := range []string{cfg.Dir, r.path("logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	defer func() {
		r.out.endProgress()
		r.teardown()
	}()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	r.start = time.Now()
	progCtx, stopProgress := context.WithCancel(ctx)
	var prog sync.WaitGroup
	if cfg.Progress != nil {
		prog.Add(1)
		go func() { defer prog.Done(); r.progress(progCtx) }()
	}
	err = r.traffic(ctx)
	if err == nil {
		err = r.drain(ctx)
	}
	stopProgress()
	prog.Wait()
	r.out.endProgress()
	if err != nil {
		return nil, err
	}
	rep, err = r.finish(ctx)
	if err != nil {
		return rep, err
	}
	if cfg.Hold != nil {
		cfg.Hold(ctx, rep)
	}
	return rep, nil
}

func (r *run) path(elem ...string) string {
	return filepath.Join(append([]string{r.cfg.Dir}, elem...)...)
}

func (r *run) printf(format string, args ...any) { r.out.printf(format, args...) }

// setup finds the programs, starts the cloud, and enrolls and starts the
// edges, each behind its uplink proxy, with their devices.
func (r *run) setup(ctx context.Context) error {
	var how string
	var err error
	r.bins, how, err = fleet.FindBinaries(ctx, r.cfg.BinDir, r.path("bin"))
	if err != nil {
		return err
	}
	r.printf("programs: %s and %s (%s)", r.bins.Edge, r.bins.Cloud, how)
	cloudArgs := r.cfg.CloudArgs
	if r.cfg.OTA != nil {
		more, err := r.otaSetup(ctx)
		if err != nil {
			return fmt.Errorf("the OTA releases: %w", err)
		}
		cloudArgs = append(more, cloudArgs...)
	}
	r.cloud, err = fleet.StartCloud(ctx, fleet.CloudOptions{Binary: r.bins.Cloud, Dir: r.path("cloud"), LogDir: r.path("logs"),
		DatabaseURL: r.cfg.DatabaseURL, NATS: r.cfg.Transport == "nats", Args: cloudArgs})
	if err != nil {
		return fmt.Errorf("start the cloud: %w", err)
	}
	r.printf("cloud: API %s, MQTT %s (log %s)", r.cloud.API, r.cloud.MQTT, r.cloud.Proc.Log)
	uplink := r.cloud.MQTT
	if r.cfg.Transport == "nats" {
		uplink = strings.TrimPrefix(r.cloud.NATS, "nats://")
		r.printf("cloud: NATS %s; the edges uplink over NATS JetStream", r.cloud.NATS)
	}

	seed := r.cfg.Seed
	rng := rand.New(rand.NewPCG(seed, 0xde71ce))
	day := time.Now().UTC().Format(time.DateOnly)
	for i := range r.cfg.Stores {
		id := storeID(i)
		link, err := fault.NewLink(id, uplink)
		if err != nil {
			return err
		}
		r.links = append(r.links, link)
		var quota int64
		if i >= r.cfg.Stores-r.cfg.QuotaEdges {
			quota = r.cfg.TelemetryQuota
		}
		eo := fleet.EdgeOptions{ID: id, Binary: r.bins.Edge, Dir: r.path("edges", id), LogDir: r.path("logs"),
			CloudMQTT: link.Addr(), TelemetryQuota: quota, Args: r.cfg.EdgeArgs}
		if r.cfg.Transport == "nats" {
			eo.CloudMQTT, eo.CloudNATS = "", link.Addr()
		}
		if r.cfg.OTA != nil {
			r.otaEdge(&eo)
		}
		e, err := fleet.NewEdge(eo)
		if err != nil {
			return err
		}
		r.edges = append(r.edges, e)
		currency, incl := "EUR", true
		if i%3 == 2 {
			currency, incl = "USD", false
		}
		if err := r.cloud.AddStore(ctx, id, "Shop "+strconv.Itoa(i+1), storeZones[i%len(storeZones)], currency); err != nil {
			return err
		}
		tok, err := r.cloud.EnrollToken(ctx, id, id)
		if err != nil {
			return err
		}
		if err := e.Enroll(ctx, r.cloud.API, tok); err != nil {
			return err
		}
		if r.cfg.OTA != nil {
			if err := r.otaProvision(ctx, e); err != nil {
				return err
			}
		}
		type plan struct {
			id, secret string
			kind       traffic.Kind
			skew       time.Duration
			mqtt5      bool
			late       bool
		}
		var plans []plan
		lateTill := -1 // the device index of the till that holds its events
		if i < r.cfg.LateTills {
			lateTill = 0
			if r.cfg.Devices >= 4 {
				lateTill = 3 // the second till
			}
		}
		for j, kind := range layout(r.cfg.Devices) {
			p := plan{id: fmt.Sprintf("s%d-%s-%d", i+1, kind, j+1), kind: kind, late: j == lateTill}
			if p.secret, err = e.AddDevice(ctx, p.id); err != nil {
				return err
			}
			if rng.Float64() < r.cfg.Skewed {
				// Hours or days off, either way: a till with a flat CMOS
				// battery, a sensor that never had its clock set.
				p.skew = time.Duration(1+rng.IntN(72)) * time.Hour * time.Duration(1-2*rng.IntN(2))
			}
			p.mqtt5 = kind != traffic.Scale && rng.Float64() < r.cfg.MQTT5
			plans = append(plans, p)
		}
		if err := e.Start(ctx); err != nil {
			return err
		}
		transports := map[string]int{}
		for _, p := range plans {
			bday := day
			if p.late {
				bday = time.Now().UTC().AddDate(0, 0, -r.cfg.LateDays).Format(time.DateOnly)
			}
			d := &device{id: p.id, edge: e, rng: rand.New(rand.NewPCG(seed, hash(p.id))), batch: 1, hold: p.late,
				gen: traffic.New(traffic.Options{Seed: seed, Store: id, Device: p.id, Kind: p.kind, Currency: currency,
					TaxIncluded: incl, BusinessDay: bday, Skew: p.skew, DuplicateTxn: r.cfg.DuplicateTxn})}
			// Tills and sensors speak MQTT (3.1.1 or 5), sensors in CBOR;
			// the scale posts batches over HTTP.
			d.cbor = p.kind == traffic.Sensor
			switch {
			case p.kind == traffic.Scale:
				d.sender, d.batch = fleet.NewHTTPSender(e.HTTP, p.id, p.secret), r.cfg.BatchMax
			case p.mqtt5:
				d.sender, err = fleet.NewMQTT5Sender(e.MQTT, p.id, p.secret)
			default:
				d.sender, err = fleet.DialMQTT(e.MQTT, p.id, p.secret)
			}
			if err != nil {
				return err
			}
			r.devices = append(r.devices, d)
			transports[fleet.String(d.sender)]++
		}
		note := ""
		if quota > 0 {
			note = fmt.Sprintf(", telemetry quota %d bytes", quota)
		}
		var ts []string
		for _, t := range []string{"MQTT 3.1.1", "MQTT 5", "HTTP"} {
			if n := transports[t]; n > 0 {
				ts = append(ts, fmt.Sprintf("%d %s", n, t))
			}
		}
		r.printf("edge %s: enrolled; devices %s; status http://%s/v1/status%s", id, strings.Join(ts, ", "), e.Status, note)
	}
	return nil
}

// storeZones are the stores' time zones, in turn: the by-hour report's
// hours are local to them.
var storeZones = []string{"Europe/Berlin", "America/New_York", "Asia/Tokyo"}

func hash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func (r *run) noteLimit() { r.limitOnce.Do(func() { close(r.trafficEnd) }) }

// traffic runs the devices and the fault schedule until the duration or
// the event count is reached, then heals every fault and waits for the
// devices' last sends (their Z reports) to be acknowledged.
func (r *run) traffic(ctx context.Context) error {
	what := fmt.Sprintf("for %s", r.cfg.Duration)
	if r.cfg.OTA != nil && r.cfg.Duration == 0 {
		what = "until the OTA rollouts are done"
	}
	if r.cfg.Events > 0 {
		what = fmt.Sprintf("until %d events", r.cfg.Events)
		if r.cfg.Duration > 0 {
			what += fmt.Sprintf(" or %s", r.cfg.Duration)
		}
	}
	r.printf("traffic: %d stores × %d devices at %.3g events/s each, %s; faults: %s", r.cfg.Stores, r.cfg.Devices, r.cfg.Rate, what, scheduleText(r.cfg.Faults))

	// The devices' last sends after the traffic ends are bounded, so that
	// an edge that never comes back cannot hang the run.
	devCtx, stopDevices := context.WithCancel(ctx)
	defer stopDevices()
	var devs sync.WaitGroup
	devsDone := make(chan struct{})
	for _, d := range r.devices {
		devs.Add(1)
		go func() {
			defer devs.Done()
			r.runDevice(devCtx, d, r.trafficEnd)
		}()
	}
	go func() { devs.Wait(); close(devsDone) }()
	faultsDone := make(chan struct{})
	go func() { defer close(faultsDone); r.schedule(ctx) }()
	otaDone := make(chan struct{})
	if r.cfg.OTA != nil {
		go func() { defer close(otaDone); r.otaPlan(ctx) }()
	} else {
		close(otaDone)
	}

	var timeout <-chan time.Time
	if r.cfg.Duration > 0 {
		t := time.NewTimer(r.cfg.Duration)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
	case <-timeout:
		r.noteLimit()
	case <-r.trafficEnd:
	}
	<-faultsDone // heals what is in force, restarts what is down
	<-otaDone
	if ctx.Err() != nil {
		devs.Wait()
		return ctx.Err()
	}
	r.printf("traffic: done after %s; faults healed; tills closing the day", time.Since(r.start).Round(100*time.Millisecond))
	t := time.NewTimer(r.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-devsDone:
	case <-t.C:
		stopDevices()
		<-devsDone
		return fmt.Errorf("devices still had unacknowledged events %s after the traffic ended; see the logs in %s", r.cfg.DrainTimeout, r.path("logs"))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.trafficTime = time.Since(r.start)
	return nil
}

// drain waits until every edge's outbox is acknowledged up to its head.
func (r *run) drain(ctx context.Context) error {
	r.printf("drain: waiting for every edge's outbox to be acknowledged by the cloud")
	t0 := time.Now()
	defer func() { r.drained = time.Since(t0) }()
	deadline := t0.Add(r.cfg.DrainTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		left := 0
		var last string
		for _, e := range r.edges {
			st, err := e.State(ctx)
			if err != nil || !st.Drained() {
				left++
				last = fmt.Sprintf("edge %s: %+v %v", e.ID(), st, err)
			}
		}
		if left == 0 {
			r.printf("drain: done in %s", time.Since(t0).Round(10*time.Millisecond))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d edges not drained after %s (%s); see the logs in %s", left, r.cfg.DrainTimeout, last, r.path("logs"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// finish saves the oracle, verifies and reports.
func (r *run) finish(ctx context.Context) (*Report, error) {
	entries := r.oracle.Entries()
	if err := oracle.Save(r.path("oracle.jsonl"), entries); err != nil {
		return nil, err
	}
	r.printf("verify: reading the ledger back from %s", r.cloud.API)
	// Only this run's streams: the database may hold earlier runs'.
	cl := &verify.Client{URL: r.cloud.API, Token: r.cloud.AdminToken, Since: r.out.start}
	led, err := cl.Ledger(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the ledger: %w", err)
	}
	v := verify.Check(led, entries, verify.Options{})
	r.printf("verify: reading the reports back")
	if err := cl.CheckReports(ctx, led, v, StoreIDs(r.cfg.Stores), verify.Options{}); err != nil {
		return nil, fmt.Errorf("read the reports: %w", err)
	}
	rep := r.report(ctx, led, v, entries, r.drained)
	r.mu.Lock()
	rep.OTA = r.otaResult
	r.mu.Unlock()
	if rep.OTA != nil && len(rep.OTA.Problems) > 0 {
		rep.Verdict.OK = false
	}
	path := r.cfg.ReportPath
	if path == "" {
		path = r.path("report.json")
	}
	if path != "-" {
		if err := rep.Save(path); err != nil {
			return rep, err
		}
		rep.Path = path
	}
	rep.Print(r.cfg.Out)
	return rep, nil
}

// teardown stops everything the run started, and removes the data it
// made unless Keep.
func (r *run) teardown() {
	for _, d := range r.devices {
		if d.sender != nil {
			d.sender.Close()
		}
	}
	var wg sync.WaitGroup
	for _, e := range r.edges {
		wg.Add(1)
		go func() { defer wg.Done(); e.Stop() }()
	}
	wg.Wait()
	if r.cloud != nil {
		r.cloud.Stop()
	}
	for _, l := range r.links {
		l.Close()
	}
	if !r.cfg.Keep {
		_ = os.RemoveAll(r.path("edges"))
		_ = os.RemoveAll(r.path("cloud"))
		_ = os.RemoveAll(r.path("bin"))
	}
}

var errNoEdge = errors.New("no such edge")

func (r *run) edge(id string) (*fleet.Edge, *fault.Link, error) {
	for i, e := range r.edges {
		if e.ID() == id {
			return e, r.links[i], nil
		}
	}
	return nil, nil, fmt.Errorf("%w: %s", errNoEdge, id)
}
