package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/cloud/api"
	brokermqtt "github.com/outpost-edge/outpost/cloud/broker/mqtt"
	brokernats "github.com/outpost-edge/outpost/cloud/broker/nats"
	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/edgeauth"
	"github.com/outpost-edge/outpost/cloud/ingest"
	ingestmqtt "github.com/outpost-edge/outpost/cloud/ingest/mqtt"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection/pgview"
	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/cloud/web"
	"github.com/outpost-edge/outpost/docs"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/flagenv"
	"github.com/outpost-edge/outpost/internal/keyfile"
	"github.com/outpost-edge/outpost/internal/pgcluster"
	"github.com/outpost-edge/outpost/internal/sdnotify"
	"github.com/outpost-edge/outpost/internal/tlsconf"
	"github.com/outpost-edge/outpost/protocol"
)

// Config is what `cloud serve` is told by its flags.
type Config struct {
	DataDir      string
	DatabaseURL  string
	Dev          bool
	DevPGPort    int
	Migrate      bool
	MQTT         string
	MQTTListen   string
	MQTTUser     string
	MQTTPassword string
	MQTTTLSCert  string
	MQTTTLSKey   string
	MQTTClientCA string
	MQTTCA       string
	MQTTCert     string
	MQTTKey      string
	Group        string
	HTTP         string
	Workers      int
	MaxBatch     int
	GapWait      time.Duration
	DrainTimeout time.Duration
	AuditEvery   time.Duration
	Projections  bool
	FollowFold   bool
	TokensV1     bool
	LogLevel     string
	LogFormat    string
	Config       string
	NATS         natsConfig
	Release      releaseConfig
	RolloutTick  time.Duration
	DebugListen  string
}

// commonFlags are shared by serve and the admin commands.
func commonFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.DataDir, "data-dir", ".outpost/cloud", "directory for the cloud's key and, with --dev, its private Postgres")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "Postgres connection URL, such as postgres://user@host/outpost")
	fs.BoolVar(&c.Dev, "dev", false, "with no --database-url: run a private Postgres under --data-dir (needs the PostgreSQL server binaries)")
	flagenv.IntVar(fs, &c.DevPGPort, "dev-pg-port", 15432, flagenv.Range{Min: 1, Max: 65535}, "port of the --dev Postgres on 127.0.0.1")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.Config, "config", "", "optional config file of 'name = value' lines (names are the flag names)")
}

// Main is `cloud serve`: flag parsing, then wiring of ledger, broker,
// ingest and API. A test can drive it in-process.
type Main struct {
	Config Config
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger

	Ready chan struct{} // closed once every listener is up

	pool    *pgxpool.Pool
	pg      *pgcluster.Cluster
	broker  *brokermqtt.Broker
	apiAddr string

	rebuilding atomic.Int64 // 1 while the start-up projection rebuild runs
	debugAddr  string       // the --debug-listen listener's address
	loginPool  *pgxpool.Pool

	natsServer *brokernats.Broker
	auth       *edgeauth.Authenticator // edge logins on the embedded brokers
	commands   *command.Deliverer      // sends edges their commands
}

// NewMain returns a Main with defaults.
func NewMain(stdout, stderr io.Writer) *Main {
	return &Main{stdout: stdout, stderr: stderr, Ready: make(chan struct{})}
}

