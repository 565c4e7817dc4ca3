package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Transports a run can use.
const (
	MQTT = "mqtt"
	NATS = "nats"
)

// Config describes a load run. Zero fields take the defaults New documents.
type Config struct {
	// Cloud is the cloud under load: its API, an admin token, and where
	// edges reach its broker.
	Cloud Cloud

	Transport string // MQTT (default) or NATS
	Edges     int    // synthetic edges, default 50
	// EdgePrefix starts every edge id (default "load"): edge i is
	// {prefix}-{i}. A run's ids must be new to the cloud.
	EdgePrefix string

	// Backlog is how many events each edge holds when it first connects:
	// an edge that was offline (the reconnect storm). ConnectWithin spreads
	// the edges' first connects evenly over that long (0: all at once).
	Backlog       int
	ConnectWithin time.Duration
	// Rate is each edge's live events per second (Poisson arrivals) for
	// Duration after it connects; 0 makes no live traffic. Saturate
	// instead gives each edge an endless backlog for Duration: the fleet
	// sends as fast as the cloud receipts.
	Rate     float64
	Duration time.Duration
	Saturate bool

	// A segment holds at most SegmentRecords records (default 1000) and
	// SegmentBytes bytes (default 256 KiB, the edge's --segment-bytes).
	SegmentRecords int
	SegmentBytes   int
	Window         int // segments in flight per edge, default 8 (the edge's --window)
	// AckTimeout: when no receipt moves the watermark for this long after
	// the broker took the oldest segment in flight, the edge says hello and
	// waits again or resends by its answer, as the edge's uplink does
	// (default 30s, its default; it doubles up to 8× until a receipt).
	AckTimeout time.Duration
	// HelloTimeout: a hello whose answer does not come within this long
	// ends the session, and the edge connects again (default 10s, the
	// edge uplink's).
	HelloTimeout time.Duration
	// DrainTimeout bounds the wait for every edge to be receipted up to its
	// head, after the traffic (default 5m).
	DrainTimeout time.Duration
	// Workers is how many commit workers the cloud runs, for the ceiling
	// measured with as many COPY streams (default 2, cloud serve's).
	Workers int

	// Ceiling, when not nil, measures the plain COPY ceiling of rows like
	// those of segs in the cloud's database; the run reports its rates as
	// ratios to it.
	Ceiling func(ctx context.Context, segs []*protocol.Segment, workers int) (Ceiling, error)
	// CloudRSS, when not nil, returns the cloud process's peak resident
	// memory so far in bytes (0 when not known).
	CloudRSS func() uint64
	// CloudCPU, when not nil, returns the CPU time the cloud process has
	// used so far (user and system).
	CloudCPU func() time.Duration
	// DatabaseCPU, when not nil, returns the CPU time the Postgres server
	// (all its processes) has used so far.
	DatabaseCPU func() time.Duration
	// Check reads every stream back from the API at the end (default on;
	// NoCheck turns it off, for a measurement of an earlier checked size).
	NoCheck bool

	Seed uint64
	// Out gets what happens, and progress every ProgressEvery (default 5s).
	Out           io.Writer
	ProgressEvery time.Duration
}

// Cloud is where the cloud under load is.
type Cloud struct {
	API        string // http://host:port
	AdminToken string
	MQTT       string // the broker edges reach over MQTT: host:port or tcp://host:port
	NATS       string // the NATS server(s): nats://host:port
}

// Ceiling is the plain COPY ceiling measured in a run, in rows per second.
type Ceiling struct {
	Rows        int     `json:"rows"`
	OneStream   float64 `json:"one_stream_rows_per_s"`   // one COPY at a time
	SameWorkers float64 `json:"same_workers_rows_per_s"` // Workers COPYs at once
	Workers     int     `json:"workers"`
}

func (c *Config) defaults() error {
	if c.Cloud.API == "" || c.Cloud.AdminToken == "" {
		return errors.New("load: the cloud's API URL and an admin token are required")
	}
	if c.Transport == "" {
		c.Transport = MQTT
	}
	switch c.Transport {
	case MQTT:
		if c.Cloud.MQTT == "" {
			return errors.New("load: transport mqtt needs the cloud's MQTT broker address")
		}
	case NATS:
		if c.Cloud.NATS == "" {
			return errors.New("load: transport nats needs the cloud's NATS server URL")
		}
	default:
		return fmt.Errorf("load: transport %q: want mqtt or nats", c.Transport)
	}
	if c.Edges == 0 {
		c.Edges = 50
	}
	if c.Edges < 1 || c.Edges > 100000 {
		return fmt.Errorf("load: %d edges: want 1 to 100000", c.Edges)
	}
	if c.EdgePrefix == "" {
		c.EdgePrefix = "load"
	}
	if err := protocol.ValidateName("edge prefix", c.EdgePrefix); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if c.Backlog < 0 || c.Rate < 0 || c.Duration < 0 || c.ConnectWithin < 0 {
		return errors.New("load: backlog, rate, duration and connect spread must not be negative")
	}
	if (c.Rate > 0 || c.Saturate) && c.Duration == 0 {
		return errors.New("load: live traffic (a rate, or saturate) needs a duration")
	}
	if c.Backlog == 0 && c.Rate == 0 && !c.Saturate {
		return errors.New("load: nothing to send: give a backlog, a rate or saturate")
	}
	if c.SegmentRecords <= 0 {
		c.SegmentRecords = 1000
	}
	c.SegmentRecords = min(c.SegmentRecords, protocol.MaxSegmentRecs)
	if c.SegmentBytes <= 0 {
		c.SegmentBytes = 256 << 10
	}
	if c.SegmentBytes < 4<<10 || c.SegmentBytes > protocol.MaxSegmentBytes {
		return fmt.Errorf("load: segment bytes %d: want 4 KiB to %d", c.SegmentBytes, protocol.MaxSegmentBytes)
	}
	if c.Window <= 0 {
		c.Window = 8
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 30 * time.Second
	}
	if c.HelloTimeout <= 0 {
		c.HelloTimeout = 10 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 5 * time.Minute
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = 5 * time.Second
	}
	return nil
}
