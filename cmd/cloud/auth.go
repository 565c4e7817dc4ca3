package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/cloud/edgeauth"
)

// registerAuthMetrics exports the embedded brokers' login counters
// (docs/OPERATIONS.md, "Watching").
func registerAuthMetrics(reg *prometheus.Registry, a *edgeauth.Authenticator) {
	counter := func(name, help string, f func(edgeauth.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_cloud_broker_" + name, Help: help},
			func() float64 { return float64(f(a.Stats())) }))
	}
	counter("logins_accepted_total", "Edge logins accepted by the embedded brokers.", func(s edgeauth.Stats) uint64 { return s.Accepted })
	counter("logins_v1_total", "Edge logins accepted with a v1 broker token (--broker-tokens-v1): edges still to upgrade.", func(s edgeauth.Stats) uint64 { return s.AcceptedV1 })
	counter("logins_refused_total", "Edge logins refused, for any reason (the log names each, rate-limited).", func(s edgeauth.Stats) uint64 { return s.Refused })
	counter("logins_rate_limited_total", "Logins refused unchecked because their address failed too often lately.", func(s edgeauth.Stats) uint64 { return s.RateLimited })
	counter("logins_negative_cached_total", "Logins refused from the cache of unknown and revoked edges, with no lookup.", func(s edgeauth.Stats) uint64 { return s.NegativeHits })
	counter("login_lookups_total", "Key lookups in the database for logins.", func(s edgeauth.Stats) uint64 { return s.Lookups })
	counter("sessions_kicked_total", "Sessions closed because their edge or key was revoked.", func(s edgeauth.Stats) uint64 { return s.Kicked })
	counter("refusal_logs_dropped_total", "Refusal log lines suppressed by the log rate limit.", func(s edgeauth.Stats) uint64 { return s.LogsDropped })
}