// ParseFlags parses `cloud serve` flags (and OUTPOST_* variables, and the
// config file).
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("cloud serve", flag.ContinueOnError)
	fs.SetOutput(m.stderr)
	c := &m.Config
	commonFlags(fs, c)
	fs.BoolVar(&c.Migrate, "migrate", false, "apply database migrations at start-up")
	fs.StringVar(&c.MQTT, "mqtt", "", "external MQTT broker URL (tcp://host:1883, ssl://…); empty runs the embedded broker")
	fs.StringVar(&c.MQTTListen, "mqtt-listen", ":18830", "embedded broker: address edges connect to (empty, with no --mqtt: no MQTT, for a NATS-only cloud)")
	fs.StringVar(&c.MQTTUser, "mqtt-user", "", "external broker: user name of the cloud's ingest clients")
	fs.StringVar(&c.MQTTPassword, "mqtt-password", "", "external broker: password of the cloud's ingest clients")
	fs.StringVar(&c.MQTTTLSCert, "mqtt-tls-cert", "", "embedded broker: serve TLS to edges with this certificate (PEM); edges then use ssl:// URLs")
	fs.StringVar(&c.MQTTTLSKey, "mqtt-tls-key", "", "embedded broker: key of --mqtt-tls-cert (PEM)")
	fs.StringVar(&c.MQTTClientCA, "mqtt-client-ca", "", "embedded broker: PEM CAs; when set, every edge must present a client certificate they signed")
	fs.StringVar(&c.MQTTCA, "mqtt-ca", "", "external broker: PEM CAs that sign its certificate (default: the system's roots; use an ssl:// --mqtt)")
	fs.StringVar(&c.MQTTCert, "mqtt-cert", "", "external broker: client certificate (PEM) of the cloud's ingest clients, for a broker that requires one")
	fs.StringVar(&c.MQTTKey, "mqtt-key", "", "external broker: key of --mqtt-cert (PEM)")
	fs.StringVar(&c.Group, "group", "outpost-ingest", "MQTT shared-subscription group; cloud processes in one group share segments")
	fs.StringVar(&c.HTTP, "http", "127.0.0.1:18080", "address of the HTTP API, /healthz, /readyz and /metrics")
	flagenv.IntVar(fs, &c.Workers, "workers", 2, flagenv.Range{Min: 1, Max: 256}, "ingest commit loops in this process")
	flagenv.IntVar(fs, &c.MaxBatch, "max-batch", 64, flagenv.Range{Min: 1, Max: 4096}, "segments per commit transaction")
	flagenv.DurationVar(fs, &c.GapWait, "gap-wait", 2*time.Second, flagenv.Durations(time.Millisecond, 0, ""), "how long a segment after a gap waits for the gap to fill before a nack")
	flagenv.DurationVar(fs, &c.DrainTimeout, "drain-timeout", 10*time.Second, flagenv.Durations(time.Millisecond, 0, ""), "on the first SIGTERM, how long to finish work in hand")
	flagenv.DurationVar(fs, &c.AuditEvery, "audit-every", ledger.DefaultAuditEvery, flagenv.Durations(time.Minute, 0, "no scheduled audit"), "how often to audit what was committed since the last audit (at start-up, then on this schedule; see cloud audit)")
	fs.BoolVar(&c.TokensV1, "broker-tokens-v1", false, "embedded brokers: also accept older edges' v1 broker tokens while they are upgraded (once each, like v2, but valid on either broker and within 10 minutes of this clock)")
	fs.BoolVar(&c.Projections, "projections", true, "fold every commit into the back office's read models (docs/REPORTS.md), in the commit; at start-up, rebuild them in the background when their definitions changed or commits were made without them")
	fs.BoolVar(&c.FollowFold, "projections-follow", false, "fold the read models behind the commits (a follower of the ledger, many commits per fold, woken by each) rather than inside each commit: commits do not wait for the fold or for each other, and reports lag the ledger by a fold (their as_of says where they stand; docs/REPORTS.md, \"Folding behind the commits\")")
	natsFlags(fs, &c.NATS)
	releaseFlags(fs, &c.Release)
	flagenv.DurationVar(fs, &c.RolloutTick, "rollout-tick", rollout.DefaultTick, flagenv.Durations(100*time.Millisecond, 0, "no rollout controller in this process"), "how often this replica's rollout controller assigns, advances and pauses the running rollouts (docs/OTA.md, \"Operating rollouts\"); every replica runs one")
	debugFlags(fs, &c.DebugListen)
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: cloud serve [flags]\n\nRuns the cloud service.")
	if err := flagenv.Parse(fs, args, "OUTPOST_", "config"); err != nil {
		return err
	}
	return checkDebugListen(c.DebugListen)
}

