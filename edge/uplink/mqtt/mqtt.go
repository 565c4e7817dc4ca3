// Package mqtt is the uplink's MQTT transport (paho.mqtt.golang): segments
// and hellos go to outpost/v1/edge/{edge}/seg and .../hello at QoS 1, and
// receipts and nacks come back on .../rcpt.
//
// Each session is a fresh clean-session client: nothing is queued for the
// edge while it is away, because every session starts with a hello that
// gets the cloud's latest receipt. The edge logs in with its edge id and a
// fresh broker token for MQTT (uplink.Tokens: one use, no clock needed)
// unless a static password is configured.
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/internal/tlsconf"
	"github.com/outpost-edge/outpost/protocol"
)

// Options configure the transport.
type Options struct {
	Broker string // tcp://host:1883, ssl://host:8883, ws://…
	Edge   string
	// Tokens makes the broker tokens when Password is empty
	// (*uplink.Tokens, with the counter file and the cloud's key id).
	Tokens uplink.TokenSource
	// Signer is used without Tokens: an in-memory uplink.Tokens with no
	// cloud key id in the audience (for tests).
	Signer   *protocol.Signer
	Username string // default: the edge id
	Password string // a static password instead of a broker token
	TLS      *tls.Config
	// CAFile, CertFile and KeyFile are PEM files: the CAs that sign the
	// broker's certificate (default: the system's roots), and a client
	// certificate and its key for brokers that require one. They are
	// added to TLS (or a new config). Use an ssl:// broker URL.
	CAFile   string
	CertFile string
	KeyFile  string

	ConnectTimeout time.Duration // default 10s
	KeepAlive      time.Duration // default 30s
	// PublishTimeout is how long a segment may wait for its PUBACK while
	// nothing at all comes from the broker (no PUBACK, no receipt) before
	// the session is called lost; default 2m. The cloud's embedded broker
	// holds a segment before its PUBACK while ingest is behind, edges
	// taking turns (a turn of a 1,000-edge fleet took over 30s, the old
	// default, in saturation), and each receipt that comes meanwhile shows
	// the broker alive, so it starts the wait again.
	PublishTimeout time.Duration
	// OnCommand, when set, is given every message on the edge's own
	// command topic (outpost/v1/edge/{edge}/cmd, subscribed at QoS 1 in
	// every session before the hello, so the commands the hello asks for
	// are not missed), in arrival order, from the client's goroutine: it
	// must not block. The bytes are untrusted (ota.CommandGate checks
	// them).
	OnCommand func(msg []byte)
	Now       func() time.Time
	Logger    *slog.Logger
}

// Transport implements uplink.Transport over MQTT.
type Transport struct {
	o                               Options
	segTopic, helloTopic, rcpt, cmd string

	mu      sync.Mutex
	client  paho.Client
	ended   *uplink.Ended
	pending *pendingAcks
	heard   atomic.Int64   // unix nanos of the last message from the broker on the rcpt topic (the session's)
	wg      sync.WaitGroup // the session's ack watcher
	// accCh is signalled when a session's PUBACK count moves (Accepter).
	accCh chan struct{}
}

// pendingAcks is a session's segment publishes whose PUBACK has not been
// seen, oldest first. One watcher goroutine per session owns the waiting
// (not one per publish): the deadlines are in publish order, so it only
// ever waits for the oldest.
type pendingAcks struct {
	mu       sync.Mutex
	queue    []pendingAck
	more     chan struct{} // a publish was added; capacity 1
	accepted uint64        // PUBACKs seen, in publish order (Accepted)
}

type pendingAck struct {
	tok      paho.Token
	deadline time.Time
}

func (p *pendingAcks) add(tok paho.Token, deadline time.Time) {
	p.mu.Lock()
	p.queue = append(p.queue, pendingAck{tok, deadline})
	p.mu.Unlock()
	select {
	case p.more <- struct{}{}:
	default:
	}
}

func (p *pendingAcks) oldest() (pendingAck, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return pendingAck{}, false
	}
	return p.queue[0], true
}

// extend moves the oldest publish's deadline to at.
func (p *pendingAcks) extend(at time.Time) {
	p.mu.Lock()
	if len(p.queue) > 0 && at.After(p.queue[0].deadline) {
		p.queue[0].deadline = at
	}
	p.mu.Unlock()
}

func (p *pendingAcks) pop() {
	p.mu.Lock()
	p.queue[0] = pendingAck{}
	p.queue = p.queue[1:]
	p.accepted++
	p.mu.Unlock()
}

