package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	"github.com/outpost-edge/outpost/simulator/fleet"
)

// startMosquitto starts a private Mosquitto (from PATH) on a free port
// under dir, for clouds that share an external MQTT broker. It allows
// anonymous clients: the edges' broker tokens are checked only by the
// cloud's embedded broker, so this is for measuring, not for production
// (deploy/ has a configuration for that).
func startMosquitto(ctx context.Context, dir string) (string, func(), error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return "", nil, errors.New("--broker mosquitto: no mosquitto on PATH (apt-get install mosquitto)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	addr, err := fleet.FreeAddr()
	if err != nil {
		return "", nil, err
	}
	host, port, _ := strings.Cut(addr, ":")
	conf := filepath.Join(dir, "mosquitto.conf")
	// Queues deep enough for a storm: the cloud's shared subscription
	// takes everything, and a full queue would drop QoS 1 messages.
	text := fmt.Sprintf("listener %s %s\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\nmax_inflight_messages 0\nmessage_size_limit 2097152\nlog_dest stderr\nlog_type error\nlog_type warning\n", port, host)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return "", nil, err
	}
	p := &fleet.Proc{Name: "mosquitto", Path: bin, Args: []string{"-c", conf}, Log: filepath.Join(dir, "mosquitto.log")}
	if err := p.Start(); err != nil {
		return "", nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		if !p.Running() || time.Now().After(deadline) {
			p.Kill()
			return "", nil, fmt.Errorf("mosquitto did not listen on %s: %s", addr, p.Tail(2000))
		}
		select {
		case <-ctx.Done():
			p.Kill()
			return "", nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return "tcp://" + addr, func() { p.Stop(5 * time.Second) }, nil
}

// startNATSCluster starts n nats-servers with JetStream in this process
// (n > 1: one cluster, routes between all), on free ports, storing under
// dir, and waits until JetStream has a leader. It returns their client
// URLs. No auth: as with startMosquitto, the edges' tokens are not
// checked by a broker the cloud does not run.
func startNATSCluster(dir string, n int) ([]string, func(), error) {
	ports := make([]int, 2*n)
	for i := range ports {
		a, err := fleet.FreeAddr()
		if err != nil {
			return nil, nil, err
		}
		_, p, _ := strings.Cut(a, ":")
		ports[i], _ = strconv.Atoi(p)
	}
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i]))
	}
	var servers []*natsserver.Server
	stop := func() {
		for _, s := range servers {
			s.Shutdown()
		}
		for _, s := range servers {
			s.WaitForShutdown()
		}
	}
	var urls []string
	for i := range n {
		o := &natsserver.Options{ServerName: fmt.Sprintf("load-%d", i+1), Host: "127.0.0.1", Port: ports[i],
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), MaxPayload: 2 << 20,
			NoSigs: true, NoLog: true}
		if n > 1 {
			o.Cluster = natsserver.ClusterOpts{Name: "outpost-load", Host: "127.0.0.1", Port: ports[n+i]}
			o.Routes = natsserver.RoutesFromStr(strings.Join(routes, ","))
		}
		s, err := natsserver.NewServer(o)
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("nats-server %d: %w", i+1, err)
		}
		servers = append(servers, s)
		go s.Start()
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	for i, s := range servers {
		if !s.ReadyForConnections(30 * time.Second) {
			stop()
			return nil, nil, fmt.Errorf("nats-server %d not ready within 30s", i+1)
		}
	}
	// JetStream answers once the cluster has elected a meta leader.
	nc, err := natsgo.Connect(strings.Join(urls, ","))
	if err != nil {
		stop()
		return nil, nil, err
	}
	defer nc.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		js, _ := nc.JetStream()
		if _, err := js.AccountInfo(); err == nil {
			break
		} else if time.Now().After(deadline) {
			stop()
			return nil, nil, fmt.Errorf("JetStream on %d nats-servers not ready within 60s: %v", n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return urls, stop, nil
}
