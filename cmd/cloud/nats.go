package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	brokernats "github.com/outpost-edge/outpost/cloud/broker/nats"
	"github.com/outpost-edge/outpost/cloud/ingest"
	ingestnats "github.com/outpost-edge/outpost/cloud/ingest/nats"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/flagenv"
	"github.com/outpost-edge/outpost/protocol"
)

// natsConfig is the NATS JetStream transport of `cloud serve`. It runs
// next to MQTT: edges on either land in the same ledger.
type natsConfig struct {
	URL      string
	Embedded bool
	Listen   string
	Store    string
	TLSCert  string
	TLSKey   string

	User, Password, Token, NKey, Creds string
	CA, Cert, Key                      string

	EdgeAccounts bool

	Stream        string
	Subjects      string
	Retention     string
	MaxAge        time.Duration
	Replicas      int
	MaxBytes      int64
	MaxPerEdge    int64
	Consumer      string
	AckWait       time.Duration
	MaxAckPending int
}

func natsFlags(fs *flag.FlagSet, c *natsConfig) {
	fs.StringVar(&c.URL, "nats", "", "NATS server(s) with JetStream for edges on NATS, such as nats://n1:4222,nats://n2:4222 (empty: none unless --nats-embedded)")
	fs.BoolVar(&c.Embedded, "nats-embedded", false, "run an embedded nats-server with JetStream (file storage under --data-dir) for edges on NATS; edges log in with broker tokens")
	fs.StringVar(&c.Listen, "nats-listen", ":14222", "embedded NATS server: address edges connect to")
	fs.StringVar(&c.Store, "nats-store", "", "embedded NATS server: JetStream storage directory (default <data-dir>/nats)")
	fs.StringVar(&c.TLSCert, "nats-tls-cert", "", "embedded NATS server: serve TLS with this certificate (PEM); edges then use tls:// URLs")
	fs.StringVar(&c.TLSKey, "nats-tls-key", "", "embedded NATS server: key of --nats-tls-cert")
	fs.StringVar(&c.User, "nats-user", "", "--nats: user name of the cloud's NATS connection")
	fs.StringVar(&c.Password, "nats-password", "", "--nats: password of the cloud's NATS connection")
	fs.StringVar(&c.Token, "nats-token", "", "--nats: token of the cloud's NATS connection")
	fs.StringVar(&c.NKey, "nats-nkey", "", "--nats: file holding the nkey seed of the cloud's NATS user")
	fs.StringVar(&c.Creds, "nats-creds", "", "--nats: .creds file (JWT and nkey seed) of the cloud's NATS user")
	fs.StringVar(&c.CA, "nats-ca", "", "--nats: PEM file of the CAs that sign the NATS servers' certificates")
	fs.StringVar(&c.Cert, "nats-cert", "", "--nats: client certificate (PEM) for NATS servers that require one")
	fs.StringVar(&c.Key, "nats-key", "", "--nats: key of --nats-cert")
	fs.BoolVar(&c.EdgeAccounts, "nats-edge-accounts", false, "--nats: the server gives each edge an account of its own (deploy/nats/README.md), so hellos are answered on the server's reply subjects (_R_.…); implied by --nats-embedded")
	fs.StringVar(&c.Stream, "nats-stream", ingestnats.DefaultStream, "JetStream stream of segments (created at start-up when missing, checked otherwise)")
	fs.StringVar(&c.Subjects, "nats-subjects", protocol.SegmentFilterNATS, "the stream's subjects, comma-separated")
	fs.StringVar(&c.Retention, "nats-retention", ingestnats.DefaultRetention, "the stream's retention: workqueue (removed once committed) or limits (kept for --nats-max-age)")
	flagenv.DurationVar(fs, &c.MaxAge, "nats-max-age", ingestnats.DefaultMaxAge, flagenv.Durations(time.Minute, 0, ""), "how long the stream keeps a segment; edges resend anything older that the ledger lacks")
	flagenv.IntVar(fs, &c.Replicas, "nats-replicas", ingestnats.DefaultReplicas, flagenv.Range{Min: 1, Max: 5}, "the stream's replicas (3 on a 3-node JetStream cluster)")
	flagenv.BytesVar(fs, &c.MaxBytes, "nats-max-bytes", ingestnats.DefaultMaxBytes, flagenv.Range{Min: 1 << 20}, "the stream's byte cap, such as 4GiB; when full it refuses new segments (edges back off and buffer), it never drops stored ones")
	flagenv.IntVar(fs, &c.MaxPerEdge, "nats-max-per-edge", ingestnats.DefaultMaxPerEdge, flagenv.Range{Min: 1}, "segments one edge may have in the stream at once (its share); beyond, that edge's publishes are refused and it backs off")
	fs.StringVar(&c.Consumer, "nats-consumer", ingestnats.DefaultConsumer, "durable pull consumer that every cloud process shares; also the hello queue group")
	flagenv.DurationVar(fs, &c.AckWait, "nats-ack-wait", ingestnats.DefaultAckWait, flagenv.Durations(time.Second, 0, ""), "JetStream redelivers a segment not acked (committed) within this time; see docs/TRANSPORTS.md")
	flagenv.IntVar(fs, &c.MaxAckPending, "nats-max-ack-pending", ingestnats.DefaultMaxAckPending, flagenv.Range{Min: 1, Max: 1 << 20}, "segments delivered and not yet acked, across all cloud processes: the cloud's memory bound and backpressure")
}

func (c *natsConfig) enabled() bool { return c.URL != "" || c.Embedded }

