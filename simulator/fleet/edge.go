package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// EdgeOptions configure one edge.
type EdgeOptions struct {
	ID        string
	Binary    string
	Dir       string // its --data-dir
	LogDir    string
	CloudMQTT string // the broker address it uplinks to (the fault proxy's)
	// CloudNATS, when set instead, is the NATS server address (host:port)
	// it uplinks to over NATS JetStream.
	CloudNATS string
	// TelemetryQuota, when not 0, is its --telemetry-quota in bytes.
	TelemetryQuota int64
	Args           []string // more flags for `edge run`
	// Supervise, when not nil, runs the edge under `edge supervise`,
	// which runs the current OTA release (`edge ota adopt` the first one
	// before the start) and decides the probation of new ones.
	Supervise *Supervise
}

// Supervise configures `edge supervise` (its flags of the same names).
type Supervise struct {
	Probation    time.Duration // default 15s
	ReadyTimeout time.Duration // default 20s
	MaxAttempts  int           // default the edge's own (3)
}

// Edge is one store's edge.
type Edge struct {
	o      EdgeOptions
	Proc   *Proc
	MQTT   string // the device MQTT listener, 127.0.0.1:port
	HTTP   string // the device HTTP listener
	Status string // the status listener

	mu      sync.Mutex
	secrets map[string]string
}

// NewEdge picks the edge's ports. It does not start it.
func NewEdge(o EdgeOptions) (*Edge, error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	e := &Edge{o: o, secrets: map[string]string{}}
	e.Proc = &Proc{Name: "edge " + o.ID, Path: o.Binary, Log: filepath.Join(o.LogDir, o.ID+".log")}
	return e, e.pickPorts()
}

