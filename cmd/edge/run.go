package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/internal/flagenv"
	"github.com/outpost-edge/outpost/internal/sdnotify"
	"github.com/outpost-edge/outpost/protocol"
)

// Version is the software version reported in hellos and status.
var Version = "0.1.0-dev"

// Commit is the source commit of the build, stamped by make release
// (-ldflags "-X main.Commit=...").
var Commit = "unknown"

// helloAgent is what the hello reports as the edge's software (signed
// with the rest of the hello): "outpost-edge/VERSION (GOOS/GOARCH[/vN])",
// so the cloud knows each edge's version and architecture.
func helloAgent() string {
	arch := runtime.GOOS + "/" + runtime.GOARCH
	if bi, ok := debug.ReadBuildInfo(); ok && runtime.GOARCH == "arm" {
		for _, st := range bi.Settings {
			if st.Key == "GOARM" && st.Value != "" {
				arch += "/v" + strings.TrimSuffix(st.Value, ",softfloat")
			}
		}
	}
	return "outpost-edge/" + Version + " (" + arch + ")"
}

// Config is what `edge run` is told by its flags.
type Config struct {
	DataDir        string
	EdgeID         string
	CloudKey       string
	CloudMQTT      string
	CloudPassword  string
	CloudMQTTCA    string
	CloudMQTTCert  string
	CloudMQTTKey   string
	MQTTListen     string
	HTTPListen     string
	StatusListen   string
	Devices        string
	LedgerQuota    int64
	TelemetryQuota int64
	MaxFileBytes   int64
	DedupWindow    time.Duration
	Retain         time.Duration
	Window         int
	SegmentBytes   int
	Compress       bool
	RateBytes      int
	AckTimeout     time.Duration
	ReconnectMax   time.Duration
	LogLevel       string
	LogFormat      string
	Config         string
	NATS           natsConfig
	OTARepo        string
}

func dataDirFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "data-dir", ".outpost/edge", "directory of the outbox, the edge key, the enrollment and the device credentials")
}

// Main is `edge run`.
type Main struct {
	Config Config
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger

	Ready chan struct{} // closed once every listener is up

	ob         *outbox.Outbox
	in         *intake.Server
	up         *uplink.Uplink
	cmds       *commander // with --ota-repo
	statusAddr string
}

// NewMain returns a Main with defaults.
func NewMain(stdout, stderr io.Writer) *Main {
	return &Main{stdout: stdout, stderr: stderr, Ready: make(chan struct{})}
}

