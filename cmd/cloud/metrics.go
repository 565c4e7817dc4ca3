package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/cloud/ingest"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/tlsconf"
)

// The metrics the alert rules and dashboards in deploy/ need beyond the
// counters in serve.go: commit latency, per-stream lag, and certificate
// expiry (docs/OPERATIONS.md, "Watching").

// commitBuckets span a small commit on an idle database (about a
// millisecond) to one that waits on a slow or failing disk.
var commitBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// timedLedger is the ingest Ledger with every Commit call (one
// transaction, successful or not) timed into a histogram.
type timedLedger struct {
	ingest.Ledger
	took prometheus.Histogram
}

func (t timedLedger) Commit(ctx context.Context, batch []ingest.Input) ([]ingest.Outcome, error) {
	start := time.Now()
	outs, err := t.Ledger.Commit(ctx, batch)
	t.took.Observe(time.Since(start).Seconds())
	return outs, err
}

// newTimedLedger registers outpost_cloud_commit_duration_seconds and
// returns led wrapped to feed it.
func newTimedLedger(reg *prometheus.Registry, led ingest.Ledger) ingest.Ledger {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "outpost_cloud_commit_duration_seconds",
		Help: "Time of each commit transaction (a batch of segments), successful or not.", Buckets: commitBuckets})
	reg.MustRegister(h)
	return timedLedger{Ledger: led, took: h}
}

// streamsCollector exports, per edge, its current stream's lag and when it
// was last heard from, read from the streams table at each scrape (one
// query, one row per stream). Every replica exports the same values:
// aggregate with max by (edge). Ended streams (an edge's earlier epochs)
// are left out; /v1/streams lists them.
type streamsCollector struct {
	led                *ledger.Ledger
	log                *slog.Logger
	lag, seen, commit  *prometheus.Desc
	streams, scrapeErr *prometheus.Desc
}

func newStreamsCollector(led *ledger.Ledger, log *slog.Logger) *streamsCollector {
	edge := []string{"edge"}
	return &streamsCollector{led: led, log: log,
		lag: prometheus.NewDesc("outpost_cloud_stream_lag_records",
			"Records the edge reported (its latest hello) that are not committed yet, for its current stream.", edge, nil),
		seen: prometheus.NewDesc("outpost_cloud_stream_last_seen_timestamp_seconds",
			"When the edge's current stream last sent a segment or a hello (Unix seconds).", edge, nil),
		commit: prometheus.NewDesc("outpost_cloud_stream_last_commit_timestamp_seconds",
			"When the edge's current stream last committed records (Unix seconds; absent before its first commit).", edge, nil),
		streams: prometheus.NewDesc("outpost_cloud_streams",
			"Current streams (one per edge that has sent anything).", nil, nil),
		scrapeErr: prometheus.NewDesc("outpost_cloud_streams_scrape_error",
			"1 when reading the streams for this scrape failed (the database is unreachable); the per-stream series are then absent.", nil, nil),
	}
}

func (c *streamsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.seen
	ch <- c.commit
	ch <- c.streams
	ch <- c.scrapeErr
}

func (c *streamsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	all, err := c.led.Streams(ctx)
	if err != nil {
		c.log.Warn("metrics: read the streams", "err", err)
		ch <- prometheus.MustNewConstMetric(c.scrapeErr, prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.scrapeErr, prometheus.GaugeValue, 0)
	// An edge has one current stream; should two be open (a race around
	// a new epoch), the newer one (Streams orders by first_seen) wins.
	cur := map[string]ledger.StreamInfo{}
	for _, s := range all {
		if s.EndedAt.IsZero() {
			cur[s.Stream.Edge] = s
		}
	}
	ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(len(cur)))
	for edge, s := range cur {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(s.Lag), edge)
		ch <- prometheus.MustNewConstMetric(c.seen, prometheus.GaugeValue, float64(s.LastSeen.UnixMilli())/1000, edge)
		if !s.CommittedAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.commit, prometheus.GaugeValue, float64(s.CommittedAt.UnixMilli())/1000, edge)
		}
	}
}

// registerCertExpiry exports when each certificate the process loaded
// expires, labelled with the flag that named it: only those given.
func registerCertExpiry(reg *prometheus.Registry, prefix string, certs map[string]string) error {
	for flagName, file := range certs {
		if file == "" {
			continue
		}
		at, err := tlsconf.NotAfter(file)
		if err != nil {
			return fmt.Errorf("--%s: %w", flagName, err)
		}
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: prefix + "tls_cert_expiry_timestamp_seconds",
			Help:        "When the certificate named by the flag expires (Unix seconds), as loaded at start-up: renew it and restart before then.",
			ConstLabels: prometheus.Labels{"flag": flagName}}, func() float64 { return float64(at.Unix()) }))
	}
	return nil
}
