package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CloudOptions configure the cloud.
type CloudOptions struct {
	Binary      string // the cloud program
	Dir         string // its --data-dir (the cloud's key)
	LogDir      string
	DatabaseURL string
	// NATS runs the cloud's embedded nats-server (--nats-embedded) on a
	// free port, next to its MQTT broker; Cloud.NATS is its URL.
	NATS bool
	// ExternalNATS and ExternalMQTT point the cloud at brokers it does not
	// run (--nats, --mqtt), which several clouds can share; with either,
	// the embedded MQTT broker is off.
	ExternalNATS string
	ExternalMQTT string
	// KeyFrom, when set, is another cloud's key file (KeyPath), copied
	// into Dir before the first start: replicas of one cloud sign
	// receipts with one key, which the edges pinned.
	KeyFrom string
	// LogName is the log file's name in LogDir (default cloud.log).
	LogName string
	Args    []string // more flags for `cloud serve`
}

// Cloud is a running `cloud serve` with its embedded broker.
type Cloud struct {
	o          CloudOptions
	Proc       *Proc
	API        string // http://127.0.0.1:port
	MQTT       string // the embedded broker, 127.0.0.1:port ("" with an external one)
	NATS       string // the embedded NATS server, nats://127.0.0.1:port, when asked for
	AdminToken string
}

// StartCloud starts the cloud (migrating the database), waits until it is
// ready, and makes an admin API token with `cloud tokens create --admin`.
func StartCloud(ctx context.Context, o CloudOptions) (*Cloud, error) {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	if o.KeyFrom != "" {
		b, err := os.ReadFile(o.KeyFrom)
		if err != nil {
			return nil, fmt.Errorf("the cloud key to share: %w", err)
		}
		if err := os.WriteFile(filepath.Join(o.Dir, "cloud.key"), b, 0o600); err != nil {
			return nil, err
		}
	}
	if o.LogName == "" {
		o.LogName = "cloud.log"
	}
	// The database URL goes in the environment, not on the command line,
	// where ps would show a password in it.
	env := []string{"OUTPOST_DATABASE_URL=" + o.DatabaseURL}
	var c *Cloud
	for attempt := 1; ; attempt++ {
		api, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		mqtt, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		c = &Cloud{o: o, API: "http://" + api, MQTT: mqtt}
		args := []string{"serve", "--migrate", "--data-dir", o.Dir, "--http", api, "--gap-wait", "500ms", "--drain-timeout", "3s"}
		switch {
		case o.ExternalMQTT != "" || o.ExternalNATS != "":
			c.MQTT = ""
			args = append(args, "--mqtt-listen=")
			if o.ExternalMQTT != "" {
				args = append(args, "--mqtt", o.ExternalMQTT)
			}
			if o.ExternalNATS != "" {
				args = append(args, "--nats", o.ExternalNATS)
			}
		default:
			args = append(args, "--mqtt-listen", mqtt)
		}
		if o.NATS {
			na, err := FreeAddr()
			if err != nil {
				return nil, err
			}
			c.NATS = "nats://" + na
			args = append(args, "--nats-embedded", "--nats-listen", na, "--nats-store", filepath.Join(o.Dir, "nats"))
		}
		args = append(args, o.Args...)
		c.Proc = &Proc{Name: "cloud", Path: o.Binary, Args: args, Env: env, Log: filepath.Join(o.LogDir, o.LogName)}
		err = c.Start(ctx)
		if err == nil {
			break
		}
		// Another program may take a free port before the cloud binds it.
		if attempt == 3 || !portTaken(c.Proc) {
			return c, err
		}
	}
	name := fmt.Sprintf("sim-%d", time.Now().UnixNano())
	tok, err := runTool(ctx, env, o.Binary, "tokens", "create", "--admin", "--name", name, "--data-dir", o.Dir)
	if err != nil {
		return c, err
	}
	c.AdminToken = tok
	return c, nil
}

// Start starts the cloud process and waits until /readyz says ready.
func (c *Cloud) Start(ctx context.Context) error {
	if err := c.Proc.Start(); err != nil {
		return err
	}
	return c.WaitReady(ctx, 90*time.Second)
}

// WaitReady waits until the cloud answers /readyz with 200.
func (c *Cloud) WaitReady(ctx context.Context, timeout time.Duration) error {
	err := waitFor(ctx, "the cloud to be ready", timeout, func() bool {
		return c.Proc.Running() && getJSON(ctx, c.API+"/readyz", "", nil) == nil
	})
	if err != nil && !c.Proc.Running() {
		return fmt.Errorf("the cloud exited; the end of %s:\n%s", c.Proc.Log, c.Proc.Tail(3000))
	}
	return err
}

// KeyPath is the cloud's signing key file (in its --data-dir).
func (c *Cloud) KeyPath() string { return filepath.Join(c.o.Dir, "cloud.key") }

// Kill kills the cloud with SIGKILL.
func (c *Cloud) Kill() { c.Proc.Kill() }

// Stop stops the cloud gracefully.
func (c *Cloud) Stop() { c.Proc.Stop(15 * time.Second) }

// EnrollToken makes a one-time enrollment token for edge with POST
// /v1/tokens; with store, for an edge of that store of the tenant
// "default" (AddStore it first).
func (c *Cloud) EnrollToken(ctx context.Context, edge, store string) (string, error) {
	fields := map[string]string{"edge": edge, "ttl": "1h"}
	if store != "" {
		fields["tenant"], fields["store"] = "default", store
	}
	body, _ := json.Marshal(fields)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.API+"/v1/tokens", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("POST /v1/tokens: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("POST /v1/tokens: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var r struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Token == "" {
		return "", fmt.Errorf("POST /v1/tokens: no token in %s", b)
	}
	return r.Token, nil
}

// AddStore registers a store of the tenant "default" (the tenant the
// enrolled edges are in) with POST /v1/stores, so that the cloud's reports
// count its sales. A store that exists already is left as it is.
func (c *Cloud) AddStore(ctx context.Context, id, name, zone, currency string) error {
	body, _ := json.Marshal(map[string]string{"tenant": "default", "id": id, "name": name, "time_zone": zone, "currency": currency})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.API+"/v1/stores", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("POST /v1/stores: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
		return fmt.Errorf("POST /v1/stores: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// StreamState is a stream's watermark as GET /v1/streams shows it.
type StreamState struct {
	Edge  string `json:"edge"`
	Epoch string `json:"epoch"`
	HWM   uint64 `json:"hwm"`
	Lag   uint64 `json:"lag"`
}

// Streams reads every stream's watermark.
func (c *Cloud) Streams(ctx context.Context) ([]StreamState, error) {
	var body struct {
		Streams []StreamState `json:"streams"`
	}
	err := getJSON(ctx, c.API+"/v1/streams", c.AdminToken, &body)
	return body.Streams, err
}