// ParseFlags parses `edge run` flags, OUTPOST_* variables and --config.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("edge run", flag.ContinueOnError)
	fs.SetOutput(m.stderr)
	c := &m.Config
	dataDirFlag(fs, &c.DataDir)
	fs.StringVar(&c.EdgeID, "edge-id", "", "this edge's id (default: the id stored by 'edge enroll')")
	fs.StringVar(&c.CloudKey, "cloud-key", "", "pin the cloud's Ed25519 public key, hex (default: the key stored by 'edge enroll')")
	fs.StringVar(&c.CloudMQTT, "cloud-mqtt", "", "the cloud's MQTT broker, such as tcp://cloud.example:18830 (empty: no uplink, events wait in the outbox)")
	fs.StringVar(&c.CloudPassword, "cloud-password", "", "static MQTT password for the cloud broker (default: a fresh signature by the edge key)")
	fs.StringVar(&c.CloudMQTTCA, "cloud-mqtt-ca", "", "PEM file of the CAs that sign the cloud broker's certificate (default: the system's roots; use an ssl:// --cloud-mqtt)")
	fs.StringVar(&c.CloudMQTTCert, "cloud-mqtt-cert", "", "client certificate (PEM) for a cloud broker that requires one")
	fs.StringVar(&c.CloudMQTTKey, "cloud-mqtt-key", "", "key of --cloud-mqtt-cert (PEM)")
	natsFlags(fs, &c.NATS)
	fs.StringVar(&c.MQTTListen, "mqtt-listen", ":1883", "address devices publish to over MQTT")
	fs.StringVar(&c.HTTPListen, "http-listen", ":8081", "address of the devices' HTTP intake, POST /v1/events (empty: none)")
	fs.StringVar(&c.StatusListen, "status-listen", "127.0.0.1:8082", "address of /v1/status, /metrics and /healthz")
	fs.StringVar(&c.Devices, "devices", "", "device credentials file (default <data-dir>/devices.json; manage with 'edge devices')")
	// Sizes take units (1GiB, 256MiB); every number is range-checked
	// (flagenv), so a bad value stops start-up naming the flag and the range.
	flagenv.BytesVar(fs, &c.LedgerQuota, "ledger-quota", outbox.DefaultLedgerQuota, flagenv.Range{Min: 1}, "bytes of ledger records the outbox may hold, such as 1GiB; beyond, new ledger events are refused")
	flagenv.BytesVar(fs, &c.TelemetryQuota, "telemetry-quota", outbox.DefaultTelemetryQuota, flagenv.Range{Min: 1}, "bytes of telemetry records, such as 256MiB; beyond, the oldest are shed to tombstones")
	flagenv.BytesVar(fs, &c.MaxFileBytes, "max-file-bytes", 0, flagenv.Range{Min: 1 << 20, Zero: "no cap"}, "cap on the outbox file, such as 4GiB; reaching it (or starting above it) acts like a full disk: drain-only (0: no cap)")
	flagenv.DurationVar(fs, &c.DedupWindow, "dedup-window", outbox.DefaultDedupWindow, flagenv.Durations(time.Second, 0, ""), "how long a (device, id) is remembered for deduplication")
	flagenv.DurationVar(fs, &c.Retain, "retain", 0, flagenv.Durations(0, 0, ""), "keep acknowledged records this long, for local reports and to resend them to a cloud restored from an older backup (docs/OPERATIONS.md)")
	flagenv.IntVar(fs, &c.Window, "window", 8, flagenv.Range{Min: 1, Max: 1024}, "uplink: segments in flight")
	flagenv.BytesVar(fs, &c.SegmentBytes, "segment-bytes", 256<<10, flagenv.Range{Min: 4 << 10, Max: protocol.MaxSegmentBytes}, "uplink: largest segment, such as 256KiB (a segment always holds at least one commit group)")
	fs.BoolVar(&c.Compress, "compress", false, "uplink: zstd-compress segments")
	flagenv.BytesVar(fs, &c.RateBytes, "rate-bytes", 0, flagenv.Range{Min: 1 << 10, Zero: "none"}, "uplink: cap in bytes per second for thin links, such as 64KiB (0: none)")
	flagenv.DurationVar(fs, &c.AckTimeout, "ack-timeout", 30*time.Second, flagenv.Durations(100*time.Millisecond, 0, ""), "uplink: ask the cloud where it stands (a hello) when no receipt arrives for this long after the broker took a segment; resend only if its watermark has not moved (the wait doubles up to 8 times this while the cloud is behind but moving; docs/TRANSPORTS.md)")
	flagenv.DurationVar(fs, &c.ReconnectMax, "reconnect-max", 15*time.Second, flagenv.Durations(100*time.Millisecond, 0, ""), "uplink: longest wait between reconnect attempts (exponential backoff with full jitter up to this); it bounds how long a restored link stays unused")
	fs.StringVar(&c.OTARepo, "ota-repo", "", "the cloud's release repository, such as http://cloud.example:8080/v1/ota/repo: act on the cloud's signed ota.assign and ota.cancel commands (install the assigned release in the background, on probation; docs/OTA.md). Needs an uplink and 'edge ota init'")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.Config, "config", "", "optional config file of 'name = value' lines (names are the flag names)")
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: edge run [flags]\n\nRuns the edge daemon.")
	return flagenv.Parse(fs, args, "OUTPOST_", "config")
}

func outboxPath(dataDir string) string { return filepath.Join(dataDir, "outbox.db") }