// pickPorts picks the edge's listeners' addresses and its arguments.
func (e *Edge) pickPorts() error {
	for _, p := range []*string{&e.MQTT, &e.HTTP, &e.Status} {
		a, err := FreeAddr()
		if err != nil {
			return err
		}
		*p = a
	}
	o := e.o
	uplink := []string{"--cloud-mqtt", "tcp://" + o.CloudMQTT}
	if o.CloudNATS != "" {
		uplink = []string{"--cloud-nats", "nats://" + o.CloudNATS}
	}
	args := append([]string{"run", "--data-dir", o.Dir}, uplink...)
	args = append(args, "--mqtt-listen", e.MQTT, "--http-listen", e.HTTP, "--status-listen", e.Status, "--ack-timeout", "5s")
	if o.TelemetryQuota > 0 {
		args = append(args, "--telemetry-quota", strconv.FormatInt(o.TelemetryQuota, 10))
	}
	args = append(args, o.Args...)
	if s := o.Supervise; s != nil {
		// The supervisor gives its child --data-dir and --status-listen
		// itself, and probes that /healthz.
		sup := []string{"supervise", "--data-dir", o.Dir, "--status-listen", e.Status,
			"--probation", orDefault(s.Probation, 15*time.Second).String(),
			"--ready-timeout", orDefault(s.ReadyTimeout, 20*time.Second).String()}
		if s.MaxAttempts > 0 {
			sup = append(sup, "--max-attempts", strconv.Itoa(s.MaxAttempts))
		}
		args = append(append(sup, "--"), args[3:]...)
	}
	e.Proc.Args = args
	return nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Dir returns the edge's data directory.
func (e *Edge) Dir() string { return e.o.Dir }

// ID returns the edge's id.
func (e *Edge) ID() string { return e.o.ID }

// TelemetryQuota returns the quota it runs with (0: the default).
func (e *Edge) TelemetryQuota() int64 { return e.o.TelemetryQuota }

// Enroll registers the edge with the cloud: `edge enroll` with a one-time
// token.
func (e *Edge) Enroll(ctx context.Context, cloudAPI, token string) error {
	_, err := runTool(ctx, nil, e.o.Binary, "enroll", "--cloud", cloudAPI, "--token", token, "--data-dir", e.o.Dir)
	return err
}

// AddDevice adds a device's credentials (`edge devices add`) and returns
// its secret.
func (e *Edge) AddDevice(ctx context.Context, id string) (string, error) {
	sec, err := runTool(ctx, nil, e.o.Binary, "devices", "add", "--id", id, "--data-dir", e.o.Dir)
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	e.secrets[id] = sec
	e.mu.Unlock()
	return sec, nil
}

// OTAInit provisions the edge's release trust with the release signers'
// root (`edge ota init --root`).
func (e *Edge) OTAInit(ctx context.Context, root string) error {
	_, err := runTool(ctx, nil, e.o.Binary, "ota", "init", "--data-dir", e.o.Dir, "--root", root)
	return err
}

// Adopt makes binary, of version, the edge's first, committed release
// (`edge ota adopt`): the one `edge supervise` starts.
func (e *Edge) Adopt(ctx context.Context, binary, version string) error {
	_, err := runTool(ctx, nil, e.o.Binary, "ota", "adopt", "--data-dir", e.o.Dir, "--binary", binary, "--version", version)
	return err
}

// OTAStatus is what `edge ota status --json` says (the fields the
// simulator reads); it reads the edge's files, so it answers whether or
// not the release runs.
type OTAStatus struct {
	Current   string `json:"current"`
	Committed string `json:"committed"`
	Previous  string `json:"previous"`
	Pending   *struct {
		Version  string `json:"version"`
		Attempts int    `json:"attempts"`
	} `json:"pending"`
	KnownBad map[string]string `json:"known_bad"`
	Floor    uint64            `json:"floor"`
}

// OTA reads the edge's release state with `edge ota status --json`.
func (e *Edge) OTA(ctx context.Context) (OTAStatus, error) {
	var st OTAStatus
	out, err := runTool(ctx, nil, e.o.Binary, "ota", "status", "--data-dir", e.o.Dir, "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("edge %s: ota status: %w: %q", e.o.ID, err, out)
	}
	return st, nil
}

// Secret returns a device's secret.
func (e *Edge) Secret(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.secrets[id]
}

// Start starts the edge and waits until its status endpoint answers. The
// first start picks other ports when another program took one of those
// picked before the edge could bind it; later starts keep the ports, where
// the devices reconnect.
func (e *Edge) Start(ctx context.Context) error {
	first := e.Proc.Starts() == 0
	for attempt := 1; ; attempt++ {
		err := e.start(ctx)
		if err == nil || !first || attempt == 3 || !portTaken(e.Proc) {
			return err
		}
		if err := e.pickPorts(); err != nil {
			return err
		}
	}
}

func (e *Edge) start(ctx context.Context) error {
	if err := e.Proc.Start(); err != nil {
		return err
	}
	err := waitFor(ctx, "edge "+e.o.ID+" to be up", 60*time.Second, func() bool {
		return e.Proc.Running() && getJSON(ctx, "http://"+e.Status+"/healthz", "", nil) == nil
	})
	if err != nil && !e.Proc.Running() {
		return fmt.Errorf("edge %s exited; the end of %s:\n%s", e.o.ID, e.Proc.Log, e.Proc.Tail(3000))
	}
	return err
}

// Kill kills the edge with SIGKILL.
func (e *Edge) Kill() { e.Proc.Kill() }

// Stop stops the edge gracefully.
func (e *Edge) Stop() { e.Proc.Stop(15 * time.Second) }

// EdgeStatus is what the edge's GET /v1/status says (the fields the
// simulator reads).
type EdgeStatus struct {
	Edge     string `json:"edge"`
	Epoch    string `json:"epoch"`
	NextSeq  uint64 `json:"next_seq"`
	AckedHWM uint64 `json:"acked_hwm"`
	Backlog  uint64 `json:"backlog"`
	Shed     uint64 `json:"shed"`
	Uplink   *struct {
		Connected bool   `json:"connected"`
		State     string `json:"state"`
	} `json:"uplink"`
	Intake struct {
		Events   uint64 `json:"events"`
		Acked    uint64 `json:"acked"`
		Dups     uint64 `json:"duplicates"`
		Rejected uint64 `json:"rejected_kept"`
	} `json:"intake"`
	// OTA is the updater's state (nil on an edge without one).
	OTA *OTAStatus `json:"ota"`
}

// Head returns the last seq the edge stored.
func (s EdgeStatus) Head() uint64 {
	if s.NextSeq == 0 {
		return 0
	}
	return s.NextSeq - 1
}

// Drained reports whether the cloud has acknowledged everything stored.
func (s EdgeStatus) Drained() bool { return s.AckedHWM >= s.Head() }

// State reads the edge's status.
func (e *Edge) State(ctx context.Context) (EdgeStatus, error) {
	var s EdgeStatus
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := getJSON(ctx, "http://"+e.Status+"/v1/status", "", &s)
	return s, err
}
