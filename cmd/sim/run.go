package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/outpost-edge/outpost/internal/flagenv"
	"github.com/outpost-edge/outpost/internal/pgcluster"
	"github.com/outpost-edge/outpost/simulator"
	"github.com/outpost-edge/outpost/simulator/fault"
	"github.com/outpost-edge/outpost/simulator/fleet"
	"github.com/outpost-edge/outpost/simulator/ota"
)

// envPrefix is the prefix of the environment variables sim reads its
// flags from.
const envPrefix = "OUTPOST_SIM_"

// Options are `sim run`'s flags.
type Options struct {
	Scenario       string
	Transport      string
	Dir            string
	BinDir         string
	DatabaseURL    string
	Stores         int
	Devices        int
	Rate           float64
	TotalRate      float64
	Duration       time.Duration
	Events         int
	Seed           uint64
	Faults         string
	FaultGap       time.Duration
	QuotaEdges     int
	TelemetryQuota int64
	Retransmit     float64
	Duplicate      float64
	LateTills      int
	LateDays       int
	DuplicateTxn   float64
	Skewed         float64
	MQTT5          float64
	AckTimeout     time.Duration
	DrainTimeout   time.Duration
	Report         string
	ProgressEvery  time.Duration
	Quiet          bool
	Hold           string
	Keep           bool
	Config         string
	// The OTA scenario's.
	Bad       string
	Offline   float64
	Probation time.Duration
}

// Main is `sim run`.
type Main struct {
	Opts   Options
	stdout io.Writer
	stderr io.Writer

	// Report is the last run's report, once Run returns.
	Report *simulator.Report
	// AfterVerdict, when not nil, is called after the verdict while the
	// fleet still runs (before any --hold); tests use it.
	AfterVerdict func(ctx context.Context, r *simulator.Report)

	set     map[string]bool // flags given (command line, environment or file)
	pg      *pgcluster.Cluster
	tempDir bool
}

// NewMain returns a Main with defaults.
func NewMain(stdout, stderr io.Writer) *Main {
	return &Main{stdout: stdout, stderr: stderr}
}