// startNATS starts the embedded server when asked and returns the consumer
// (nil when NATS is off).
func (m *Main) startNATS(c *Config, svc *ingest.Service, led *ledger.Ledger, log *slog.Logger) (*ingestnats.Consumer, error) {
	nc := &c.NATS
	if !nc.enabled() {
		return nil, nil
	}
	if nc.URL != "" && nc.Embedded {
		return nil, usagef("give --nats (an external server) or --nats-embedded, not both")
	}
	opts := ingestnats.Options{
		URL: nc.URL, User: nc.User, Password: nc.Password, Token: nc.Token, NKeySeedFile: nc.NKey, CredsFile: nc.Creds,
		CAFile: nc.CA, CertFile: nc.Cert, KeyFile: nc.Key,
		Stream: ingestnats.StreamOptions{Name: nc.Stream, Subjects: splitList(nc.Subjects), Retention: nc.Retention,
			MaxAge: nc.MaxAge, Replicas: nc.Replicas, MaxBytes: nc.MaxBytes, MaxPerEdge: nc.MaxPerEdge},
		Consumer:        ingestnats.ConsumerOptions{Name: nc.Consumer, AckWait: nc.AckWait, MaxAckPending: nc.MaxAckPending},
		Fetch:           2 * c.MaxBatch,
		IsolatedReplies: nc.EdgeAccounts,
		Service:         svc,
		Logger:          log,
	}
	if nc.Embedded {
		store := nc.Store
		if store == "" {
			store = filepath.Join(c.DataDir, "nats")
		}
		var tlsConf *tls.Config
		if nc.TLSCert != "" || nc.TLSKey != "" {
			cert, err := tls.LoadX509KeyPair(nc.TLSCert, nc.TLSKey)
			if err != nil {
				return nil, usagef("--nats-tls-cert, --nats-tls-key: %v", err)
			}
			tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		var err error
		m.natsServer, err = brokernats.Start(brokernats.Options{
			Addr: nc.Listen, StoreDir: store, TLS: tlsConf, Logger: log, Auth: m.auth,
		})
		if err != nil {
			return nil, err
		}
		opts.URL, opts.InProcess, opts.IsolatedReplies = m.natsServer.ClientURL(), m.natsServer, true
		opts.User, opts.Password = protocol.InternalUser, m.natsServer.InternalPassword()
		opts.Token, opts.NKeySeedFile, opts.CredsFile, opts.CAFile, opts.CertFile, opts.KeyFile = "", "", "", "", "", ""
	}
	cons, err := ingestnats.New(opts)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return cons, nil
}

// NATSAddr is the embedded NATS server's address (empty without --nats-embedded).
func (m *Main) NATSAddr() string {
	if m.natsServer == nil {
		return ""
	}
	return m.natsServer.Addr()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// registerNATSMetrics exports the consumer's counters and, per scrape, the
// shared consumer's state on the server.
func registerNATSMetrics(reg *prometheus.Registry, c *ingestnats.Consumer) {
	counter := func(name, help string, f func(ingestnats.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_cloud_nats_" + name, Help: help},
			func() float64 { return float64(f(c.Stats())) }))
	}
	counter("redelivered_total", "Segments JetStream delivered to this process more than once.", func(s ingestnats.Stats) uint64 { return s.Redelivered })
	counter("ack_errors_total", "Double acks the server did not confirm.", func(s ingestnats.Stats) uint64 { return s.AckErrors })
	counter("hellos_total", "Hellos answered.", func(s ingestnats.Stats) uint64 { return s.Hellos })
	counter("hello_errors_total", "Hellos that could not be answered.", func(s ingestnats.Stats) uint64 { return s.HelloErrors })
	counter("hellos_dropped_total", "Hellos not answered because this process was answering its limit of them; the edge asks again.", func(s ingestnats.Stats) uint64 { return s.HellosDropped })
	counter("bad_reply_subjects_total", "Hellos not answered because their reply subject was not the edge's own inbox.", func(s ingestnats.Stats) uint64 { return s.BadReplySubjects })
	reg.MustRegister(&consumerCollector{c: c,
		ackPending: prometheus.NewDesc("outpost_cloud_nats_ack_pending_messages", "Segments delivered and not yet acked, across all cloud processes (at most --nats-max-ack-pending).", nil, nil),
		pending:    prometheus.NewDesc("outpost_cloud_nats_pending_messages", "Segments in the stream not yet delivered to any cloud process.", nil, nil),
	})
}

type consumerCollector struct {
	c                   *ingestnats.Consumer
	ackPending, pending *prometheus.Desc
}

func (cc *consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cc.ackPending
	ch <- cc.pending
}

func (cc *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := cc.c.Info(ctx)
	if err != nil {
		return // not consuming yet, or the server is away: no sample rather than a failed scrape
	}
	ch <- prometheus.MustNewConstMetric(cc.ackPending, prometheus.GaugeValue, float64(info.NumAckPending))
	ch <- prometheus.MustNewConstMetric(cc.pending, prometheus.GaugeValue, float64(info.NumPending))
}

var errNoTransport = errors.New("no transport: give --mqtt or --mqtt-listen for MQTT, or --nats or --nats-embedded for NATS")

// natsWhere says where edges reach the cloud over NATS, for the start-up log.
func natsWhere(c *Config, m *Main) string {
	switch {
	case m.natsServer != nil:
		return "embedded " + m.natsServer.Addr()
	case c.NATS.URL != "":
		return redact(c.NATS.URL)
	}
	return "off"
}