// Accepted is how many of the session's segment publishes the broker has
// acknowledged (uplink.Accepter): PUBACKs come in publish order, so they
// are the first ones. A segment without its PUBACK is held by the broker
// (the cloud's embedded broker stops reading an edge while ingest is
// behind) or on its way; the uplink's ack timeout does not run for it.
func (t *Transport) Accepted() uint64 {
	t.mu.Lock()
	p := t.pending
	t.mu.Unlock()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// AcceptedChanged receives after Accepted moves.
func (t *Transport) AcceptedChanged() <-chan struct{} { return t.accCh }

// Pending is the number of segment publishes waiting for their PUBACK.
func (t *Transport) Pending() int {
	t.mu.Lock()
	p := t.pending
	t.mu.Unlock()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// watch ends the session when a segment's PUBACK does not come within
// PublishTimeout of its publish and of the last receipt heard, or comes
// with an error. It returns when the session ends.
func (t *Transport) watch(p *pendingAcks, ended *uplink.Ended) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		pa, ok := p.oldest()
		if !ok {
			select {
			case <-p.more:
				continue
			case <-ended.Done():
				return
			}
		}
		timer.Reset(time.Until(pa.deadline))
		select {
		case <-pa.tok.Done():
			if err := pa.tok.Error(); err != nil {
				t.o.Logger.Warn("mqtt uplink publish not acknowledged", "err", err)
				ended.End()
				return
			}
			p.pop()
			select {
			case t.accCh <- struct{}{}:
			default:
			}
		case <-timer.C:
			if heard := time.Unix(0, t.heard.Load()); time.Since(heard) < t.o.PublishTimeout {
				// The broker holds the segment (back-pressure) but is
				// alive: a receipt came since. Wait on from there.
				p.extend(heard.Add(t.o.PublishTimeout))
				continue
			}
			t.o.Logger.Warn("mqtt uplink publish not acknowledged", "timeout", t.o.PublishTimeout)
			ended.End()
			return
		case <-ended.Done():
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

var (
	_ uplink.Transport = (*Transport)(nil)
	_ uplink.Accepter  = (*Transport)(nil)
)

// New checks opts and returns a transport.
func New(opts Options) (*Transport, error) {
	if opts.Broker == "" {
		return nil, errors.New("mqtt uplink: a broker URL is required")
	}
	seg, err := protocol.EdgeTopic(opts.Edge, protocol.KindSegment)
	if err != nil {
		return nil, fmt.Errorf("mqtt uplink: %w", err)
	}
	hello, _ := protocol.EdgeTopic(opts.Edge, protocol.KindHello)
	rcpt, _ := protocol.EdgeTopic(opts.Edge, protocol.KindReceipt)
	cmd, _ := protocol.EdgeTopic(opts.Edge, protocol.KindCommand)
	if opts.Password == "" && opts.Tokens == nil {
		if opts.Signer == nil {
			return nil, errors.New("mqtt uplink: need the edge key (for a broker token) or a password")
		}
		opts.Tokens, _ = uplink.OpenTokens(uplink.TokenOptions{Signer: opts.Signer, Edge: opts.Edge, Now: opts.Now})
	}
	if opts.Username == "" {
		opts.Username = opts.Edge
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 30 * time.Second
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = 2 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.TLS, err = tlsconf.Client(opts.TLS, opts.CAFile, opts.CertFile, opts.KeyFile); err != nil {
		return nil, fmt.Errorf("mqtt uplink: %w", err)
	}
	return &Transport{o: opts, segTopic: seg, helloTopic: hello, rcpt: rcpt, cmd: cmd, accCh: make(chan struct{}, 1)}, nil
}

// Connect opens a session and subscribes to the receipt topic, and to the
// command topic when OnCommand is set.
func (t *Transport) Connect(ctx context.Context, onReply func([]byte)) error {
	ended := uplink.NewEnded()
	opts := paho.NewClientOptions().
		AddBroker(t.o.Broker).
		SetClientID("outpost-edge-" + t.o.Edge).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(t.o.ConnectTimeout).
		SetKeepAlive(t.o.KeepAlive).
		SetOrderMatters(true).
		SetCredentialsProvider(func() (string, string) {
			if t.o.Password != "" {
				return t.o.Username, t.o.Password
			}
			tok, err := t.o.Tokens.Token(protocol.BrokerMQTT)
			if err != nil {
				t.o.Logger.Error("mqtt uplink: cannot make a broker token", "err", err)
			}
			return t.o.Username, tok
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			t.o.Logger.Warn("mqtt uplink connection lost", "err", err)
			ended.End()
		})
	if t.o.TLS != nil {
		opts.SetTLSConfig(t.o.TLS)
	}
	c := paho.NewClient(opts)
	if err := wait(ctx, c.Connect(), t.o.ConnectTimeout); err != nil {
		// A connect that completes late must not take over the client id
		// from the next session.
		go c.Disconnect(0)
		if errors.Is(err, packets.ErrorRefusedNotAuthorised) || errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
			return fmt.Errorf("connect to %s: %w: %s", t.o.Broker, err, t.refusal())
		}
		return fmt.Errorf("connect to %s: %w", t.o.Broker, err)
	}
	t.heard.Store(time.Now().UnixNano())
	sub := c.Subscribe(t.rcpt, 1, func(_ paho.Client, m paho.Message) {
		t.heard.Store(time.Now().UnixNano())
		onReply(m.Payload())
	})
	if err := wait(ctx, sub, t.o.ConnectTimeout); err != nil {
		c.Disconnect(0)
		return fmt.Errorf("subscribe %s: %w", t.rcpt, err)
	}
	if on := t.o.OnCommand; on != nil {
		sub := c.Subscribe(t.cmd, 1, func(_ paho.Client, m paho.Message) { on(m.Payload()) })
		if err := wait(ctx, sub, t.o.ConnectTimeout); err != nil {
			c.Disconnect(0)
			return fmt.Errorf("subscribe %s: %w", t.cmd, err)
		}
		if st, ok := sub.(*paho.SubscribeToken); ok {
			if codes := st.Result(); codes[t.cmd] == 0x80 {
				c.Disconnect(0)
				return fmt.Errorf("subscribe %s: refused by the broker (its ACL must let edge %s read its own cmd topic)", t.cmd, t.o.Edge)
			}
		}
	}
	p := &pendingAcks{more: make(chan struct{}, 1)}
	t.mu.Lock()
	t.client, t.ended, t.pending = c, ended, p
	t.mu.Unlock()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.watch(p, ended)
	}()
	return nil
}

// refusal says what a refused login means.
func (t *Transport) refusal() string {
	if tk, ok := t.o.Tokens.(*uplink.Tokens); ok && t.o.Password == "" {
		return tk.Refusal(protocol.BrokerMQTT)
	}
	return "the broker refused the configured user name and password (--cloud-password)"
}

func (t *Transport) session() (paho.Client, *uplink.Ended) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.client, t.ended
}

// helloAckTimeout bounds the wait for a hello's PUBACK.
const helloAckTimeout = 30 * time.Second

// Hello publishes a hello at QoS 1 and waits for the broker's PUBACK.
func (t *Transport) Hello(ctx context.Context, hello []byte) error {
	c, ended := t.session()
	if c == nil {
		return errors.New("not connected")
	}
	// A hello is never held by the broker (and the uplink sends none
	// behind a held segment), so its PUBACK gets the old, short wait.
	if err := wait(ctx, c.Publish(t.helloTopic, 1, false, hello), min(t.o.PublishTimeout, helloAckTimeout)); err != nil {
		ended.End()
		return err
	}
	return nil
}

// Publish sends a segment at QoS 1 without waiting: many segments are in
// flight at once. A PUBACK that does not come within PublishTimeout (of
// the publish, and of the last receipt heard: see Options) ends
// the session; the session's one watcher goroutine waits for them.
func (t *Transport) Publish(ctx context.Context, seg []byte, _ string) error {
	t.mu.Lock()
	c, p := t.client, t.pending
	t.mu.Unlock()
	if c == nil {
		return errors.New("not connected")
	}
	// The deadline is on the real clock, as the watcher's timer is.
	p.add(c.Publish(t.segTopic, 1, false, seg), time.Now().Add(t.o.PublishTimeout))
	return nil
}

// Lost is closed when the session ends.
func (t *Transport) Lost() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ended.Done()
}

// Close disconnects, waiting briefly for in-flight work.
func (t *Transport) Close() error {
	c, ended := t.session()
	if c != nil {
		c.Disconnect(250)
		ended.End()
	}
	t.wg.Wait()
	t.mu.Lock()
	t.client, t.pending = nil, nil
	t.mu.Unlock()
	return nil
}

func wait(ctx context.Context, tok paho.Token, timeout time.Duration) error {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return fmt.Errorf("no answer from the broker within %s", timeout)
	}
}