// openDB connects to --database-url, or with --dev to (or starts) the
// private cluster.
// openMigratedDB opens the database for an admin command (quietly: its
// output is the command's) and checks that its schema is this binary's.
// closeDB closes the pool and stops a --dev cluster.
func openMigratedDB(ctx context.Context, c *Config) (pool *pgxpool.Pool, closeDB func(), err error) {
	pool, cl, err := openDB(ctx, c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, nil, err
	}
	closeDB = func() {
		pool.Close()
		if cl != nil {
			cl.Stop()
		}
	}
	if err := ledger.CheckSchema(ctx, pool); err != nil {
		closeDB()
		return nil, nil, fmt.Errorf("%w (run `cloud migrate` first)", err)
	}
	return pool, closeDB, nil
}

func openDB(ctx context.Context, c *Config, log *slog.Logger) (*pgxpool.Pool, *pgcluster.Cluster, error) {
	url := c.DatabaseURL
	var cl *pgcluster.Cluster
	if url == "" {
		if !c.Dev {
			return nil, nil, usagef("no database: give --database-url (or OUTPOST_DATABASE_URL), or --dev for a private Postgres under --data-dir")
		}
		devURL := fmt.Sprintf("postgres://%s@127.0.0.1:%d/outpost?sslmode=disable", pgcluster.DefaultUser, c.DevPGPort)
		if p, err := pgxpool.New(ctx, devURL); err == nil && p.Ping(ctx) == nil {
			log.Info("using the running --dev Postgres", "port", c.DevPGPort)
			return p, nil, nil
		}
		dir, err := filepath.Abs(filepath.Join(c.DataDir, "pg"))
		if err != nil {
			return nil, nil, err
		}
		log.Info("starting a private Postgres (--dev)", "dir", dir, "port", c.DevPGPort)
		cl, err = pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Port: c.DevPGPort})
		if err != nil {
			return nil, nil, fmt.Errorf("--dev Postgres: %w", err)
		}
		if err := cl.CreateDatabase(ctx, "outpost"); err != nil {
			cl.Stop()
			return nil, nil, err
		}
		url = cl.URL("outpost")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, cl, fmt.Errorf("--database-url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = pool.Ping(pctx)
		cancel()
	}
	if err != nil {
		if cl != nil {
			cl.Stop()
		}
		return nil, nil, fmt.Errorf("connect to Postgres at %s: %w", redact(url), err)
	}
	return pool, cl, nil
}

// redact hides a password in a connection URL for logs and errors.
func redact(url string) string {
	if i := strings.Index(url, "://"); i >= 0 {
		rest := url[i+3:]
		if at := strings.Index(rest, "@"); at >= 0 {
			if c := strings.Index(rest[:at], ":"); c >= 0 {
				return url[:i+3] + rest[:c] + ":***" + rest[at:]
			}
		}
	}
	return url
}

// webClock is the back office's clock ("today" on its pages). A test of
// one business day pins it, so that midnight passing during the test does
// not move the page's day away from the day the test's tills declare.
var webClock = time.Now

func loadCloudKey(dataDir string, log *slog.Logger) (*protocol.Signer, error) {
	// The data dir itself stays searchable (0755): with --dev, Postgres
	// runs as another user under it. The key file is 0600.
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dataDir, "cloud.key")
	k, created, err := keyfile.LoadOrCreate(path)
	if err != nil {
		return nil, err
	}
	s, err := protocol.NewSigner(k)
	if err != nil {
		return nil, err
	}
	if created && log != nil {
		log.Info("created the cloud's signing key", "path", path, "kid", s.KeyID())
	}
	return s, nil
}