// ParseFlags parses `sim run` flags, OUTPOST_SIM_* variables and --config.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("sim run", flag.ContinueOnError)
	fs.SetOutput(m.stderr)
	o := &m.Opts
	fs.StringVar(&o.Scenario, "scenario", "", "preset: demo (3 stores × 4 devices, 1 minute, an uplink outage and an edge crash), soak (every fault type in turns, a small telemetry quota) or ota (edges under edge supervise: a good release rolled out in stages, then a bad one with a fifth of the edges offline; --bad); flags given as well override it")
	fs.StringVar(&o.Transport, "transport", "mqtt", "the edges' uplink to the cloud: mqtt (the cloud's embedded MQTT broker) or nats (the cloud's embedded nats-server with JetStream)")
	fs.StringVar(&o.Dir, "dir", "", "run directory for logs, data, the oracle and the report (default: a new temporary directory)")
	fs.StringVar(&o.BinDir, "bin-dir", "", "directory holding the edge and cloud programs (default: next to this program, else built from the source around the working directory)")
	fs.StringVar(&o.DatabaseURL, "database-url", "", "the cloud's Postgres, also read from OUTPOST_DATABASE_URL (default: a private Postgres under --dir, from the PostgreSQL server binaries)")
	fs.IntVar(&o.Stores, "stores", 3, "stores, each with an edge")
	fs.IntVar(&o.Devices, "devices", 4, "devices per store: a till, a scale, a sensor, a second till, then tills and sensors in turn")
	fs.Float64Var(&o.Rate, "rate", 2, "events per second per device (Poisson arrivals)")
	fs.Float64Var(&o.TotalRate, "total-rate", 0, "events per second of the whole fleet, shared by its devices (overrides --rate)")
	fs.DurationVar(&o.Duration, "duration", time.Minute, "how long the devices send (0 with --events: until the count)")
	fs.IntVar(&o.Events, "events", 0, "stop the traffic after this many events (0: by --duration only)")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the traffic, the devices' choices and the soak schedule")
	fs.StringVar(&o.Faults, "faults", "", "fault schedule: kind[:edge]@at[+for],... with kinds cut, blackhole, slow, throttle, edge-kill, cloud-kill (such as cut:shop-2@10s+8s,edge-kill:shop-1@25s); \"soak\": every kind in turns; \"none\"")
	fs.DurationVar(&o.FaultGap, "fault-gap", 30*time.Second, "with --faults soak: time between the starts of two faults")
	fs.IntVar(&o.QuotaEdges, "quota-edges", 0, "how many edges (the last ones) run with --telemetry-quota, so that outages make them shed readings")
	fs.Int64Var(&o.TelemetryQuota, "telemetry-quota", 24<<10, "the small telemetry quota of --quota-edges, in bytes")
	fs.Float64Var(&o.Retransmit, "retransmit", 0.02, "share of acknowledged payloads a device sends again (negative: none)")
	fs.Float64Var(&o.Duplicate, "duplicate", 0.02, "share of payloads a device publishes twice at once (negative: none)")
	fs.IntVar(&o.LateTills, "late-tills", 0, "how many stores (the first ones) have a till that holds its events of a business day --late-days ago and sends them, and its Z report, only after the traffic")
	fs.IntVar(&o.LateDays, "late-days", 7, "how many days before the run's the business day of --late-tills is")
	fs.Float64Var(&o.DuplicateTxn, "duplicate-txn", 0, "share of a till's events that resend a recent sale under a new event id (same store, terminal, day, txn), 0 to 0.5")
	fs.Float64Var(&o.Skewed, "skewed", 0.25, "share of devices whose clock is off by hours or days (negative: none)")
	fs.Float64Var(&o.MQTT5, "mqtt5", 0.3, "share of the MQTT devices (tills, sensors) that speak MQTT 5 rather than 3.1.1 (negative: none)")
	fs.DurationVar(&o.AckTimeout, "ack-timeout", 5*time.Second, "how long a device waits for its edge's acknowledgement before sending again")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", 3*time.Minute, "how long to wait, after the traffic, for the edges to drain")
	fs.StringVar(&o.Report, "report", "", "write the JSON report here (default <dir>/report.json)")
	fs.DurationVar(&o.ProgressEvery, "progress-every", 0, "live progress on stderr this often (default 1s on a terminal, else 5s)")
	fs.BoolVar(&o.Quiet, "quiet", false, "no live progress")
	fs.StringVar(&o.Hold, "hold", "auto", "after the verdict keep the fleet running until Enter (or Ctrl-C), to look around: yes, no, or auto (yes when stdin is a terminal)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the edges', the cloud's and Postgres's data in --dir (default: keep only logs, oracle and report)")
	fs.StringVar(&o.Bad, "bad", "late-health", "with --scenario ota: how the bad release fails: panic (at start), hang (before it is ready) or late-health (its outbox stops committing after three healthy checks)")
	fs.Float64Var(&o.Offline, "offline", 0.2, "with --scenario ota: the share of edges offline during the bad release's rollout (at least one)")
	fs.DurationVar(&o.Probation, "probation", 10*time.Second, "with --scenario ota: the edges' edge supervise --probation")
	fs.StringVar(&o.Config, "config", "", "optional config file of `name = value` lines (names are the flag names)")
	fs.Usage = flagenv.Usage(fs, envPrefix, "Usage: sim run [flags]\n\nRuns a fleet under faults and verifies the cloud's ledger against what the devices sent.\nExit status: 0 when the verdict passes, 1 when it fails or the run could not be carried out.")
	if err := flagenv.Parse(fs, args, envPrefix, "config"); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("sim run takes no arguments, got %q", fs.Args())
	}
	m.set = flagsGiven(fs)
	if o.DatabaseURL == "" {
		o.DatabaseURL = os.Getenv("OUTPOST_DATABASE_URL")
	}
	return m.applyScenario()
}