// Run starts the daemon and blocks until ctx ends, then shuts down in
// order: stop intake (finishing appends in flight), stop the uplink, close
// the outbox.
func (m *Main) Run(ctx context.Context) error {
	c := &m.Config
	log, err := cli.NewLogger(m.stderr, c.LogLevel, c.LogFormat)
	if err != nil {
		return err
	}
	m.log = log
	if err := durable.MkdirAll(c.DataDir, 0o700); err != nil {
		return err
	}
	signer, created, err := loadSigner(c.DataDir)
	if err != nil {
		return err
	}
	if created {
		log.Info("created the edge key", "path", keyPath(c.DataDir), "kid", signer.KeyID())
	}
	id, err := loadIdentity(c.DataDir)
	if err != nil {
		return err
	}
	edgeID := c.EdgeID
	if edgeID == "" {
		edgeID = id.Edge
	}
	if edgeID == "" {
		return usagef("no edge id: run `edge enroll --cloud URL --token TOKEN` first, or give --edge-id")
	}
	if err := protocol.ValidateName("edge id", edgeID); err != nil {
		return usagef("%w", err)
	}
	cloudKeyHex, cloudKeyFrom := c.CloudKey, "--cloud-key"
	if cloudKeyHex == "" {
		cloudKeyHex, cloudKeyFrom = id.CloudPublicKey, "cloud_public_key in "+identityPath(c.DataDir)
	}
	if cloudKeyHex != "" {
		// Refused before anything starts: receipts verified under a
		// small-order key could be forged, and trimming on one loses data.
		if _, err := parseKeyHex(cloudKeyFrom, cloudKeyHex); err != nil {
			return err
		}
	}

	m.ob, err = outbox.Open(outboxPath(c.DataDir), outbox.Options{
		Edge: edgeID, Signer: signer, DedupWindow: c.DedupWindow, Retain: c.Retain,
		LedgerQuota: c.LedgerQuota, TelemetryQuota: c.TelemetryQuota, MaxFileBytes: c.MaxFileBytes,
		SegmentBytes: c.SegmentBytes, Logger: log,
	})
	if err != nil {
		return err
	}
	log.Info("outbox open", "path", outboxPath(c.DataDir), "stream", m.ob.Stream().String(), "head", m.ob.State().Head)
	if err := resumeReenter(m.ob, outboxPath(c.DataDir), log); err != nil {
		// The records are in the kept file either way; the alarm and the
		// status point to it. The next start tries again.
		log.Error("entering the lost stream's records again did not finish; they are in the kept file, and the next start tries again", "err", err)
	}

	devices := c.Devices
	if devices == "" {
		devices = filepath.Join(c.DataDir, "devices.json")
	}
	if _, err := os.Stat(devices); errors.Is(err, os.ErrNotExist) {
		log.Warn("no device credentials yet: every device is refused until you add one", "file", devices, "how", "edge devices add --id DEVICE")
	}
	creds, err := intake.OpenCredentials(devices)
	if err != nil {
		return err
	}
	m.in = intake.New(outboxAppender{m.ob}, creds)
	m.in.MQTTAddr, m.in.HTTPAddr, m.in.Logger = c.MQTTListen, c.HTTPListen, log

	work, stopWork := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(work)
	// Every way out of Run, a start-up error included, stops the goroutines
	// of g and waits for them, so that none is left using the outbox that
	// Close is about to close.
	waited := false
	defer func() {
		if !waited {
			stopWork()
			_ = g.Wait()
		}
	}()

	onCommand, err := m.commands(edgeID, cloudKeyHex, cloudKeyFrom)
	if err != nil {
		return err
	}
	tr, cloudURL, err := uplinkTransport(c, edgeID, signer, cloudKeyHex, onCommand, log)
	if err != nil {
		return err
	}
	if tr != nil {
		if cloudKeyHex == "" {
			return usagef("no cloud key to verify receipts with: run `edge enroll`, or pin one with --cloud-key")
		}
		cloudPub, err := parseKeyHex(cloudKeyFrom, cloudKeyHex)
		if err != nil {
			return err
		}
		opts := uplink.Options{
			Transport: tr, Source: outboxSource{ob: m.ob, log: log, path: outboxPath(c.DataDir)}, CloudKeys: protocol.NewKeyMap(cloudPub),
			Window: c.Window, MaxSegmentBytes: c.SegmentBytes, Compress: c.Compress, RateBytes: c.RateBytes,
			AckTimeout: c.AckTimeout, BackoffMax: c.ReconnectMax, Agent: helloAgent(), Logger: log,
		}
		if m.cmds != nil {
			opts.Cmd = m.cmds.lastAccepted
		}
		m.up, err = uplink.New(opts)
		if err != nil {
			return err
		}
		g.Go(func() error { return m.up.Run(gctx) })
		if m.cmds != nil {
			// The gate and the assigner start with the uplink: an
			// assignment persisted before a restart resumes now.
			g.Go(func() error { return m.cmds.run(gctx) })
			assigner := m.cmds.assigner(c.DataDir, c.OTARepo, log)
			g.Go(func() error { return assigner.Run(gctx) })
		}
	} else {
		log.Warn("no --cloud-mqtt or --cloud-nats: running offline; events stay in the outbox until an uplink is configured")
	}

	if err := m.in.Start(ctx); err != nil {
		return err
	}
	g.Go(func() error { return drainOTAEvents(gctx, m.ob, c.DataDir, log) })
	reg := prometheus.NewRegistry()
	m.registerMetrics(reg)
	if err := m.registerOpsMetrics(reg, c); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(m.Status())
	})
	health := &localHealth{ob: m.ob}
	health.fault, health.answered = healthFault(m.ob)
	for _, a := range []string{m.in.MQTTAddrActual(), m.in.HTTPAddrActual()} {
		if a != "" {
			health.addrs = append(health.addrs, a)
		}
	}
	mux.Handle("GET /healthz", health)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", c.StatusListen)
	if err != nil {
		return fmt.Errorf("--status-listen %s: %w", c.StatusListen, err)
	}
	m.statusAddr = ln.Addr().String()
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	log.Info("edge running", "edge", edgeID, "mqtt", m.in.MQTTAddrActual(), "http", m.in.HTTPAddrActual(), "status", m.statusAddr, "cloud", cloudURL)
	close(m.Ready)
	// The watchdog is fed on the full local health check, not a timer.
	// Under systemd (Type=notify, WatchdogSec=) the watchdog is fed only
	// when the full local health check (the one /healthz serves) passes, not
	// on a timer: a release whose outbox stops committing, whose intake
	// stops listening, or that hangs is restarted by systemd, and the unit's
	// guard counts that start while it is on probation.
	if watchdog := sdnotify.Ready(func() error { return health.check(gctx) }, log); watchdog != nil {
		g.Go(func() error { return watchdog(gctx) })
	}
	startOTAProbation(gctx, g, c.DataDir, m.statusAddr, log)

	select {
	case <-ctx.Done():
		log.Info("shutting down: stopping intake, finishing the group commit")
	case <-gctx.Done():
	}
	// Intake first, so nothing is acknowledged that is not stored; then the
	// uplink; the outbox is closed by Close after both.
	ierr := m.in.Close()
	m.in = nil
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	stopWork()
	err = g.Wait()
	waited = true
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return errors.Join(err, ierr)
}

