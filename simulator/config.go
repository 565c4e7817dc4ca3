package simulator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/outpost-edge/outpost/simulator/fault"
)

// Config describes a run. New fills the defaults of zero fields.
type Config struct {
	// Dir is the run's directory: logs, the edges' and the cloud's data,
	// the oracle and the report. Required; created when missing.
	Dir string
	// BinDir holds the edge and cloud programs. Empty: next to the running
	// executable, else built from source into Dir/bin.
	BinDir string
	// DatabaseURL is the cloud's Postgres. Required.
	DatabaseURL string

	// Transport is the edges' uplink: "mqtt" (default, the cloud's
	// embedded broker) or "nats" (the cloud's embedded nats-server with
	// JetStream).
	Transport string

	Stores  int     // default 3
	Devices int     // per store, default 4: tills, a scale, sensors
	Rate    float64 // events per second per device, default 2
	// Duration is how long the devices send (default 60s, unless Events
	// is set). Events, when not 0, stops the traffic after that many
	// events instead (or as well, whichever comes first).
	Duration time.Duration
	Events   int
	Seed     uint64

	// Faults is the fault schedule, relative to the start of the traffic.
	// Faults still running when the traffic ends are healed then.
	Faults []fault.Fault
	// QuotaEdges is how many edges (the last ones) run with a small
	// telemetry quota, TelemetryQuota bytes (default 24 KiB), so that an
	// outage makes them shed readings to tombstones.
	QuotaEdges     int
	TelemetryQuota int64

	// Retransmit is the share of acknowledged payloads a device sends
	// again later, as if it had missed the acknowledgement (default
	// 0.02). Duplicate is the share it publishes twice at once (default
	// 0.02). Negative turns either off.
	Retransmit float64
	Duplicate  float64
	// Skewed is the share of devices whose clock is off by hours or days
	// (default 0.25; negative: none).
	Skewed float64
	// LateTills is how many stores (the first ones) have a till that holds
	// its events: it rings up a business day LateDays (default 7) before
	// the run's, sends nothing while the traffic runs, and then sends
	// everything it held, in order, and its Z report: a week-late day
	// that the cloud's reports must take in as it comes. Needs a second
	// till (--devices 4 or more); with fewer, the store's only till does it.
	LateTills int
	LateDays  int
	// DuplicateTxn is the share of a till's events that send a recent sale
	// again under a new event id (same store, terminal, business day and
	// txn): counted once on the till's Z, once in the cloud's reports,
	// and listed there as an anomaly.
	DuplicateTxn float64
	// MQTT5 is the share of MQTT devices that speak MQTT 5 rather than
	// 3.1.1 (default 0.3; negative: none).
	MQTT5 float64
	// BatchMax bounds the events of one HTTP request (default 3).
	BatchMax int
	// AckTimeout is how long a device waits for an acknowledgement
	// before it sends again (default 5s).
	AckTimeout time.Duration
	// DrainTimeout bounds the wait, after the traffic, for every edge's
	// outbox to be acknowledged by the cloud (default 3m).
	DrainTimeout time.Duration

	// EdgeArgs and CloudArgs are extra flags for `edge run` and
	// `cloud serve`.
	EdgeArgs, CloudArgs []string

	// Progress, when not nil, gets a line of live progress every
	// ProgressEvery (default 1s); with TTY the line is redrawn in place.
	Progress      io.Writer
	ProgressEvery time.Duration
	TTY           bool
	// Out gets what happens (phases, faults) and the verdict. Default
	// io.Discard.
	Out io.Writer
	// ReportPath, when not empty, gets the JSON report (default
	// Dir/report.json; "-" for none).
	ReportPath string
	// Hold, when not nil, is called after the verdict while everything
	// still runs, and the run waits for it to return before it cleans up.
	Hold func(ctx context.Context, r *Report)
	// Keep keeps the edges' and the cloud's data in Dir after the run;
	// otherwise only the logs, the oracle and the report stay.
	Keep bool

	// OTA, when not nil, runs the over-the-air scenario (see OTA): the
	// traffic lasts until its rollouts are done, unless Duration or
	// Events ends it first.
	OTA *OTA
}

func (c *Config) defaults() error {
	if c.Dir == "" {
		return errors.New("simulator: Config.Dir is required")
	}
	if c.DatabaseURL == "" {
		return errors.New("simulator: Config.DatabaseURL is required")
	}
	switch c.Transport {
	case "":
		c.Transport = "mqtt"
	case "mqtt", "nats":
	default:
		return fmt.Errorf("simulator: transport %q: want mqtt or nats", c.Transport)
	}
	if c.Stores == 0 {
		c.Stores = 3
	}
	if c.Devices == 0 {
		c.Devices = 4
	}
	if c.Stores < 1 || c.Stores > 999 || c.Devices < 1 || c.Devices > 999 {
		return fmt.Errorf("simulator: %d stores of %d devices: want 1 to 999 of each", c.Stores, c.Devices)
	}
	if c.Rate == 0 {
		c.Rate = 2
	}
	if c.Rate < 0 {
		return fmt.Errorf("simulator: rate %v must be positive", c.Rate)
	}
	if c.Duration == 0 && c.Events == 0 && c.OTA == nil {
		c.Duration = time.Minute
	}
	if c.TelemetryQuota == 0 {
		c.TelemetryQuota = 24 << 10
	}
	c.QuotaEdges = min(c.QuotaEdges, c.Stores)
	c.LateTills = min(max(c.LateTills, 0), c.Stores)
	if c.LateDays <= 0 {
		c.LateDays = 7
	}
	if c.DuplicateTxn < 0 || c.DuplicateTxn > 0.5 {
		return fmt.Errorf("simulator: duplicate-transaction share %v: want 0 to 0.5", c.DuplicateTxn)
	}
	if c.Retransmit == 0 {
		c.Retransmit = 0.02
	}
	if c.Duplicate == 0 {
		c.Duplicate = 0.02
	}
	if c.Skewed == 0 {
		c.Skewed = 0.25
	}
	if c.MQTT5 == 0 {
		c.MQTT5 = 0.3
	}
	if c.BatchMax <= 0 {
		c.BatchMax = 3
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 3 * time.Minute
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = time.Second
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	for _, f := range c.Faults {
		if f.Target != "" && f.Target != "*" {
			ok := false
			for i := range c.Stores {
				ok = ok || f.Target == storeID(i)
			}
			if !ok {
				return fmt.Errorf("simulator: fault %s names edge %q; the edges are %s to %s", f, f.Target, storeID(0), storeID(c.Stores-1))
			}
		}
	}
	return nil
}

// storeID is the id of store i (from 0), which is also its edge's id.
func storeID(i int) string { return fmt.Sprintf("shop-%d", i+1) }

// StoreIDs returns the edge ids of n stores.
func StoreIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = storeID(i)
	}
	return out
}
