// Package mqtt is cloud ingest's MQTT transport (paho.mqtt.golang). It
// subscribes to every edge's segments and hellos through MQTT shared
// subscriptions ($share/{group}/…), so any number of `cloud serve`
// processes share the load, and publishes receipts and nacks to each edge's
// rcpt topic. Broker messages are acked manually (SetAutoAckDisabled), only
// once ingest has committed, quarantined or nacked the segment, so a crash
// before that means redelivery or an edge resend, never loss.
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

	"github.com/outpost-edge/outpost/cloud/ingest"
	"github.com/outpost-edge/outpost/protocol"
)

// Options configure a Consumer.
type Options struct {
	Broker   string // tcp://host:port or ssl://…
	Username string
	Password string
	TLS      *tls.Config
	Group    string // shared subscription group; default "outpost-ingest"
	ClientID string // default "outpost-cloud-<random>"
	Service  *ingest.Service
	Logger   *slog.Logger
}

// Consumer feeds an ingest.Service from an MQTT broker.
type Consumer struct {
	o   Options
	log *slog.Logger

	mu     sync.Mutex
	client paho.Client
	hellos chan struct{} // bounds concurrent hello handlers
}

var _ ingest.Replier = (*Consumer)(nil)

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
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Consumer{o: opts, log: opts.Logger.With("component", "ingest-mqtt", "broker", opts.Broker), hellos: make(chan struct{}, 64)}, nil
}

// Run connects and consumes until ctx ends, reconnecting as needed.
func (c *Consumer) Run(ctx context.Context) error {
	segFilter, err := protocol.SharedSegmentFilter(c.o.Group)
	if err != nil {
		return err
	}
	helloFilter := "$share/" + c.o.Group + "/" + protocol.HelloFilterMQTT
	opts := paho.NewClientOptions().
		AddBroker(c.o.Broker).
		SetClientID(c.o.ClientID).
		SetUsername(c.o.Username).
		SetPassword(c.o.Password).
		SetCleanSession(true).
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetKeepAlive(20 * time.Second).
		SetOnConnectHandler(func(cl paho.Client) {
			// Subscribe on every (re)connect: the session is clean.
			t := cl.SubscribeMultiple(map[string]byte{segFilter: 1, helloFilter: 1}, func(_ paho.Client, m paho.Message) {
				c.onMessage(ctx, m)
			})
			if t.WaitTimeout(10*time.Second) && t.Error() == nil {
				c.log.Info("ingest subscribed", "filters", []string{segFilter, helloFilter})
			} else {
				c.log.Error("ingest subscribe failed; reconnecting", "err", t.Error())
				go cl.Disconnect(0)
			}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			c.log.Warn("ingest lost the broker; reconnecting", "err", err)
		})
	if c.o.TLS != nil {
		opts.SetTLSConfig(c.o.TLS)
	}
	cl := paho.NewClient(opts)
	c.mu.Lock()
	c.client = cl
	c.mu.Unlock()
	cl.Connect() // retries in the background (SetConnectRetry)
	<-ctx.Done()
	cl.Disconnect(500)
	return nil
}

// Connected reports whether the consumer has a connection to the broker.
func (c *Consumer) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client != nil && c.client.IsConnectionOpen()
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
		select {
		case c.hellos <- struct{}{}:
		default:
			// Too many hellos at once (a whole fleet reconnecting): the
			// edge asks again after its hello timeout.
			c.log.Warn("too many hellos in flight; one is left for its edge to repeat", "edge", t.ID)
			return
		}
		go func() {
			defer func() { <-c.hellos }()
			rc, err := c.o.Service.Hello(ctx, t.ID, m.Payload())
			if err != nil {
				c.log.Warn("could not answer a hello", "edge", t.ID, "err", err)
				return
			}
			if err := c.Reply(ctx, t.ID, rc); err != nil {
				c.log.Warn("could not send a hello's receipt", "edge", t.ID, "err", err)
			}
		}()
	default:
		m.Ack()
	}
}

// Reply publishes a signed reply to the edge's rcpt topic at QoS 1.
func (c *Consumer) Reply(ctx context.Context, edge string, msg []byte) error {
	topic, err := protocol.EdgeTopic(edge, protocol.KindReceipt)
	if err != nil {
		return err
	}
	c.mu.Lock()
	cl := c.client
	c.mu.Unlock()
	if cl == nil {
		return errors.New("not connected")
	}
	tok := cl.Publish(topic, 1, false, msg)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return fmt.Errorf("publish to %s: no PUBACK within 10s", topic)
	}
}