// commands sets up the command channel of --ota-repo (m.cmds) and returns
// the transport's OnCommand; nil, nil without the flag.
func (m *Main) commands(edgeID, cloudKeyHex, cloudKeyFrom string) (func([]byte), error) {
	c := &m.Config
	if c.OTARepo == "" {
		return nil, nil
	}
	if cloudKeyHex == "" {
		return nil, usagef("--ota-repo: no cloud key to verify commands with: run `edge enroll`, or pin one with --cloud-key")
	}
	if c.CloudMQTT == "" && c.NATS.URL == "" {
		return nil, usagef("--ota-repo needs an uplink (--cloud-mqtt or --cloud-nats): the cloud's assignments arrive on it")
	}
	cloudPub, err := parseKeyHex(cloudKeyFrom, cloudKeyHex)
	if err != nil {
		return nil, err
	}
	m.cmds = newCommander(c.DataDir, edgeID, protocol.NewKeyMap(cloudPub), m.log)
	m.log.Info("acting on the cloud's OTA commands", "repo", c.OTARepo, "ota_dir", otaDirFor(c.DataDir))
	return m.cmds.offer, nil
}

// Close releases what Run opened.
func (m *Main) Close() error {
	var errs []error
	if m.in != nil {
		errs = append(errs, m.in.Close())
	}
	if m.ob != nil {
		errs = append(errs, m.ob.Close())
		m.ob = nil
	}
	return errors.Join(errs...)
}

