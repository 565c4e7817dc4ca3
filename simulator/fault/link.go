package fault

import (
	"context"
	"fmt"
	"strings"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// Link is a TCP proxy (toxiproxy's, in process) between one edge and the
// cloud's broker: the edge's --cloud-mqtt points at Addr. Through it the
// simulator cuts, blackholes, slows and throttles that edge's uplink.
type Link struct {
	name string
	p    *toxiproxy.Proxy

	mu   sync.Mutex
	mode Kind // "" when healthy
}

var (
	quietOnce sync.Once
	server    *toxiproxy.ApiServer
)

// NewLink starts a proxy to upstream on a free port of 127.0.0.1.
func NewLink(name, upstream string) (*Link, error) {
	quietOnce.Do(func() {
		// toxiproxy logs through zerolog's global logger, some of it per
		// chunk of data at trace level; the simulator's output is its own.
		zerolog.SetGlobalLevel(zerolog.Disabled)
		server = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	})
	p := toxiproxy.NewProxy(server, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("uplink proxy %s: %w", name, err)
	}
	return &Link{name: name, p: p}, nil
}

// Addr is where the edge connects.
func (l *Link) Addr() string {
	l.p.Lock()
	defer l.p.Unlock()
	return l.p.Listen
}

// Mode returns the fault the link is under ("" when healthy).
func (l *Link) Mode() Kind {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mode
}

// Apply puts the link under fault f (Cut, Blackhole, Slow or Throttle),
// after healing whatever it was under.
func (l *Link) Apply(f Fault) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.heal(); err != nil {
		return err
	}
	switch f.Kind {
	case Cut:
		// Close the listener and every connection: the edge sees resets,
		// then refused connections.
		l.p.Stop()
	case Blackhole:
		// Connections stay open and everything sent is dropped, as on a
		// link that died without a word; new connections are accepted
		// and go nowhere either.
		for _, dir := range []string{"upstream", "downstream"} {
			if err := l.toxic(fmt.Sprintf(`{"name":"blackhole_%s","type":"timeout","stream":"%s","attributes":{"timeout":0}}`, dir, dir)); err != nil {
				return err
			}
		}
	case Slow:
		for _, dir := range []string{"upstream", "downstream"} {
			if err := l.toxic(fmt.Sprintf(`{"name":"slow_%s","type":"latency","stream":"%s","attributes":{"latency":%d,"jitter":%d}}`,
				dir, dir, f.Latency.Milliseconds(), f.Jitter.Milliseconds())); err != nil {
				return err
			}
		}
	case Throttle:
		for _, dir := range []string{"upstream", "downstream"} {
			if err := l.toxic(fmt.Sprintf(`{"name":"throttle_%s","type":"bandwidth","stream":"%s","attributes":{"rate":%d}}`,
				dir, dir, f.RateKBps)); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("fault %s is not a link fault", f.Kind)
	}
	l.mode = f.Kind
	return nil
}

func (l *Link) toxic(js string) error {
	if _, err := l.p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		return fmt.Errorf("uplink proxy %s: add toxic: %w", l.name, err)
	}
	return nil
}

// Heal ends the link's fault.
func (l *Link) Heal() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heal()
}

func (l *Link) heal() error {
	mode := l.mode
	l.mode = ""
	switch mode {
	case "":
		return nil
	case Cut:
		return l.p.Start() // on the same address: Listen holds the port it got
	case Blackhole:
		// What was dropped leaves the connections' streams torn; close
		// them, as a real link's timeouts would, and start afresh.
		l.p.Toxics.ResetToxics(context.Background())
		l.p.Stop()
		return l.p.Start()
	default:
		l.p.Toxics.ResetToxics(context.Background())
		return nil
	}
}

// Close stops the proxy and closes its connections.
func (l *Link) Close() {
	l.p.Toxics.ResetToxics(context.Background())
	l.p.Stop()
}