// Run starts everything and blocks until ctx ends, then drains.
func (m *Main) Run(ctx context.Context) error {
	c := &m.Config
	log, err := cli.NewLogger(m.stderr, c.LogLevel, c.LogFormat)
	if err != nil {
		return err
	}
	m.log = log
	if c.DebugListen != "" {
		dctx, stopDebug := context.WithCancel(context.Background())
		defer stopDebug()
		if m.debugAddr, err = serveDebug(dctx, c.DebugListen, log); err != nil {
			return err
		}
	}
	signer, err := loadCloudKey(c.DataDir, log)
	if err != nil {
		return err
	}
	m.pool, m.pg, err = openDB(ctx, c, log)
	if err != nil {
		return err
	}
	var part ledger.PartitionChoice
	if c.Migrate {
		if part, err = ledger.MigrateReport(ctx, m.pool); err != nil {
			return err
		}
	} else if err := ledger.CheckSchema(ctx, m.pool); err != nil {
		return fmt.Errorf("%w (run `cloud migrate`, or start with --migrate)", err)
	} else if part, err = ledger.PartitioningReport(ctx, m.pool); err != nil {
		return err
	}
	log.Info("ledger partitioning", "mode", part.Mode, "why", part.Reason)
	var projections []ledger.Projection
	var dir *pgview.Directory
	var proj *pgview.Projection
	projectionSeconds := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outpost_cloud_projection_apply_seconds",
		Help:    "Time of the projection step of each commit (folding the batch into the read models, in the commit transaction).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	rebuildWhy := ""
	var follower *pgview.Follower
	var committed func(int64)
	if c.Projections {
		dir = pgview.NewDirectory()
		proj = pgview.New(dir)
		proj.Observe = func(d time.Duration) { projectionSeconds.Observe(d.Seconds()) }
		if c.FollowFold {
			// Folded behind the commits: records the checkpoint has not
			// folded are the follower's to fold, not a reason to rebuild.
			follower = pgview.NewFollower(proj, nil, m.pool)
			follower.Logger = log.With("component", "projection-follower")
			committed = follower.Wake
			rebuildWhy, err = pgview.VersionChanged(ctx, m.pool)
		} else {
			projections = append(projections, proj)
			rebuildWhy, err = pgview.NeedsRebuild(ctx, m.pool)
		}
		if err != nil {
			return err
		}
	} else {
		log.Warn("projections are off (--projections=false): commits are not folded into the read models; the next start with them on rebuilds them")
	}
	// The OTA state (cloud/rollout) is folded in every commit whatever
	// --projections says: the rollout controller decides by it.
	projections = append(projections, rollout.Projection{})
	led := ledger.New(m.pool, ledger.Options{Logger: log, Projections: projections, Committed: committed})
	if follower != nil {
		follower.Ledger = led
	}

	reg := prometheus.NewRegistry()
	// Commands to edges (cloud/command): sent after each hello's receipt,
	// and pushed to the edges that said hello here when one is enqueued.
	commands, err := command.NewDeliverer(command.DelivererOptions{DB: m.pool, Logger: log})
	if err != nil {
		return err
	}
	m.commands = commands
	svc, err := ingest.New(ingest.Options{Ledger: newTimedLedger(reg, led), Signer: signer, Workers: c.Workers, MaxBatch: c.MaxBatch, GapWait: c.GapWait,
		AfterCommit: crashAfterCommitFault(log), Logger: log,
		Commands: func(ctx context.Context, edge string, cmd uint64, pub ingest.CommandPublisher) error {
			return commands.Hello(ctx, edge, cmd, pub)
		}})
	if err != nil {
		return err
	}

	// One Authenticator for both embedded brokers: it spends broker tokens
	// in Postgres (once across replicas) and closes revoked edges' sessions.
	// Logins use a pool of their own, so they never wait behind commits.
	if m.loginPool, err = loginPool(ctx, m.pool); err != nil {
		return err
	}
	m.auth, err = edgeauth.New(edgeauth.Options{Store: edgeauth.LedgerStore(ledger.New(m.loginPool, ledger.Options{Logger: log})), Cluster: string(signer.KeyID()), AcceptV1: c.TokensV1, Logger: log})
	if err != nil {
		return err
	}
	natsConsumer, err := m.startNATS(c, svc, led, log)
	if err != nil {
		return err
	}
	var consumer *ingestmqtt.Consumer
	brokerURL, user, pass := c.MQTT, c.MQTTUser, c.MQTTPassword
	if brokerURL == "" && c.MQTTListen == "" {
		if natsConsumer == nil {
			return usagef("%v", errNoTransport)
		}
		log.Info("no MQTT (--mqtt-listen is empty): edges connect over NATS only")
	} else if brokerURL == "" {
		tlsConf, err := embeddedBrokerTLS(c)
		if err != nil {
			return err
		}
		m.broker, err = brokermqtt.Start(brokermqtt.Options{Addr: c.MQTTListen, TLS: tlsConf, Auth: m.auth, Logger: log})
		if err != nil {
			return err
		}
		_, port, _ := net.SplitHostPort(m.broker.InternalAddr())
		brokerURL, user, pass = "tcp://127.0.0.1:"+port, brokermqtt.InternalUser, m.broker.InternalPassword()
	} else if c.MQTTTLSCert != "" || c.MQTTTLSKey != "" || c.MQTTClientCA != "" {
		return usagef("--mqtt-tls-cert, --mqtt-tls-key and --mqtt-client-ca are for the embedded broker; with --mqtt %s, configure TLS on that broker", redact(brokerURL))
	}
	var ingestTLS *tls.Config
	if c.MQTTCA != "" || c.MQTTCert != "" || c.MQTTKey != "" {
		if c.MQTT == "" {
			return usagef("--mqtt-ca, --mqtt-cert and --mqtt-key are for an external broker (--mqtt); the embedded broker's TLS is --mqtt-tls-cert and --mqtt-tls-key")
		}
		if ingestTLS, err = tlsconf.Client(nil, c.MQTTCA, c.MQTTCert, c.MQTTKey); err != nil {
			return usagef("--mqtt-ca, --mqtt-cert, --mqtt-key: %v", err)
		}
	}
	if brokerURL != "" {
		consumer, err = ingestmqtt.New(ingestmqtt.Options{Broker: brokerURL, Username: user, Password: pass, TLS: ingestTLS, Group: c.Group, Service: svc, Logger: log})
		if err != nil {
			return err
		}
	}

	registerMetrics(reg, svc, led)
	registerCommandMetrics(reg, commands)
	if m.broker != nil {
		b := m.broker
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_cloud_mqtt_slow_edge_disconnects_total",
			Help: "Edges the embedded MQTT broker disconnected for leaving more than 256 receipts unacknowledged."},
			func() float64 { return float64(b.SlowEdgeDisconnects()) }))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_cloud_mqtt_ingest_held_segments",
			Help: "Segments the cloud's ingest holds unacknowledged on the embedded MQTT broker (at most 512; beyond, edges' segments wait)."},
			func() float64 { return float64(b.IngestHeld()) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_cloud_mqtt_segments_waited_total",
			Help: "Segments from edges that waited for room before the embedded MQTT broker took them (back-pressure)."},
			func() float64 { return float64(b.HeldSegments()) }))
	}
	if proj != nil {
		registerProjectionMetrics(reg, proj, projectionSeconds, &m.rebuilding)
	}
	reg.MustRegister(newStreamsCollector(led, log))
	if err := registerCertExpiry(reg, "outpost_cloud_", map[string]string{"mqtt-tls-cert": c.MQTTTLSCert,
		"mqtt-cert": c.MQTTCert, "nats-tls-cert": c.NATS.TLSCert, "nats-cert": c.NATS.Cert}); err != nil {
		return usagef("%v", err)
	}
	auditor := newAuditor(reg, led, c.AuditEvery, log)
	registerAuthMetrics(reg, m.auth)
	if natsConsumer != nil {
		registerNATSMetrics(reg, natsConsumer)
	}
	repo, repoHandler, err := openRelease(c.Release, led, string(signer.KeyID()), reg, log)
	if err != nil {
		return err
	}
	// Live tails end, with a close event, when the HTTP server shuts down
	// (Shutdown waits for handlers, and a stream would not end by itself).
	streamsDone := make(chan struct{})
	var closeStreams sync.Once
	// live is /healthz, and what feeds systemd's watchdog.
	live := func() error {
		if consumer != nil {
			return consumer.Healthy()
		}
		return nil
	}
	handler := api.New(api.Options{
		Ledger:         led,
		CloudPublicKey: signer.Public(),
		Signer:         signer,
		OpenAPI:        docs.OpenAPI,
		StreamsDone:    streamsDone,
		Ready: func(ctx context.Context) error {
			if svc.Draining() {
				return errors.New("shutting down")
			}
			if err := commitFailing(svc.CommitError()); err != nil {
				return err
			}
			if consumer != nil && !consumer.Connected() {
				return errors.New("ingest is not connected to the MQTT broker")
			}
			if natsConsumer != nil && !natsConsumer.Connected() {
				return errors.New("ingest is not consuming from NATS JetStream")
			}
			return nil
		},
		Live:       live,
		Metrics:    promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Repository: repoHandler,
		Logger:     log,
	})
	ln, err := net.Listen("tcp", c.HTTP)
	if err != nil {
		return fmt.Errorf("--http %s: %w", c.HTTP, err)
	}
	m.apiAddr = ln.Addr().String()
	// The back office's pages share the listener: web serves its paths
	// (under /) and passes every other one to the API.
	srv := &http.Server{Handler: web.New(web.Options{API: handler, Ledger: led, Logger: log, Now: webClock}), ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(func() { closeStreams.Do(func() { close(streamsDone) }) })

	work, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	g, gctx := errgroup.WithContext(work)
	g.Go(func() error { return svc.Run(gctx) })
	g.Go(func() error { return commands.Run(gctx) })
	if m.broker != nil || m.natsServer != nil {
		g.Go(func() error { return m.auth.Run(gctx) })
	}
	if consumer != nil {
		g.Go(func() error { return consumer.Run(gctx) })
	}
	if natsConsumer != nil {
		g.Go(func() error { return natsConsumer.Run(gctx) })
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return ledger.PartitionKeeper{DB: m.pool, Logger: log}.Run(gctx) })
	if repo != nil {
		g.Go(func() error { return repo.Run(gctx) })
	}
	if c.RolloutTick > 0 {
		rc := &rollout.Controller{DB: m.pool, Commands: rollout.CommandQueue{Signer: signer}, Tick: c.RolloutTick,
			Logger: log.With("component", "rollout")}
		if repo != nil {
			rc.Targets = func(context.Context) (map[string]firmware.Custom, error) {
				st, err := repo.Status()
				return st.Targets, err
			}
		}
		registerRolloutMetrics(reg, rc)
		g.Go(func() error { return rc.Run(gctx) })
	}
	if auditor != nil {
		g.Go(func() error { return auditor.Run(gctx) })
	}
	if follower != nil {
		g.Go(func() error { return follower.Run(gctx) })
	}
	if rebuildWhy != "" {
		g.Go(func() error { rebuildInBackground(gctx, m.pool, dir, rebuildWhy, &m.rebuilding, log); return nil })
	}
	log.Info("cloud serving", "api", m.apiAddr, "mqtt", redact(brokerURL), "nats", natsWhere(c, m), "kid", signer.KeyID())
	close(m.Ready)
	if watchdog := sdnotify.Ready(live, log); watchdog != nil {
		g.Go(func() error { return watchdog(gctx) })
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down: draining", "timeout", c.DrainTimeout)
	case <-gctx.Done():
	}
	// Drain, within --drain-timeout: ingest stops taking segments and
	// finishes the batches in hand (commit, receipts, acks) while the
	// consumers, which carry the receipts, still run; the API finishes its
	// requests meanwhile. Only then are the consumers and whatever is left
	// cancelled.
	_ = sdnotify.Notify("STOPPING=1")
	sctx, cancel := context.WithTimeout(context.Background(), c.DrainTimeout)
	defer cancel()
	hg := errgroup.Group{}
	hg.Go(func() error { return srv.Shutdown(sctx) })
	if err := svc.Shutdown(sctx); err != nil {
		log.Warn("drain timed out: commits still in hand are cancelled; their segments come again (not acked)", "timeout", c.DrainTimeout, "err", err)
	} else {
		log.Info("ingest drained")
	}
	_ = hg.Wait()
	stopWork()
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// commitFailing is the readiness error for a failing commit path: what
// anyone asking /readyz may see (the SQLSTATE, not the driver's message;
// the log has that).
func commitFailing(ce *ingest.CommitError) error {
	if ce == nil {
		return nil
	}
	why := "the database is unreachable"
	var pe *pgconn.PgError
	if errors.As(ce.Err, &pe) {
		why = "the database refuses them: SQLSTATE " + pe.Code
		if pe.Code == "53100" { // disk_full
			why += ", disk full"
		}
	}
	return fmt.Errorf("commits are failing (%s) since %s, %d attempts; ingest keeps retrying, the cloud's log has the details",
		why, ce.Since.UTC().Format(time.RFC3339), ce.Attempts)
}