// MQTTAddr, HTTPAddr and StatusAddr are the listeners' addresses once Ready is closed.
func (m *Main) MQTTAddr() string   { return m.in.MQTTAddrActual() }
func (m *Main) HTTPAddr() string   { return m.in.HTTPAddrActual() }
func (m *Main) StatusAddr() string { return m.statusAddr }

// Status is the JSON of GET /v1/status and `edge status`.
type Status struct {
	Version         string `json:"version"`
	Edge            string `json:"edge"`
	Epoch           string `json:"epoch"`
	NextSeq         uint64 `json:"next_seq"`
	AckedHWM        uint64 `json:"acked_hwm"`
	Backlog         uint64 `json:"backlog"`
	BacklogBytes    int64  `json:"backlog_bytes"`
	OldestUnsentAge string `json:"oldest_unsent_age"`
	LedgerBytes     int64  `json:"ledger_bytes"`
	LedgerQuota     int64  `json:"ledger_quota"`
	TelemetryBytes  int64  `json:"telemetry_bytes"`
	TelemetryQuota  int64  `json:"telemetry_quota"`
	Shed            uint64 `json:"shed"`
	DrainOnly       bool   `json:"drain_only"`
	// StuckOutboxes are files of earlier epochs kept after the cloud was
	// found past them (a restored outbox); an operator reconciles and
	// removes them (docs/OPERATIONS.md).
	StuckOutboxes []string      `json:"stuck_outboxes,omitempty"`
	EpochRestarts uint64        `json:"epoch_restarts,omitempty"`
	DiskFreeBytes int64         `json:"disk_free_bytes"`
	Uplink        *uplink.Stats `json:"uplink,omitempty"`
	Intake        intakeStatus  `json:"intake"`

	// OTA is the updater's state (docs/OTA.md), when there is one.
	OTA *otaStatusJSON `json:"ota,omitempty"`
}

type intakeStatus struct {
	Published uint64 `json:"published"`
	Events    uint64 `json:"events"`
	Acked     uint64 `json:"acked"`
	QoS0      uint64 `json:"qos0"`
	Dups      uint64 `json:"duplicates"`
	Rejected  uint64 `json:"rejected_kept"`
}

// Status returns the daemon's state.
func (m *Main) Status() Status {
	st := m.ob.State()
	s := Status{
		Version: Version, Edge: st.Stream.Edge, Epoch: st.Stream.Epoch.String(), NextSeq: st.Head + 1,
		AckedHWM: st.HWM, Backlog: st.Backlog, BacklogBytes: st.BacklogBytes, OldestUnsentAge: st.OldestUnsentAge.Round(time.Millisecond).String(),
		LedgerBytes: st.LedgerBytes, LedgerQuota: st.LedgerQuota, TelemetryBytes: st.TelemetryBytes, TelemetryQuota: st.TelemetryQuota,
		Shed: st.Shed, DrainOnly: st.DrainOnly, DiskFreeBytes: diskFree(m.Config.DataDir),
		StuckOutboxes: m.ob.StuckFiles(), EpochRestarts: st.EpochRestarts,
	}
	if m.up != nil {
		u := m.up.Stats()
		s.Uplink = &u
	}
	s.OTA = otaStatusFor(m.Config.DataDir)
	if s.OTA != nil && m.cmds != nil {
		s.OTA.Assignment, s.OTA.AssignmentError = nil, ""
		if a, err := m.cmds.store.Current(); err != nil {
			s.OTA.AssignmentError = err.Error()
		} else {
			s.OTA.Assignment = a
		}
		st := m.cmds.gate.Stats()
		st.Dropped = m.cmds.dropped.Load()
		s.OTA.Commands = &st
	}
	if m.in != nil {
		im := m.in.Metrics()
		s.Intake = intakeStatus{Published: im.Published.Load(), Events: im.Events.Load(), Acked: im.Acked.Load(),
			QoS0: im.QoS0.Load(), Dups: im.Duplicates.Load(), Rejected: im.RejectedKept.Load()}
	}
	return s
}

