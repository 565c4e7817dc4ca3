// Package mqtt is cloud ingest's MQTT transport (paho.mqtt.golang). It
// subscribes to every edge's segments and hellos through MQTT shared
// subscriptions ($share/{group}/…), so any number of `cloud serve`
// processes share the load, and publishes receipts and nacks to each edge's
// rcpt topic. Broker messages are acked manually (SetAutoAckDisabled), only
// once ingest has committed, quarantined or nacked the segment, so a crash
// before that means redelivery or an edge resend, never loss.
//
// Run owns the connection: it connects, subscribes, and checks the SUBACK
// (a broker may refuse a filter with 0x80 and no error), and whenever any
// of that fails or the connection is lost later, it starts over with a
// fresh client, with backoff, until its context ends. It never gives up:
// an ingest that is not consuming is a cloud that stores nothing.
// Connected reports whether it is consuming (for /readyz); Healthy fails
// once it has not been for StuckAfter (for /healthz, the liveness probe:
// a restart is the last resort when the process cannot recover by itself).
//
// Replies (receipts and nacks) go out on a second connection of their own,
// "{ClientID}-reply", never on the one that receives segments. paho reads
// a connection's packets in order on one goroutine and hands each PUBLISH
// to the subscription callback before it reads the next packet, so on a
// shared connection a receipt's PUBACK waits behind every segment the
// broker sent before it; and a segment waits there for room in the ingest
// queue, which waits for the commit workers, which wait for those very
// PUBACKs (ingest acks a batch only once its replies are confirmed). Under
// many small segments that cycle stalled receipting until the reply
// timeouts broke it, while the broker's window for the ingest client
// filled with unacked segments and it dropped the rest ("client store
// quota reached"). On its own connection a reply's PUBACK is the next
// packet read: replies depend on the broker only, never on the segment
// backlog. Losing either connection ends the session; Run makes both again.
//
// Hellos are answered by at most MaxHellos goroutines at once, owned by an
// errgroup that Run waits for before it returns. After a hello's receipt,
// the same goroutine sends the edge its pending commands (QoS 1 on
// .../cmd, through ingest.Options.Commands), on the reply connection.
package mqtt

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/cloud/ingest"
	"github.com/outpost-edge/outpost/protocol"
)

// Options configure a Consumer. Zero values take the defaults noted.
type Options struct {
	Broker   string // tcp://host:port or ssl://…
	Username string
	Password string
	TLS      *tls.Config
	Group    string // shared subscription group; default "outpost-ingest"
	ClientID string // default "outpost-cloud-<random>"
	Service  *ingest.Service

	ConnectTimeout time.Duration // a CONNECT's CONNACK, a SUBSCRIBE's SUBACK; default 10s
	ReplyTimeout   time.Duration // a receipt's PUBACK; default 10s
	RetryMin       time.Duration // first wait before connecting again; default 100ms
	RetryMax       time.Duration // the longest wait (backoff doubles up to it); default 10s
	// StuckAfter is how long the consumer may be without a subscription
	// before Healthy fails; default 2m.
	StuckAfter time.Duration
	MaxHellos  int // hellos answered at once; default 64
	Now        func() time.Time
	Logger     *slog.Logger
}

// Consumer feeds an ingest.Service from an MQTT broker.
type Consumer struct {
	o   Options
	log *slog.Logger

	mu         sync.Mutex
	client     paho.Client // receives segments and hellos
	reply      paho.Client // publishes replies (see the package comment)
	subscribed bool
	downSince  time.Time // when it last stopped being subscribed (or started)
	lastErr    error     // why the last session ended

	hellos errgroup.Group // SetLimit(MaxHellos); Run waits for it
}

var (
	_ ingest.Replier          = (*Consumer)(nil)
	_ ingest.AsyncReplier     = (*Consumer)(nil)
	_ ingest.CommandPublisher = (*Consumer)(nil)
)