// applyScenario sets the scenario's values of the flags not given.
func (m *Main) applyScenario() error {
	o := &m.Opts
	def := func(name string, set func()) {
		if !m.set[name] {
			set()
		}
	}
	switch o.Scenario {
	case "":
	case "demo":
		def("stores", func() { o.Stores = 3 })
		def("devices", func() { o.Devices = 4 })
		def("rate", func() { o.Rate = 3 })
		def("duration", func() { o.Duration = time.Minute })
		def("faults", func() { o.Faults = "cut:shop-2@12s+15s,edge-kill:shop-1@34s+1s" })
	case "soak":
		def("stores", func() { o.Stores = 3 })
		def("devices", func() { o.Devices = 6 })
		def("rate", func() { o.Rate = 5 })
		def("duration", func() { o.Duration = 10 * time.Minute })
		def("faults", func() { o.Faults = "soak" })
		def("quota-edges", func() { o.QuotaEdges = 1 })
		def("telemetry-quota", func() { o.TelemetryQuota = 16 << 10 })
		def("retransmit", func() { o.Retransmit = 0.03 })
		def("duplicate", func() { o.Duplicate = 0.03 })
	case "ota":
		def("stores", func() { o.Stores = 10 })
		def("devices", func() { o.Devices = 2 })
		def("rate", func() { o.Rate = 1 })
		// The traffic lasts as long as the rollouts.
		def("duration", func() { o.Duration = 0 })
	default:
		return usagef("--scenario %q: want demo, soak or ota", o.Scenario)
	}
	if o.Scenario == "ota" {
		if _, ok := ota.Bad[o.Bad]; !ok {
			return usagef("--bad %q: want panic, hang or late-health", o.Bad)
		}
		if o.Offline <= 0 || o.Offline >= 1 {
			return usagef("--offline %v: want a share between 0 and 1", o.Offline)
		}
		if o.Stores < 3 {
			return usagef("--scenario ota needs at least 3 stores (an edge offline, and the bad release stopped before the others), got %d", o.Stores)
		}
	}
	if o.TotalRate > 0 && o.Stores > 0 && o.Devices > 0 {
		o.Rate = o.TotalRate / float64(o.Stores*o.Devices)
	}
	switch o.Transport {
	case "mqtt", "nats":
	default:
		return usagef("--transport %q: want mqtt or nats", o.Transport)
	}
	switch o.Hold {
	case "auto", "yes", "no":
	default:
		return usagef("--hold %q: want yes, no or auto", o.Hold)
	}
	return nil
}

// faults returns the fault schedule.
func (m *Main) faults() ([]fault.Fault, error) {
	o := &m.Opts
	switch o.Faults {
	case "", "none":
		return nil, nil
	case "soak":
		return fault.Soak(o.Seed, o.Duration, simulator.StoreIDs(o.Stores), o.FaultGap), nil
	}
	fs, err := fault.Parse(o.Faults)
	if err != nil {
		return nil, usagef("--faults: %w", err)
	}
	return fs, nil
}

// Run runs the simulation and prints the verdict. It returns errFailed
// when the verdict fails.
func (m *Main) Run(ctx context.Context) error {
	o := &m.Opts
	faults, err := m.faults()
	if err != nil {
		return err
	}
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "outpost-sim-"); err != nil {
			return err
		}
		m.tempDir = true
	} else if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return err
	}
	// Postgres may run as another user (when this runs as root): it must
	// be able to reach its directory under this one.
	_ = os.Chmod(o.Dir, 0o755)
	fmt.Fprintf(m.stdout, "Outpost simulator: run directory %s\n", o.Dir)

	dbURL := o.DatabaseURL
	if dbURL == "" {
		fmt.Fprintf(m.stdout, "starting a private Postgres under %s (no --database-url or OUTPOST_DATABASE_URL)\n", filepath.Join(o.Dir, "pg"))
		m.pg, err = pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(o.Dir, "pg")})
		if err != nil {
			return fmt.Errorf("private Postgres: %w", err)
		}
		if err := m.pg.CreateDatabase(ctx, "outpost"); err != nil {
			return err
		}
		dbURL = m.pg.URL("outpost")
	}

	progress := io.Writer(m.stderr)
	tty := isTerminal(m.stderr)
	if o.Quiet {
		progress = nil
	}
	every := o.ProgressEvery
	if every == 0 {
		every = time.Second
		if !tty {
			every = 5 * time.Second
		}
	}
	hold := o.Hold == "yes" || o.Hold == "auto" && isTerminal(os.Stdin) && isTerminal(m.stdout)
	cfg := simulator.Config{
		Dir: o.Dir, BinDir: o.BinDir, DatabaseURL: dbURL, Transport: o.Transport,
		Stores: o.Stores, Devices: o.Devices, Rate: o.Rate, Duration: o.Duration, Events: o.Events, Seed: o.Seed,
		Faults: faults, QuotaEdges: o.QuotaEdges, TelemetryQuota: o.TelemetryQuota,
		Retransmit: o.Retransmit, Duplicate: o.Duplicate, Skewed: o.Skewed, MQTT5: o.MQTT5,
		LateTills: o.LateTills, LateDays: o.LateDays, DuplicateTxn: o.DuplicateTxn,
		AckTimeout: o.AckTimeout, DrainTimeout: o.DrainTimeout,
		Progress: progress, ProgressEvery: every, TTY: tty, Out: m.stdout, ReportPath: o.Report, Keep: o.Keep,
		Hold: func(ctx context.Context, r *simulator.Report) {
			if m.AfterVerdict != nil {
				m.AfterVerdict(ctx, r)
			}
			m.whereNext(r, hold)
			if hold {
				waitEnter(ctx)
			}
		},
	}
	if o.Scenario == "ota" {
		cfg.OTA = &simulator.OTA{Bad: o.Bad, Supervise: fleet.Supervise{Probation: o.Probation, ReadyTimeout: 15 * time.Second},
			Plan: ota.Plan{Offline: o.Offline}}
	}
	rep, err := simulator.Run(ctx, cfg)
	m.Report = rep
	if err != nil {
		return err
	}
	if !rep.Verdict.OK {
		return errFailed
	}
	return nil
}