func diskFree(dir string) int64 {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return -1
	}
	return int64(fs.Bavail) * int64(fs.Bsize)
}

func (m *Main) registerMetrics(reg *prometheus.Registry) {
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_edge_" + name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_edge_" + name, Help: help}, f))
	}
	gauge("outbox_head_seq", "Last seq stored in the outbox.", func() float64 { return float64(m.ob.State().Head) })
	gauge("outbox_acked_seq", "The cloud's acknowledged watermark.", func() float64 { return float64(m.ob.State().HWM) })
	gauge("outbox_backlog_records", "Records not yet acknowledged by the cloud.", func() float64 { return float64(m.ob.State().Backlog) })
	gauge("outbox_backlog_bytes", "Bytes of records not yet acknowledged.", func() float64 { return float64(m.ob.State().BacklogBytes) })
	gauge("outbox_oldest_unsent_seconds", "Age of the oldest unacknowledged record.", func() float64 { return m.ob.State().OldestUnsentAge.Seconds() })
	gauge("outbox_ledger_bytes", "Stored ledger record bytes.", func() float64 { return float64(m.ob.State().LedgerBytes) })
	gauge("outbox_telemetry_bytes", "Stored telemetry record bytes.", func() float64 { return float64(m.ob.State().TelemetryBytes) })
	gauge("outbox_drain_only", "1 when a full disk stopped appends.", func() float64 {
		if m.ob.State().DrainOnly {
			return 1
		}
		return 0
	})
	counter("outbox_shed_total", "Telemetry records shed to tombstones.", func() float64 { return float64(m.ob.State().Shed) })
	gauge("outbox_stuck_files", "Outbox files of earlier epochs kept after the cloud was found past them (a restored outbox): alarm on > 0.", func() float64 { return float64(m.ob.State().Stuck) })
	counter("outbox_epoch_restarts_total", "New epochs started because the cloud was past the outbox's stream.", func() float64 { return float64(m.ob.State().EpochRestarts) })
	counter("outbox_commits_total", "Group commits since start.", func() float64 { return float64(m.ob.State().Commits) })
	in := func(f func(*intake.Metrics) uint64) func() float64 {
		return func() float64 {
			if m.in == nil {
				return 0
			}
			return float64(f(m.in.Metrics()))
		}
	}
	counter("intake_published_total", "Publishes and HTTP requests from authenticated devices.", in(func(x *intake.Metrics) uint64 { return x.Published.Load() }))
	counter("intake_events_total", "Device events handed to the outbox.", in(func(x *intake.Metrics) uint64 { return x.Events.Load() }))
	counter("intake_acked_total", "Acknowledgements sent after fsync.", in(func(x *intake.Metrics) uint64 { return x.Acked.Load() }))
	counter("intake_qos0_total", "QoS 0 publishes (at most once).", in(func(x *intake.Metrics) uint64 { return x.QoS0.Load() }))
	counter("intake_duplicates_total", "Events already stored within the dedup window.", in(func(x *intake.Metrics) uint64 { return x.Duplicates.Load() }))
	counter("intake_rejected_kept_total", "Refused payloads kept as intake.rejected records.", in(func(x *intake.Metrics) uint64 { return x.RejectedKept.Load() }))
	counter("intake_connect_refused_total", "MQTT CONNECTs refused.", in(func(x *intake.Metrics) uint64 { return x.ConnectRefused.Load() }))
	for _, r := range intake.Reasons() {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "outpost_edge_intake_refused_total", Help: "Publishes, requests or items refused, by reason.",
			ConstLabels: prometheus.Labels{"reason": r.String()},
		}, in(func(x *intake.Metrics) uint64 { return x.Refused(r) })))
	}
	up := func(f func(uplink.Stats) uint64) func() float64 {
		return func() float64 {
			if m.up == nil {
				return 0
			}
			return float64(f(m.up.Stats()))
		}
	}
	counter("uplink_segments_sent_total", "Segments sent to the cloud.", up(func(s uplink.Stats) uint64 { return s.SegmentsSent }))
	counter("uplink_bytes_sent_total", "Segment bytes sent.", up(func(s uplink.Stats) uint64 { return s.BytesSent }))
	counter("uplink_receipts_total", "Receipts that moved the watermark.", up(func(s uplink.Stats) uint64 { return s.Receipts }))
	counter("uplink_nacks_total", "Nacks acted on: bound to a segment this session sent.", up(func(s uplink.Stats) uint64 { return s.Nacks }))
	counter("uplink_ignored_nacks_total", "Nacks ignored: replayed, stale, or about a segment this session did not send.", up(func(s uplink.Stats) uint64 { return s.IgnoredNacks }))
	counter("uplink_forged_replies_total", "Replies ignored: bad signature, beyond the head, or not matching the outbox.", up(func(s uplink.Stats) uint64 { return s.ForgedReplies }))
	counter("uplink_replayed_replies_total", "Receipts ignored for an older watermark.", up(func(s uplink.Stats) uint64 { return s.ReplayedReplies }))
	counter("uplink_sessions_total", "Uplink sessions started.", up(func(s uplink.Stats) uint64 { return s.Sessions }))
	cmd := func(f func(ota.GateStats) uint64) func() float64 {
		return func() float64 {
			if m.cmds == nil {
				return 0
			}
			st := m.cmds.gate.Stats()
			st.Dropped = m.cmds.dropped.Load()
			return float64(f(st))
		}
	}
	for _, d := range []struct {
		name string
		f    func(ota.GateStats) uint64
	}{
		{"accepted", func(s ota.GateStats) uint64 { return s.Accepted }},
		{"redelivered", func(s ota.GateStats) uint64 { return s.Redelivered }},
		{"refused", func(s ota.GateStats) uint64 { return s.Refused }},
		{"refused_unrecorded", func(s ota.GateStats) uint64 { return s.Unrecorded }},
		{"dropped", func(s ota.GateStats) uint64 { return s.Dropped }},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "outpost_edge_ota_commands_total", Help: "Cloud commands by what the edge did with them: accepted; redelivered (already accepted: dropped, no event); refused (refused_unrecorded of them counted but not recorded as events, one a minute per reason); dropped (the queue was full).",
			ConstLabels: prometheus.Labels{"decision": d.name},
		}, cmd(d.f)))
	}
	gauge("uplink_connected", "1 when the uplink has a session.", func() float64 {
		if m.up != nil && m.up.Stats().Connected {
			return 1
		}
		return 0
	})
}

