package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/firmware/firmwaretest"
	"github.com/outpost-edge/outpost/internal/keyfile"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// cmdCloud is the cloud's side of the command channel, as the contract
// (docs/OTA.md) has it, over a real broker: it answers every hello with a
// signed receipt (hwm 0: it commits nothing) and then publishes, in seq
// order, every command it keeps for the edge above the hello's cmd; keep
// signs and keeps the edge's next command and publishes it at once; push
// publishes any bytes on the edge's cmd topic (a forger on the broker).
type cmdCloud struct {
	t       *testing.T
	signer  *protocol.Signer
	publish func(edge string, msg []byte)
	url     string // what edge run's --cloud-mqtt or --cloud-nats takes
	flag    string

	mu     sync.Mutex
	kept   [][]byte // seq i+1
	hellos []protocol.Hello
	sent   atomic.Int64 // commands published
}

func (c *cmdCloud) hello(payload []byte) []byte {
	h, err := protocol.DecodeHello(payload)
	if err != nil {
		c.t.Errorf("cmd cloud: hello: %v", err)
		return nil
	}
	c.mu.Lock()
	c.hellos = append(c.hellos, h)
	c.mu.Unlock()
	return c.signer.SignReceipt(protocol.Receipt{Edge: h.Edge, Epoch: h.Epoch, HWM: 0, CommittedAt: time.Now().UnixMilli()})
}

// pending publishes what is kept above cmd, in order.
func (c *cmdCloud) pending(edge string, cmd uint64) {
	c.mu.Lock()
	var out [][]byte
	for i := cmd; i < uint64(len(c.kept)); i++ {
		out = append(out, c.kept[i])
	}
	c.mu.Unlock()
	for _, m := range out {
		c.push(edge, m)
	}
}

func (c *cmdCloud) push(edge string, msg []byte) {
	c.sent.Add(1)
	c.publish(edge, msg)
}

func (c *cmdCloud) keep(edge, kind string, body []byte) uint64 {
	c.mu.Lock()
	seq := uint64(len(c.kept) + 1)
	msg := c.signer.SignCommand(protocol.Command{Edge: edge, Seq: seq, Expires: time.Now().Add(time.Hour).UnixMilli(), Kind: kind, Body: body})
	c.kept = append(c.kept, msg)
	c.mu.Unlock()
	c.push(edge, msg)
	return seq
}

func (c *cmdCloud) assign(edge string, a protocol.Assignment) uint64 {
	if a.Channel == "" {
		a.Channel = "stable"
	}
	if a.NotAfter == 0 {
		a.NotAfter = time.Now().Add(time.Hour).UnixMilli()
	}
	return c.keep(edge, protocol.CommandAssign, protocol.EncodeAssignment(a))
}

func (c *cmdCloud) lastHello() (protocol.Hello, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.hellos) == 0 {
		return protocol.Hello{}, 0
	}
	return c.hellos[len(c.hellos)-1], len(c.hellos)
}