// New checks opts.
func New(opts Options) (*Consumer, error) {
	if opts.Broker == "" || opts.Service == nil {
		return nil, errors.New("mqtt ingest: Broker and Service are required")
	}
	if opts.Group == "" {
		opts.Group = "outpost-ingest"
	}
	if opts.ClientID == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		opts.ClientID = "outpost-cloud-" + hex.EncodeToString(b)
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.ReplyTimeout <= 0 {
		opts.ReplyTimeout = 10 * time.Second
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = 100 * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 10 * time.Second
	}
	if opts.StuckAfter <= 0 {
		opts.StuckAfter = 2 * time.Minute
	}
	if opts.MaxHellos <= 0 {
		opts.MaxHellos = 64
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Consumer{o: opts, log: opts.Logger.With("component", "ingest-mqtt", "broker", opts.Broker), downSince: opts.Now()}
	c.hellos.SetLimit(opts.MaxHellos)
	return c, nil
}

// Run connects and consumes until ctx ends, reconnecting and resubscribing
// for as long as it takes. It returns once the hellos in hand are answered.
func (c *Consumer) Run(ctx context.Context) error {
	segFilter, err := protocol.SharedSegmentFilter(c.o.Group)
	if err != nil {
		return err
	}
	filters := map[string]byte{segFilter: 1, "$share/" + c.o.Group + "/" + protocol.HelloFilterMQTT: 1}
	defer func() { _ = c.hellos.Wait() }()
	wait := c.o.RetryMin
	for {
		consumed, err := c.session(ctx, filters)
		if ctx.Err() != nil {
			return nil
		}
		if consumed {
			wait = c.o.RetryMin
		}
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		c.log.Warn("ingest is not consuming from the broker; connecting again", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
		wait = min(2*wait, c.o.RetryMax)
	}
}

// session is one connection: connect, subscribe, consume until the
// connection is lost or ctx ends. consumed says whether it got as far as
// consuming.
func (c *Consumer) session(ctx context.Context, filters map[string]byte) (consumed bool, err error) {
	lost := make(chan error, 2)
	newClient := func(id, role string) paho.Client {
		opts := paho.NewClientOptions().
			AddBroker(c.o.Broker).
			SetClientID(id).
			SetUsername(c.o.Username).
			SetPassword(c.o.Password).
			SetCleanSession(true).
			SetAutoAckDisabled(true).
			SetOrderMatters(true).
			SetAutoReconnect(false). // Run reconnects, and resubscribes
			SetConnectRetry(false).
			SetConnectTimeout(c.o.ConnectTimeout).
			SetKeepAlive(20 * time.Second).
			SetConnectionLostHandler(func(_ paho.Client, err error) {
				select {
				case lost <- fmt.Errorf("%s connection: %w", role, err):
				default:
				}
			})
		if c.o.TLS != nil {
			opts.SetTLSConfig(c.o.TLS)
		}
		return paho.NewClient(opts)
	}
	cl := newClient(c.o.ClientID, "segment")
	rcl := newClient(c.o.ClientID+"-reply", "reply")
	c.mu.Lock()
	c.client, c.reply = cl, rcl
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.subscribed {
			c.subscribed, c.downSince = false, c.o.Now()
		}
		c.mu.Unlock()
		cl.Disconnect(500)
		rcl.Disconnect(500)
	}()
	if err := wait(ctx, rcl.Connect(), c.o.ConnectTimeout); err != nil {
		return false, fmt.Errorf("connect the reply connection: %w", err)
	}
	if err := wait(ctx, cl.Connect(), c.o.ConnectTimeout); err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	sub := cl.SubscribeMultiple(filters, func(_ paho.Client, m paho.Message) { c.onMessage(ctx, m) })
	if err := wait(ctx, sub, c.o.ConnectTimeout); err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	for f, code := range sub.(*paho.SubscribeToken).Result() {
		if code >= 0x80 {
			return false, fmt.Errorf("the broker refused the subscription to %s (SUBACK %#x): check the ingest user's ACL on the broker", f, code)
		}
	}
	c.mu.Lock()
	c.subscribed = true
	c.mu.Unlock()
	c.log.Info("ingest subscribed", "filters", keys(filters))
	select {
	case err := <-lost:
		return true, fmt.Errorf("lost the broker: %w", err)
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// Connected reports whether the consumer is connected and subscribed.
func (c *Consumer) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subscribed && c.client != nil && c.client.IsConnectionOpen() && c.reply != nil && c.reply.IsConnectionOpen()
}

// Healthy returns an error when the consumer has not been subscribed for
// StuckAfter: it is trying, and not getting there.
func (c *Consumer) Healthy() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subscribed {
		return nil
	}
	if d := c.o.Now().Sub(c.downSince); d >= c.o.StuckAfter {
		return fmt.Errorf("MQTT ingest has not consumed from %s for %s (last error: %v)", c.o.Broker, d.Round(time.Second), c.lastErr)
	}
	return nil
}

func (c *Consumer) onMessage(ctx context.Context, m paho.Message) {
	t, err := protocol.ParseTopic(m.Topic())
	if err != nil || t.Scope != protocol.ScopeEdge {
		c.log.Warn("ignored a message on an unexpected topic", "topic", m.Topic())
		m.Ack()
		return
	}
	switch t.Kind {
	case protocol.KindSegment:
		// paho runs this callback on its only receive goroutine: it must
		// not block for long, or PUBACKs and pings stop being read.
		ok, err := c.o.Service.Offer(ctx, ingest.Delivery{TopicEdge: t.ID, Payload: m.Payload(), Replier: c, Ack: m.Ack}, time.Second)
		switch {
		case err != nil:
			return // shutting down: not acked, the broker redelivers or the edge resends
		case !ok:
			c.log.Warn("ingest queue full: a segment is left for its edge to resend", "edge", t.ID)
			m.Ack()
		}
	case protocol.KindHello:
		m.Ack()
		payload := m.Payload()
		ok := c.hellos.TryGo(func() error {
			rc, deliver, err := c.o.Service.AnswerHello(ctx, t.ID, payload, c)
			if err != nil {
				c.log.Warn("could not answer a hello", "edge", t.ID, "err", err)
				return nil
			}
			if err := c.Reply(ctx, t.ID, rc); err != nil {
				c.log.Warn("could not send a hello's receipt", "edge", t.ID, "err", err)
			}
			if deliver != nil {
				deliver(ctx) // the edge's pending commands, after its receipt
			}
			return nil
		})
		if !ok {
			// Too many hellos at once (a whole fleet reconnecting): the
			// edge asks again after its hello timeout.
			c.log.Warn("too many hellos in flight; one is left for its edge to repeat", "edge", t.ID)
		}
	default:
		m.Ack()
	}
}

// Reply publishes a signed reply to the edge's rcpt topic at QoS 1 and
// waits for the broker's PUBACK.
func (c *Consumer) Reply(ctx context.Context, edge string, msg []byte) error {
	return c.ReplyAsync(edge, msg)(ctx)
}

// ReplyAsync publishes a signed reply at QoS 1 on the reply connection
// without waiting; the function it returns waits for the PUBACK (at most
// ReplyTimeout). Ingest sends a whole batch's replies this way before it
// waits for any.
func (c *Consumer) ReplyAsync(edge string, msg []byte) func(context.Context) error {
	topic, err := protocol.EdgeTopic(edge, protocol.KindReceipt)
	if err != nil {
		return func(context.Context) error { return err }
	}
	c.mu.Lock()
	cl := c.reply
	c.mu.Unlock()
	if cl == nil {
		return func(context.Context) error { return errors.New("not connected") }
	}
	tok := cl.Publish(topic, 1, false, msg)
	return func(ctx context.Context) error {
		if err := wait(ctx, tok, c.o.ReplyTimeout); err != nil {
			return fmt.Errorf("publish to %s: %w", topic, err)
		}
		return nil
	}
}

// PublishCommand publishes a signed command to the edge's cmd topic at
// QoS 1, not retained, on the reply connection, and waits for the broker's
// PUBACK (at most ReplyTimeout). Edges use clean sessions, so a command
// published while an edge is away is not kept for it by the broker: its
// next hello gets it from the cloud instead.
func (c *Consumer) PublishCommand(ctx context.Context, edge string, signed []byte) error {
	topic, err := protocol.EdgeTopic(edge, protocol.KindCommand)
	if err != nil {
		return err
	}
	c.mu.Lock()
	cl := c.reply
	c.mu.Unlock()
	if cl == nil || !cl.IsConnectionOpen() {
		return errors.New("not connected")
	}
	if err := wait(ctx, cl.Publish(topic, 1, false, signed), c.o.ReplyTimeout); err != nil {
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	return nil
}

func wait(ctx context.Context, tok paho.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("no answer from the broker within %s", timeout)
	}
}

func keys(m map[string]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