// outboxSource adapts the outbox to uplink.Source.
type outboxSource struct {
	ob   *outbox.Outbox
	log  *slog.Logger // nil: slog.Default()
	path string       // the outbox file, for the re-entry marker (empty: none)
}

func (s outboxSource) Stream() protocol.Stream { return s.ob.Stream() }
func (s outboxSource) LastSeq() uint64         { return s.ob.State().Head }
func (s outboxSource) AckedSeq() uint64        { return s.ob.State().HWM }
func (s outboxSource) Segment(from uint64, maxBytes int) (*protocol.Segment, error) {
	return s.ob.Segment(from, maxBytes)
}
func (s outboxSource) Trim(r protocol.Receipt) error { return s.ob.Trim(r) }
func (s outboxSource) Changed() <-chan struct{}      { return s.ob.Changed() }

// Diverges and Diverged make the outbox an uplink.Diverger: a restored,
// older outbox file is left for a new epoch when the cloud's receipt shows
// the cloud past it (outbox.NewEpoch), and the new stream's first record
// says so (epochRestartedType), so that the cloud's ledger has it too.
func (s outboxSource) Diverges(r protocol.Receipt) (bool, error) { return s.ob.Diverges(r) }

// FirstSeq makes the outbox an uplink.Retainer: records from here on are
// still held (the backlog, and acknowledged ones within --retain), so a
// cloud restored to an older point can be sent them again.
func (s outboxSource) FirstSeq() uint64 { return s.ob.State().Base + 1 }

