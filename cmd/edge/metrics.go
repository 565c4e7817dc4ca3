package main

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/internal/tlsconf"
)

// registerOpsMetrics adds what deploy/prometheus's alert rules need beyond
// registerMetrics: the quotas the stored bytes are compared with, and when
// the client certificates the uplink loaded expire (only those given).
func (m *Main) registerOpsMetrics(reg *prometheus.Registry, c *Config) error {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_edge_outbox_ledger_quota_bytes",
		Help: "--ledger-quota: stored ledger record bytes beyond which new ledger events are refused."},
		func() float64 { return float64(m.ob.State().LedgerQuota) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_edge_outbox_telemetry_quota_bytes",
		Help: "--telemetry-quota: stored telemetry bytes beyond which the oldest telemetry is shed."},
		func() float64 { return float64(m.ob.State().TelemetryQuota) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_edge_uplink_cloud_behind_total",
		Help: "Nacks that showed the cloud behind what it had acknowledged (its database restored to an older point): the edge resent what it retained, or started a new epoch."},
		func() float64 {
			if m.up == nil {
				return 0
			}
			return float64(m.up.Stats().CloudBehind)
		}))
	for flagName, file := range map[string]string{"cloud-mqtt-cert": c.CloudMQTTCert, "nats-cert": c.NATS.Cert} {
		if file == "" {
			continue
		}
		at, err := tlsconf.NotAfter(file)
		if err != nil {
			return fmt.Errorf("--%s: %w", flagName, err)
		}
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_edge_tls_cert_expiry_timestamp_seconds",
			Help:        "When the client certificate named by the flag expires (Unix seconds), as loaded at start-up: renew it and restart before then.",
			ConstLabels: prometheus.Labels{"flag": flagName}}, func() float64 { return float64(at.Unix()) }))
	}
	return nil
}