// embeddedBrokerTLS is the embedded broker's TLS from --mqtt-tls-cert,
// --mqtt-tls-key and --mqtt-client-ca; nil when none is given.
func embeddedBrokerTLS(c *Config) (*tls.Config, error) {
	if c.MQTTTLSCert == "" && c.MQTTTLSKey == "" {
		if c.MQTTClientCA != "" {
			return nil, usagef("--mqtt-client-ca needs --mqtt-tls-cert and --mqtt-tls-key (client certificates are checked in the TLS handshake)")
		}
		return nil, nil
	}
	conf, err := brokermqtt.ServerTLS(c.MQTTTLSCert, c.MQTTTLSKey, c.MQTTClientCA)
	if err != nil {
		return nil, usagef("--mqtt-tls-cert, --mqtt-tls-key, --mqtt-client-ca: %v", err)
	}
	return conf, nil
}

// APIAddr is the HTTP listener's address once Ready is closed.
func (m *Main) APIAddr() string { return m.apiAddr }

// BrokerAddr is the embedded broker's address (empty with --mqtt).
func (m *Main) BrokerAddr() string {
	if m.broker == nil {
		return ""
	}
	return m.broker.Addr()
}

// Close releases what Run opened.
// Calling it again does nothing.
func (m *Main) Close() error {
	if m.broker != nil {
		_ = m.broker.Close()
		m.broker = nil
	}
	if m.natsServer != nil {
		_ = m.natsServer.Close()
		m.natsServer = nil
	}
	if m.loginPool != nil {
		m.loginPool.Close()
		m.loginPool = nil
	}
	if m.pool != nil {
		m.pool.Close()
		m.pool = nil
	}
	if m.pg != nil {
		m.pg.Stop()
		m.pg = nil
	}
	return nil
}