func (s outboxSource) Diverged(r protocol.Receipt) error {
	st := s.ob.State()
	reason := fmt.Sprintf("the cloud's receipt is at seq %d (head %s); the outbox's head is %d", r.HWM, r.Head, st.Head)
	why := "the cloud's stream is beyond or apart from the outbox: an older outbox file was restored"
	fields := map[string]any{}
	if r.HWM < st.HWM {
		// uplink's cloudBehind: the cloud lost records it had
		// acknowledged, and this edge no longer holds the first of them.
		reason = fmt.Sprintf("the cloud's watermark %d is behind the %d it acknowledged, and records %d..%d are no longer held here", r.HWM, st.HWM, r.HWM+1, st.Base)
		why = "the cloud was restored to an older point and lost records this edge no longer holds (older than --retain)"
		fields["lost_from"], fields["lost_to"] = r.HWM+1, st.Base
		if st.Head > st.Base {
			fields["reentered_from"], fields["reentered_to"] = st.Base+1, st.Head
		}
	}
	behind := r.HWM < st.HWM
	if behind && s.path != "" {
		// Before the new epoch starts, so that a crash at any point of
		// the re-entry below leaves the marker for the next start.
		if err := markReenter(s.path, outbox.StuckPath(s.path, s.ob.Stream().Epoch)); err != nil {
			return fmt.Errorf("record the re-entry about to begin: %w", err)
		}
	}
	ch, err := s.ob.NewEpoch(reason)
	if err != nil {
		if behind && s.path != "" {
			_ = unmarkReenter(s.path)
		}
		return err
	}
	fields["old_epoch"], fields["old_head"], fields["old_acked"] = ch.Old.Epoch.String(), ch.Head, ch.HWM
	fields["cloud_hwm"], fields["kept_as"], fields["reason"] = r.HWM, filepath.Base(ch.Stuck), why
	body, err := protocol.NewBody(fields)
	if err != nil {
		return nil // the new epoch stands; the record is only the cloud's copy of the alarm
	}
	ev := protocol.Event{ID: "epoch-" + ch.New.Epoch.String(), Type: epochRestartedType, TS: time.Now(), Body: body}
	s.ob.AppendFunc([]outbox.Entry{{Device: protocol.EdgeDevice, Event: ev}}, func([]outbox.Result, error) {})
	if behind {
		log := s.log
		if log == nil {
			log = slog.Default()
		}
		if err := reenter(s.ob, ch); err != nil {
			// The new epoch stands; what could not be entered again is
			// in the kept file, which the alarm points to, and the marker
			// stays: the next start tries again.
			log.Error("the records of the lost stream could not all be entered again; they are in the kept file, and the next start tries again", "err", err)
		} else {
			log.Warn("entered the records the lost stream still held again, in the new epoch", "kept_as", ch.Stuck)
			if s.path != "" {
				if err := unmarkReenter(s.path); err != nil {
					log.Warn("remove the re-entry marker", "err", err)
				}
			}
		}
	}
	return nil
}

// epochRestartedType is the record the edge writes first in a new epoch it
// started because the cloud was past the old one (a restored outbox), as
// protocol.EdgeDevice; devices may not send edge.* types.
const epochRestartedType = "edge.epoch_restarted"

// outboxAppender adapts the outbox to intake.Appender.
type outboxAppender struct{ ob *outbox.Outbox }

func (a outboxAppender) Append(device string, evs []protocol.Event, done func([]intake.Result, error)) {
	entries := make([]outbox.Entry, len(evs))
	for i, ev := range evs {
		entries[i] = outbox.Entry{Device: device, Event: ev}
	}
	// The callback runs on the outbox's commit goroutine once the commit is
	// durable: no goroutine per append (there are 20k+ a second).
	a.ob.AppendFunc(entries, func(rs []outbox.Result, err error) {
		out := make([]intake.Result, len(rs))
		for i, r := range rs {
			out[i] = intake.Result{Seq: r.Seq, Duplicate: r.Duplicate, Err: r.Err}
		}
		// The outbox's quota and disk-full sentinels carry the Quota and
		// DiskFull methods the intake classifies by: no mapping here.
		done(out, err)
	})
}