// whereNext tells a person where to look: the API with the token the run
// made, an edge's status, the logs and the report.
func (m *Main) whereNext(r *simulator.Report, hold bool) {
	w := m.stdout
	fmt.Fprintln(w)
	if hold {
		fmt.Fprintln(w, "Where to look next. The fleet is still running so that you can look around; press Enter (or Ctrl-C) to stop it and clean up.")
	} else {
		fmt.Fprintln(w, "Where to look next. The fleet stops now; with --hold yes it keeps running after the verdict, for these:")
	}
	epoch := "EPOCH"
	for _, s := range r.Streams {
		if s.Edge == "shop-1" {
			epoch = s.Epoch
			break
		}
	}
	fmt.Fprintf(w, "  export CLOUD=%s TOKEN=%s   # the cloud's API and the admin token this run made\n", r.API, r.AdminToken)
	fmt.Fprintln(w, `  curl -H "Authorization: Bearer $TOKEN" $CLOUD/v1/streams                      # every edge's stream: watermark, lag`)
	fmt.Fprintln(w, `  curl -H "Authorization: Bearer $TOKEN" "$CLOUD/v1/events?type=till.closed"    # the Z reports, as JSON`)
	fmt.Fprintln(w, `  curl -H "Authorization: Bearer $TOKEN" -H "Accept: text/csv" $CLOUD/v1/reports/sales   # the sales summary per store and day`)
	fmt.Fprintln(w, `  curl -H "Authorization: Bearer $TOKEN" $CLOUD/v1/reports/reconciliation   # each till day against its Z report`)
	fmt.Fprintf(w, "  curl -H \"Authorization: Bearer $TOKEN\" \"$CLOUD/v1/streams/shop-1/%s/records?limit=5\"   # raw records, signed checkpoints\n", epoch)
	fmt.Fprintf(w, "  bin/sim verify --cloud $CLOUD --token $TOKEN --oracle %s --since %s   # verify again\n",
		filepath.Join(r.Dir, "oracle.jsonl"), r.Started.UTC().Format(time.RFC3339Nano))
	if o := r.OTA; o != nil {
		for _, ro := range []*ota.Rollout{o.Good, o.Bad} {
			if ro != nil {
				fmt.Fprintf(w, "  curl -H \"Authorization: Bearer $TOKEN\" $CLOUD/v1/rollouts/%s   # the rollout of %s: stages, every edge's state (the Fleet page shows it too)\n", ro.ID, ro.Release)
			}
		}
	}
	fmt.Fprintf(w, "  logs in %s, the JSON report in %s; the API is described in docs/API.md\n", filepath.Join(r.Dir, "logs"), r.Path)
	fmt.Fprintln(w, r.BackOffice())
}

// waitEnter returns when a line is read from stdin or ctx ends.
func waitEnter(ctx context.Context) {
	line := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(line)
	}()
	select {
	case <-ctx.Done():
	case <-line:
	}
}

// Close stops the private Postgres and removes its data unless --keep.
func (m *Main) Close() error {
	var err error
	if m.pg != nil {
		err = m.pg.Stop()
		if !m.Opts.Keep {
			_ = os.RemoveAll(filepath.Join(m.Opts.Dir, "pg"))
		}
		m.pg = nil
	}
	return err
}

// flagsGiven are the flags of fs given on the command line, in the
// environment or in the config file (flagenv.Parse applies all three), so
// that a scenario fills in only the others.
func flagsGiven(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := os.LookupEnv(flagenv.EnvName(envPrefix, f.Name)); ok {
			set[f.Name] = true
		}
	})
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}