// startMQTTCmdCloud runs the cloud on an embedded mochi broker.
func startMQTTCmdCloud(t *testing.T, signer *protocol.Signer) *cmdCloud {
	t.Helper()
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "cloud", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	c := &cmdCloud{t: t, signer: signer, url: "tcp://" + l.Address(), flag: "--cloud-mqtt"}
	c.publish = func(edge string, msg []byte) {
		topic, _ := protocol.EdgeTopic(edge, protocol.KindCommand)
		_ = srv.Publish(topic, msg, false, 1)
	}
	err := srv.Subscribe(protocol.HelloFilterMQTT, 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		r := c.hello(pk.Payload)
		if r == nil {
			return
		}
		h, _ := protocol.DecodeHello(pk.Payload)
		topic, _ := protocol.EdgeTopic(h.Edge, protocol.KindReceipt)
		_ = srv.Publish(topic, r, false, 1)
		c.pending(h.Edge, h.Cmd)
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startNATSCmdCloud runs the cloud on an embedded nats-server with
// JetStream (a stream takes the segments; nothing commits them).
func startNATSCmdCloud(t *testing.T, signer *protocol.Signer) *cmdCloud {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "SEG", Subjects: []string{protocol.SegmentFilterNATS}}); err != nil {
		t.Fatal(err)
	}
	c := &cmdCloud{t: t, signer: signer, url: s.ClientURL(), flag: "--cloud-nats"}
	c.publish = func(edge string, msg []byte) {
		subj, _ := protocol.EdgeSubject(edge, protocol.KindCommand)
		_ = nc.Publish(subj, msg)
	}
	if _, err := nc.Subscribe(protocol.HelloFilterNATS, func(m *natsgo.Msg) {
		r := c.hello(m.Data)
		if r == nil {
			return
		}
		_ = m.Respond(r)
		h, _ := protocol.DecodeHello(m.Data)
		c.pending(h.Edge, h.Cmd)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

// assignGateway is an enrolled gateway (identity.json with the cloud key)
// running 1.0.0 under trust of a repository with releases to assign.
type assignGateway struct {
	data  string
	cloud *protocol.Signer
	repo  *firmwaretest.Repo
	arch  string
}

func newAssignGateway(t *testing.T) *assignGateway { return newAssignGatewayWith(t, "", nil) }

// newAssignGatewayWith adopts the binary adopt as 1.0.0 and signs next as
// edge-1.1.0 (shell scripts when empty: edge run installs them, nothing
// runs them).
func newAssignGatewayWith(t *testing.T, adopt string, next []byte) *assignGateway {
	t.Helper()
	dir := t.TempDir()
	if next == nil {
		next = []byte("#!/bin/sh\necho 1.1.0\n")
	}
	g := &assignGateway{data: filepath.Join(dir, "data"), cloud: protocoltest.NewSigner(t), arch: runtime.GOOS + "/" + runtime.GOARCH}
	g.repo = firmwaretest.New(t, firmwaretest.Options{Now: time.Now().UTC().Truncate(time.Second)})
	g.repo.AddTarget("edge-1.1.0", next, firmware.Custom{Version: "1.1.0", Release: 2, Channel: "stable", Arch: g.arch})
	g.repo.AddTarget("edge-1.1.0-riscv64", []byte("#!/bin/sh\necho riscv\n"), firmware.Custom{Version: "1.1.0", Release: 2, Channel: "stable", Arch: "linux/riscv64"})
	g.repo.Publish()
	_, k, _ := ed25519.GenerateKey(nil)
	if err := keyfile.Save(keyPath(g.data), k); err != nil {
		t.Fatal(err)
	}
	if err := saveIdentity(g.data, identity{Edge: "shop-1", CloudPublicKey: hex.EncodeToString(g.cloud.Public()), CloudKID: string(g.cloud.KeyID())}); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root.json")
	os.WriteFile(root, g.repo.RootBytes(1), 0o644)
	bin := adopt
	if bin == "" {
		bin = filepath.Join(dir, "edge-1.0.0")
		os.WriteFile(bin, []byte("#!/bin/sh\necho 1.0.0\n"), 0o755)
	}
	for _, args := range [][]string{{"ota", "init", "--root", root}, {"ota", "adopt", "--binary", bin, "--version", "1.0.0"}} {
		if out, code := edgeCmd(t, append(args, "--data-dir", g.data)...); code != 0 {
			t.Fatalf("%v (%d): %s", args, code, out)
		}
	}
	return g
}

func (g *assignGateway) store() *ota.Assignments {
	return &ota.Assignments{Dir: filepath.Join(g.data, "ota"), Edge: "shop-1", CloudKeys: protocol.NewKeyMap(g.cloud.Public())}
}

func (g *assignGateway) assigned(t *testing.T) *ota.Assigned {
	t.Helper()
	a, err := g.store().Current()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// waitAssigned waits for assignment seq in state and returns it.
func (g *assignGateway) waitAssigned(t *testing.T, seq uint64, state string) *ota.Assigned {
	t.Helper()
	var a *ota.Assigned
	poll.For(t, 60*time.Second, func() error {
		var err error
		if a, err = g.store().Current(); err != nil {
			return err
		}
		if a == nil || a.Seq != seq || a.State != state {
			return fmt.Errorf("assignment %+v, want command %d %s", a, seq, state)
		}
		return nil
	})
	return a
}

// exportOutbox returns `edge outbox export` of a stopped edge's data dir.
func exportOutbox(t *testing.T, data string) string {
	t.Helper()
	out, code := edgeCmd(t, "outbox", "export", "--data-dir", data)
	if code != 0 {
		t.Fatalf("export (%d): %s", code, out)
	}
	return out
}

// TestRunActsOnAssignments: edge run --ota-repo over a real broker (mochi
// for MQTT, nats-server for NATS) with a cloud that signs real commands
// with its key. A forged command (another key), one for another edge and
// an expired one are refused (ota.command_refused) and not acted on; an
// assignment of a target that is not in the signed targets, of another
// arch's target, or of a version the signed target is not, is refused
// with the reason (ota.refused); a good one is installed on probation,
// with its events carrying the target; redeliveries (every hello sends
// what is above its cmd, and the cloud pushes an old one again) add no
// event; the hello carries the last accepted seq; status shows the
// assignment.
func TestRunActsOnAssignments(t *testing.T) {
	for _, transport := range []string{"mqtt", "nats"} {
		t.Run(transport, func(t *testing.T) {
			g := newAssignGateway(t)
			var cloud *cmdCloud
			if transport == "mqtt" {
				cloud = startMQTTCmdCloud(t, g.cloud)
			} else {
				cloud = startNATSCmdCloud(t, g.cloud)
			}
			srv := httptest.NewServer(http.FileServer(http.Dir(g.repo.Dir)))
			t.Cleanup(srv.Close)
			m, logs, stop := startEdge(t, "--data-dir", g.data, "--mqtt-listen", "127.0.0.1:0", "--http-listen", "",
				"--status-listen", "127.0.0.1:0", "--log-level", "warn", cloud.flag, cloud.url, "--ota-repo", srv.URL, "--ack-timeout", "1s")
			poll.Until(t, 60*time.Second, "a hello", func() bool { _, n := cloud.lastHello(); return n > 0 })

			// A forger on the broker, a command for another edge, a late one.
			forger := protocoltest.NewSigner(t)
			body := protocol.EncodeAssignment(protocol.Assignment{Rollout: "r-x", Channel: "stable", Target: "edge-1.1.0", Version: "1.1.0", NotAfter: time.Now().Add(time.Hour).UnixMilli()})
			cloud.push("shop-1", forger.SignCommand(protocol.Command{Edge: "shop-1", Seq: 1, Expires: time.Now().Add(time.Hour).UnixMilli(), Kind: protocol.CommandAssign, Body: body}))
			cloud.push("shop-1", g.cloud.SignCommand(protocol.Command{Edge: "shop-2", Seq: 1, Expires: time.Now().Add(time.Hour).UnixMilli(), Kind: protocol.CommandAssign, Body: body}))
			cloud.push("shop-1", g.cloud.SignCommand(protocol.Command{Edge: "shop-1", Seq: 1, Expires: time.Now().Add(-time.Minute).UnixMilli(), Kind: protocol.CommandAssign, Body: body}))
			poll.For(t, 60*time.Second, func() error {
				if st := m.cmds.gate.Stats(); st.Refused != 3 {
					return fmt.Errorf("gate %+v, want 3 refused", st)
				}
				return nil
			})
			if a := g.assigned(t); a != nil {
				t.Fatalf("a refused command was kept: %+v", a)
			}

			// Refused assignments, each with its reason.
			for _, c := range []struct {
				a    protocol.Assignment
				want string
			}{
				{protocol.Assignment{Rollout: "r-1", Target: "edge-9.9.9", Version: "9.9.9"}, `target not in the signed targets: "edge-9.9.9"`},
				{protocol.Assignment{Rollout: "r-2", Target: "edge-1.1.0-riscv64", Version: "1.1.0"}, "edge-1.1.0-riscv64 is for linux/riscv64, this edge is " + g.arch},
				{protocol.Assignment{Rollout: "r-3", Target: "edge-1.1.0", Version: "1.2.0"}, "is version 1.1.0 in the signed targets, the assignment says 1.2.0"},
				{protocol.Assignment{Rollout: "r-4", Target: "edge-1.1.0", Version: "1.1.0", Channel: "beta"}, `signed for channel "stable", the assignment says "beta"`},
			} {
				seq := cloud.assign("shop-1", c.a)
				if a := g.waitAssigned(t, seq, ota.AssignRefused); !strings.Contains(a.Reason, c.want) {
					t.Fatalf("%s: refused with %q, want %q", c.a.Rollout, a.Reason, c.want)
				}
			}
			if cur, _ := (&ota.Layout{Dir: filepath.Join(g.data, "ota")}).Current(); cur != "1.0.0" {
				t.Fatalf("a refused assignment changed the release: %s", cur)
			}

			// The good one installs on probation.
			seq := cloud.assign("shop-1", protocol.Assignment{Rollout: "r-5", Target: "edge-1.1.0", Version: "1.1.0"})
			g.waitAssigned(t, seq, ota.AssignInstalled)
			l := &ota.Layout{Dir: filepath.Join(g.data, "ota")}
			if cur, _ := l.Current(); cur != "1.1.0" {
				t.Fatalf("current %s after the assignment, want 1.1.0", cur)
			}
			if p, _ := l.Pending(); p == nil || p.Version != "1.1.0" {
				t.Fatalf("pending %+v, want 1.1.0 on probation", p)
			}

			// Redeliveries: old commands again, and hellos (the ack
			// timeout says hello while no receipt comes) ask from cmd 5.
			cloud.push("shop-1", cloud.kept[0])
			cloud.push("shop-1", cloud.kept[seq-1])
			poll.For(t, 60*time.Second, func() error {
				h, _ := cloud.lastHello()
				if st := m.cmds.gate.Stats(); st.Redelivered < 2 || h.Cmd != seq {
					return fmt.Errorf("gate %+v, last hello cmd %d; want 2 redelivered and cmd %d", st, h.Cmd, seq)
				}
				return nil
			})
			st := m.Status()
			if st.OTA == nil || st.OTA.Assignment == nil || st.OTA.Assignment.Seq != seq || st.OTA.Assignment.State != ota.AssignInstalled ||
				st.OTA.Commands == nil || st.OTA.Commands.Accepted != 5 {
				t.Fatalf("/v1/status ota: %+v", st.OTA)
			}
			if out, code := edgeCmd(t, "ota", "status", "--data-dir", g.data); code != 0 || !strings.Contains(out, "edge-1.1.0 of rollout r-5 (command 5") {
				t.Fatalf("edge ota status (%d): %s", code, out)
			}
			poll.Until(t, 60*time.Second, "the spool drained", func() bool {
				_, err := os.Stat(filepath.Join(g.data, "ota", "events.jsonl"))
				return os.IsNotExist(err)
			})
			if err := stop(); err != nil {
				t.Fatalf("edge run: %v\n%s", err, logs.String())
			}
			out := exportOutbox(t, g.data)
			for kind, n := range map[string]int{`"ota.command_refused"`: 3, `"ota.command_accepted"`: 5, `"ota.refused"`: 4, `"ota.downloaded"`: 1, `"ota.verified"`: 1, `"ota.installed"`: 1} {
				if got := strings.Count(out, kind); got != n {
					t.Errorf("%d %s in the outbox, want %d", got, kind, n)
				}
			}
			for _, want := range []string{"assignment r-5 (command 5)", "unknown key", "is for edge shop-2", "expired at"} {
				if !strings.Contains(out, want) {
					t.Errorf("the outbox does not say %q", want)
				}
			}
			if t.Failed() {
				t.Logf("outbox:\n%s", out)
			}
		})
	}
}

// statusOTA reads /v1/status's ota part from a running edge.
func statusOTA(addr string) (*otaStatusJSON, error) {
	resp, err := http.Get("http://" + addr + "/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, err
	}
	return st.OTA, nil
}

// closedWindow is a daily window in UTC that opens two hours from now.
func closedWindow() string {
	now := time.Now().UTC()
	s, e := now.Add(2*time.Hour), now.Add(3*time.Hour)
	return fmt.Sprintf("%02d:%02d-%02d:%02d", s.Hour(), s.Minute(), e.Hour(), e.Minute())
}

// TestRunCancelAndReplace: an assignment waiting for its window (in its
// zone) is dropped by an ota.cancel of its rollout (ota.cancelled, nothing
// installed), and one waiting is replaced by a newer assignment, which
// installs.
func TestRunCancelAndReplace(t *testing.T) {
	g := newAssignGateway(t)
	cloud := startMQTTCmdCloud(t, g.cloud)
	srv := httptest.NewServer(http.FileServer(http.Dir(g.repo.Dir)))
	t.Cleanup(srv.Close)
	_, logs, stop := startEdge(t, "--data-dir", g.data, "--mqtt-listen", "127.0.0.1:0", "--http-listen", "",
		"--status-listen", "127.0.0.1:0", "--log-level", "warn", "--cloud-mqtt", cloud.url, "--ota-repo", srv.URL)
	poll.Until(t, 60*time.Second, "a hello", func() bool { _, n := cloud.lastHello(); return n > 0 })

	seq := cloud.assign("shop-1", protocol.Assignment{Rollout: "r-1", Target: "edge-1.1.0", Version: "1.1.0", Window: closedWindow(), Zone: "UTC"})
	poll.For(t, 60*time.Second, func() error {
		if a := g.assigned(t); a == nil || a.Seq != seq || !strings.Contains(a.Reason, "waiting for the window") {
			return fmt.Errorf("assignment %+v, want waiting for its window", a)
		}
		return nil
	})
	cloud.keep("shop-1", protocol.CommandCancel, protocol.EncodeCancel(protocol.Cancel{Rollout: "r-1", Reason: "rollout r-1 paused"}))
	if a := g.waitAssigned(t, seq, ota.AssignCancelled); !strings.Contains(a.Reason, "rollout r-1 paused") {
		t.Fatalf("cancelled: %+v", a)
	}

	old := cloud.assign("shop-1", protocol.Assignment{Rollout: "r-2", Target: "edge-1.1.0", Version: "1.1.0", Window: closedWindow(), Zone: "UTC"})
	g.waitAssigned(t, old, ota.AssignWaiting)
	seq = cloud.assign("shop-1", protocol.Assignment{Rollout: "r-3", Target: "edge-1.1.0", Version: "1.1.0"})
	g.waitAssigned(t, seq, ota.AssignInstalled)
	if cur, _ := (&ota.Layout{Dir: filepath.Join(g.data, "ota")}).Current(); cur != "1.1.0" {
		t.Fatalf("current %s", cur)
	}
	poll.Until(t, 60*time.Second, "the spool drained", func() bool {
		_, err := os.Stat(filepath.Join(g.data, "ota", "events.jsonl"))
		return os.IsNotExist(err)
	})
	if err := stop(); err != nil {
		t.Fatalf("edge run: %v\n%s", err, logs.String())
	}
	out := exportOutbox(t, g.data)
	for kind, n := range map[string]int{`"ota.cancelled"`: 1, `"ota.installed"`: 1, `"ota.command_accepted"`: 4} {
		if got := strings.Count(out, kind); got != n {
			t.Errorf("%d %s in the outbox, want %d", got, kind, n)
		}
	}
	if !strings.Contains(out, "assignment r-3 (command 4)") {
		t.Errorf("the install does not name the newer assignment:\n%s", out)
	}
}

// TestOTAInstallNeedsAssignment: `edge ota install --repo --target T` (the
// Uptane rule) installs T only when the edge holds a valid assignment for
// it, and its event names the assignment; a target the assignment is not
// for is refused, saying what it is for.
func TestOTAInstallNeedsAssignment(t *testing.T) {
	g := newAssignGateway(t)
	st := g.store()
	st.Spool = otaSpool(st.Dir)
	gate := &ota.CommandGate{Path: filepath.Join(st.Dir, "commands.json"), Edge: "shop-1", CloudKeys: st.CloudKeys, Spool: st.Spool, Keep: st.Keep}
	msg := g.cloud.SignCommand(protocol.Command{Edge: "shop-1", Seq: 1, Expires: time.Now().Add(time.Hour).UnixMilli(), Kind: protocol.CommandAssign,
		Body: protocol.EncodeAssignment(protocol.Assignment{Rollout: "r-1", Channel: "stable", Target: "edge-1.1.0", Version: "1.1.0", NotAfter: time.Now().Add(time.Hour).UnixMilli()})})
	if _, err := gate.Accept(msg); err != nil {
		t.Fatal(err)
	}
	if out, code := edgeCmd(t, "ota", "install", "--data-dir", g.data, "--repo", g.repo.Dir, "--target", "edge-1.1.0-riscv64"); code == 0 ||
		!strings.Contains(out, "is for edge-1.1.0") || !strings.Contains(out, "--without-assignment") {
		t.Fatalf("install of an unassigned target (%d): %s", code, out)
	}
	out, code := edgeCmd(t, "ota", "install", "--data-dir", g.data, "--repo", g.repo.Dir, "--target", "edge-1.1.0")
	if code != 0 || !strings.Contains(out, "assignment r-1 (command 1)") {
		t.Fatalf("install of the assigned target (%d): %s", code, out)
	}
	if a := g.assigned(t); a.State != ota.AssignInstalled {
		t.Fatalf("assignment after the install: %+v", a)
	}
	var installed string
	otaSpool(st.Dir).Drain(func(evs []ota.Event) error {
		for _, e := range evs {
			if e.Kind == "ota.installed" {
				installed = e.Reason
			}
		}
		return nil
	})
	if !strings.Contains(installed, "assignment r-1 (command 1)") {
		t.Fatalf("ota.installed reason %q", installed)
	}
}

// TestRunOTARepoFlag: --ota-repo is read from the flag, OUTPOST_OTA_REPO
// and the config file; without an uplink or a cloud key it stops start-up
// naming the flag.
func TestRunOTARepoFlag(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "edge.conf")
	os.WriteFile(cfg, []byte("ota-repo = http://from-file/v1/ota/repo\n"), 0o644)
	m := NewMain(os.Stderr, os.Stderr)
	if err := m.ParseFlags([]string{"--config", cfg}); err != nil || m.Config.OTARepo != "http://from-file/v1/ota/repo" {
		t.Fatalf("config file: %q %v", m.Config.OTARepo, err)
	}
	t.Setenv("OUTPOST_OTA_REPO", "http://from-env/v1/ota/repo")
	m = NewMain(os.Stderr, os.Stderr)
	if err := m.ParseFlags(nil); err != nil || m.Config.OTARepo != "http://from-env/v1/ota/repo" {
		t.Fatalf("environment: %q %v", m.Config.OTARepo, err)
	}
	g := newAssignGateway(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--ota-repo", "http://x"}, "--ota-repo needs an uplink"},
		{[]string{"--ota-repo", "http://x", "--edge-id", "shop-9", "--data-dir", t.TempDir(), "--cloud-mqtt", "tcp://127.0.0.1:1"}, "--ota-repo: no cloud key"},
	} {
		args := append([]string{"run", "--data-dir", g.data, "--mqtt-listen", "127.0.0.1:0", "--http-listen", "", "--status-listen", "127.0.0.1:0"}, c.args...)
		if out, code := edgeCmd(t, args...); code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, %s; want 2 and %q", c.args, code, out, c.want)
		}
	}
}

// TestRunNoInstallAfterNotAfter: an assignment's not_after is the latest
// moment its install may start. One whose download began in time but
// finished after not_after (a thin link, a repository that stalls) is
// refused, and the release stays as it was.
func TestRunNoInstallAfterNotAfter(t *testing.T) {
	g := newAssignGateway(t)
	cloud := startMQTTCmdCloud(t, g.cloud)
	release := make(chan struct{})
	files := http.FileServer(http.Dir(g.repo.Dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/targets/edge-1.1.0") {
			select { // the artifact stalls until the test lets it go
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	_, logs, stop := startEdge(t, "--data-dir", g.data, "--mqtt-listen", "127.0.0.1:0", "--http-listen", "",
		"--status-listen", "127.0.0.1:0", "--log-level", "warn", "--cloud-mqtt", cloud.url, "--ota-repo", srv.URL)
	poll.Until(t, 60*time.Second, "a hello", func() bool { _, n := cloud.lastHello(); return n > 0 })

	notAfter := time.Now().Add(20 * time.Second)
	seq := cloud.assign("shop-1", protocol.Assignment{Rollout: "r-1", Target: "edge-1.1.0", Version: "1.1.0", NotAfter: notAfter.UnixMilli()})
	poll.For(t, 60*time.Second, func() error {
		a := g.assigned(t)
		if a != nil && a.Seq == seq && (a.State == ota.AssignDownloading || a.State == ota.AssignRefused) {
			return nil
		}
		return fmt.Errorf("assignment %+v, want downloading", a)
	})
	poll.Until(t, 60*time.Second, "not_after passed", func() bool { return time.Now().After(notAfter.Add(time.Second)) })
	close(release)
	a := g.waitAssigned(t, seq, ota.AssignRefused)
	if !strings.Contains(a.Reason, "not_after") {
		t.Errorf("refused with %q, want it to name the not_after", a.Reason)
	}
	if cur, _ := (&ota.Layout{Dir: filepath.Join(g.data, "ota")}).Current(); cur != "1.0.0" {
		t.Fatalf("the release is %s after the assignment's not_after, want 1.0.0 still", cur)
	}
	if err := stop(); err != nil {
		t.Fatalf("edge run: %v\n%s", err, logs.String())
	}
}