// crashAfterCommitFault is fault injection for the crash tests, off unless
// OUTPOST_FAULT_CRASH_AFTER_COMMIT=N is set: the process kills itself with
// SIGKILL after every Nth commit that added records, after the commit and
// before its receipts are sent.
func crashAfterCommitFault(log *slog.Logger) func(int) {
	n, _ := strconv.Atoi(os.Getenv("OUTPOST_FAULT_CRASH_AFTER_COMMIT"))
	if n <= 0 {
		return nil
	}
	log.Warn("fault injection on: this process kills itself after commits", "every", n)
	var count atomic.Int64
	return func(records int) {
		if records > 0 && count.Add(1)%int64(n) == 0 {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never reply
		}
	}
}

func registerMetrics(reg *prometheus.Registry, svc *ingest.Service, led *ledger.Ledger) {
	counter := func(name, help string, f func(ingest.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_cloud_" + name, Help: help},
			func() float64 { return float64(f(svc.Stats())) }))
	}
	counter("segments_received_total", "Segments received from edges.", func(s ingest.Stats) uint64 { return s.Segments })
	counter("segments_committed_total", "Segments that added records to the ledger.", func(s ingest.Stats) uint64 { return s.Committed })
	counter("records_committed_total", "Records committed to the ledger.", func(s ingest.Stats) uint64 { return s.Records })
	counter("segments_duplicate_total", "Segments whose records were all committed before.", func(s ingest.Stats) uint64 { return s.Duplicates })
	counter("segments_refused_total", "Segments whose records the database refused (answered with a malformed nack).", func(s ingest.Stats) uint64 { return s.Refused })
	counter("segments_malformed_total", "Segments that did not decode.", func(s ingest.Stats) uint64 { return s.Malformed })
	counter("gap_nacks_total", "Gap nacks sent after the gap wait.", func(s ingest.Stats) uint64 { return s.Gaps })
	counter("commit_batches_total", "Commit transactions.", func(s ingest.Stats) uint64 { return s.Batches })
	counter("commit_errors_total", "Failed commit attempts (retried).", func(s ingest.Stats) uint64 { return s.CommitErrs })
	counter("reply_errors_total", "Receipts or nacks that could not be published.", func(s ingest.Stats) uint64 { return s.ReplyErrs })
	counter("hellos_total", "Hellos answered.", func(s ingest.Stats) uint64 { return s.Hellos })
	counter("segments_overflow_total", "Segments left for their edge to resend because the ingest queue stayed full.", func(s ingest.Stats) uint64 { return s.Overflow })
	counter("segments_resent_skipped_total", "Duplicates answered without a commit: byte copies of segments the ledger had taken (an edge's resends).", func(s ingest.Stats) uint64 { return s.ResentSkipped })
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_cloud_segments_quarantined_total",
		Help: "Segments that failed signature or chain checks, kept in the quarantine table."},
		func() float64 { return float64(led.Stats().Quarantined) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_cloud_ledger_gaps_total", Help: "Commit outcomes that were gaps (before any gap wait)."},
		func() float64 { return float64(led.Stats().Gaps) }))
	ledgerCounter := func(name, help string, f func(ledger.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_cloud_" + name, Help: help},
			func() float64 { return float64(f(led.Stats())) }))
	}
	ledgerCounter("quarantine_copies_total", "Quarantined payloads that arrived again from the same sender (counted on their row).", func(s ledger.Stats) uint64 { return s.QuarantineCopies })
	ledgerCounter("quarantine_truncated_total", "Quarantined payloads kept only as a prefix: the sender was over its byte cap.", func(s ledger.Stats) uint64 { return s.QuarantineTruncated })
	ledgerCounter("quarantine_dropped_total", "Quarantined payloads not kept at all: the sender was over its row cap.", func(s ledger.Stats) uint64 { return s.QuarantineDropped })
	ledgerCounter("quarantine_pruned_total", "Quarantine rows deleted after the retention.", func(s ledger.Stats) uint64 { return s.QuarantinePruned })
}

func registerCommandMetrics(reg *prometheus.Registry, d *command.Deliverer) {
	counter := func(name, help string, f func(command.DeliveryStats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_cloud_" + name, Help: help},
			func() float64 { return float64(f(d.Stats())) }))
	}
	counter("commands_published_total", "Signed commands published to edges' cmd topics and subjects (redeliveries included).", func(s command.DeliveryStats) uint64 { return s.Published })
	counter("command_publish_errors_total", "Command publishes that failed (the edge's next hello gets the command).", func(s command.DeliveryStats) uint64 { return s.PublishErrors })
	counter("command_pushes_total", "Pushes of new commands to connected edges, started by an enqueue's notification or the sweep.", func(s command.DeliveryStats) uint64 { return s.Pushes })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_cloud_command_edges_served",
		Help: "Edges that said hello to this process, to which it pushes new commands."},
		func() float64 { return float64(d.Stats().Served) }))
}
