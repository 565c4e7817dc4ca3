package load

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/protocol"
)

// conn is one broker session of an edge. Replies (receipts and nacks, and
// the hello's answer) go to the onReply the dialer was given.
type conn interface {
	// Hello sends a hello; its answer comes as a reply.
	Hello(ctx context.Context, hello []byte) error
	// Publish sends a segment without waiting for the broker's ack.
	Publish(seg []byte, msgID string) error
	// Accepted is how many of the session's publishes, from the first in
	// order, the broker has acknowledged (a PUBACK, a PubAck), as
	// edge/uplink's Accepter. It looks without waiting.
	Accepted() int
	// DuplicateWindow is how long the broker drops a publish whose
	// message id it stored (JetStream's duplicate window; 0 for MQTT).
	DuplicateWindow() time.Duration
	// Lost is closed when the session ends; Reason then says why.
	Lost() <-chan struct{}
	Reason() string
	Close()
}

// dialer opens a session for e.
type dialer func(ctx context.Context, e *edge, onReply func([]byte)) (conn, error)

// session end, closed once, with the first reason given.
type ended struct {
	once   sync.Once
	ch     chan struct{}
	reason string
}

func newEnded() *ended { return &ended{ch: make(chan struct{})} }

func (e *ended) end(reason string) {
	e.once.Do(func() {
		e.reason = reason
		close(e.ch)
	})
}

const connectTimeout = 20 * time.Second

// dialer returns the edge's TCP dialer. Against a broker on the loopback
// interface every edge connects from an address of its own in 127.0.0.0/8
// (127.0.{i/250}.{2+i%250}), as edges in many shops have an address each:
// from one address, the cloud's budget of failed logins per source
// address would throttle the whole fleet after a few failures. Linux
// accepts any 127/8 source address; the run tries one first
// (loopbackSources) and uses the default where it cannot.
func (e *edge) dialer() *net.Dialer {
	d := &net.Dialer{Timeout: connectTimeout}
	if e.r.loopback {
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, byte(1+e.index/250), byte(2+e.index%250), 1)}
	}
	return d
}

// mqttDialer connects over MQTT 3.1.1 to broker (host:port or a URL), as
// edge/uplink/mqtt does: a clean session, client id outpost-edge-{edge},
// QoS 1 on .../seg and .../hello, replies on .../rcpt.
func mqttDialer(broker string) dialer {
	if !strings.Contains(broker, "://") {
		broker = "tcp://" + broker
	}
	return func(ctx context.Context, e *edge, onReply func([]byte)) (conn, error) {
		end := newEnded()
		opts := paho.NewClientOptions().AddBroker(broker).
			SetDialer(e.dialer()).
			SetClientID("outpost-edge-" + e.id).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectTimeout(connectTimeout).SetKeepAlive(30 * time.Second).
			SetOrderMatters(true).
			SetCredentialsProvider(func() (string, string) { return e.id, e.token(protocol.BrokerMQTT) }).
			SetConnectionLostHandler(func(paho.Client, error) { end.end("connection lost") })
		c := paho.NewClient(opts)
		if err := waitToken(ctx, c.Connect()); err != nil {
			go c.Disconnect(0)
			return nil, fmt.Errorf("connect to %s: %w", broker, err)
		}
		rcpt, _ := protocol.EdgeTopic(e.id, protocol.KindReceipt)
		heard := new(atomic.Int64)
		heard.Store(time.Now().UnixNano())
		if err := waitToken(ctx, c.Subscribe(rcpt, 1, func(_ paho.Client, m paho.Message) {
			heard.Store(time.Now().UnixNano())
			onReply(m.Payload())
		})); err != nil {
			c.Disconnect(0)
			return nil, fmt.Errorf("subscribe %s: %w", rcpt, err)
		}
		seg, _ := protocol.EdgeTopic(e.id, protocol.KindSegment)
		hello, _ := protocol.EdgeTopic(e.id, protocol.KindHello)
		return &mqttConn{c: c, end: end, seg: seg, hello: hello, heard: heard}, nil
	}
}

func waitToken(ctx context.Context, tok paho.Token) error {
	t := time.NewTimer(connectTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("no answer from the broker within %s", connectTimeout)
	}
}

type mqttConn struct {
	c          paho.Client
	end        *ended
	seg, hello string
	acks       []paho.Token // publishes whose PUBACK has not been seen, oldest first
	sentAt     []time.Time  // when each of acks was published
	accepted   int
	heard      *atomic.Int64 // unix nanos of the last receipt on the session
}

func (m *mqttConn) DuplicateWindow() time.Duration { return 0 }

// publishTimeout is how long a segment's PUBACK may take while nothing
// comes from the broker before the session is called lost, as
// edge/uplink/mqtt's PublishTimeout default.
const publishTimeout = 2 * time.Minute

// Accepted also ends the session, as edge/uplink/mqtt does, when the
// oldest PUBACK has not come within publishTimeout of its publish and of
// the last receipt, or came with an error: without it an edge whose PUBACK
// never comes waits for it for ever (its ack timeout does not run before
// the broker took the segment).
func (m *mqttConn) Accepted() int {
	for len(m.acks) > 0 {
		select {
		case <-m.acks[0].Done():
		default:
			if time.Since(m.sentAt[0]) > publishTimeout && time.Since(time.Unix(0, m.heard.Load())) > publishTimeout {
				m.end.end("publish not acknowledged by the broker")
			}
			return m.accepted
		}
		if m.acks[0].Error() != nil {
			m.end.end("publish refused by the broker")
			return m.accepted
		}
		m.acks[0] = nil
		m.acks, m.sentAt = m.acks[1:], m.sentAt[1:]
		m.accepted++
	}
	return m.accepted
}

func (m *mqttConn) Hello(ctx context.Context, b []byte) error {
	if err := waitToken(ctx, m.c.Publish(m.hello, 1, false, b)); err != nil {
		m.end.end("hello not acknowledged by the broker")
		return err
	}
	return nil
}

// Publish does not wait for the PUBACK: a lost one shows as a missing
// receipt, which the edge's ack timeout resends.
func (m *mqttConn) Publish(b []byte, _ string) error {
	if !m.c.IsConnectionOpen() {
		m.end.end("connection lost")
		return errors.New("not connected")
	}
	m.acks = append(m.acks, m.c.Publish(m.seg, 1, false, b))
	m.sentAt = append(m.sentAt, time.Now())
	return nil
}

func (m *mqttConn) Lost() <-chan struct{} { return m.end.ch }
func (m *mqttConn) Reason() string        { return m.end.reason }
func (m *mqttConn) Close()                { m.c.Disconnect(100); m.end.end("closed") }

// natsDialer connects over NATS as edge/uplink/nats does: reply inboxes
// under _INBOX.edge.{edge}, no reconnects, segments through JetStream with
// a Nats-Msg-Id that ends in a secret of the session, hellos as requests,
// receipts on .../rcpt.
func natsDialer(url string) dialer {
	return func(ctx context.Context, e *edge, onReply func([]byte)) (conn, error) {
		end := newEnded()
		secret := make([]byte, 16)
		_, _ = rand.Read(secret)
		nc, err := natsgo.Connect(url,
			natsgo.Name("outpost-edge-"+e.id),
			natsgo.CustomInboxPrefix(protocol.NATSInboxPrefix(e.id)),
			natsgo.NoReconnect(), natsgo.Timeout(connectTimeout), natsgo.SetCustomDialer(e.dialer()),
			natsgo.UserInfoHandler(func() (string, string) { return e.id, e.token(protocol.BrokerNATS) }),
			natsgo.DisconnectErrHandler(func(*natsgo.Conn, error) { end.end("connection lost") }),
			natsgo.ClosedHandler(func(*natsgo.Conn) { end.end("connection closed") }),
			natsgo.ErrorHandler(func(*natsgo.Conn, *natsgo.Subscription, error) {}))
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", url, err)
		}
		rcpt, _ := protocol.EdgeSubject(e.id, protocol.KindReceipt)
		if _, err := nc.Subscribe(rcpt, func(m *natsgo.Msg) { onReply(m.Data) }); err != nil {
			nc.Close()
			return nil, fmt.Errorf("subscribe %s: %w", rcpt, err)
		}
		if err := nc.FlushTimeout(connectTimeout); err != nil {
			nc.Close()
			return nil, fmt.Errorf("subscribe %s: %w", rcpt, err)
		}
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(30*time.Second),
			jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *natsgo.Msg, err error) {
				end.end("JetStream refused or did not ack a publish: " + errText(err))
			}))
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("jetstream: %w", err)
		}
		seg, _ := protocol.EdgeSubject(e.id, protocol.KindSegment)
		hello, _ := protocol.EdgeSubject(e.id, protocol.KindHello)
		return &natsConn{nc: nc, js: js, end: end, seg: seg, hello: hello, secret: hex.EncodeToString(secret), onReply: onReply, dupAcks: &e.r.c.dupAcks}, nil
	}
}

type natsConn struct {
	nc         *natsgo.Conn
	js         jetstream.JetStream
	end        *ended
	seg, hello string
	secret     string
	onReply    func([]byte)
	acks       []jetstream.PubAckFuture // publishes whose PubAck has not been seen, oldest first
	accepted   int
	dupAcks    *atomic.Int64 // the run's count of publishes JetStream dropped as duplicates
}

// DuplicateWindow is the window of the stream the cloud creates
// (cloud/ingest/nats DefaultDuplicates), as edge/uplink/nats assumes.
func (n *natsConn) DuplicateWindow() time.Duration { return 2 * time.Minute }

func (n *natsConn) Accepted() int {
	for len(n.acks) > 0 {
		select {
		case pa := <-n.acks[0].Ok():
			if pa != nil && pa.Duplicate {
				n.dupAcks.Add(1)
			}
		default:
			return n.accepted
		}
		n.acks[0] = nil
		n.acks = n.acks[1:]
		n.accepted++
	}
	return n.accepted
}

func (n *natsConn) Hello(ctx context.Context, b []byte) error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	m, err := n.nc.RequestWithContext(ctx, n.hello, b)
	if err != nil {
		n.end.end("hello unanswered: " + errText(err))
		return fmt.Errorf("hello on %s: %w", n.hello, err)
	}
	n.onReply(m.Data)
	return nil
}

func (n *natsConn) Publish(b []byte, msgID string) error {
	f, err := n.js.PublishAsync(n.seg, b, jetstream.WithMsgID(msgID+":"+n.secret))
	if err != nil {
		n.end.end("publish: " + errText(err))
		return err
	}
	n.acks = append(n.acks, f)
	return nil
}

func (n *natsConn) Lost() <-chan struct{} { return n.end.ch }
func (n *natsConn) Reason() string        { return n.end.reason }
func (n *natsConn) Close()                { n.nc.Close(); n.end.end("closed") }

// errText is err's text without what varies (numbers), to count by.
func errText(err error) string {
	if err == nil {
		return "no error"
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[:80]
	}
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return '#'
		}
		return r
	}, s)
}

// loopbackSources reports whether the broker at addr (host:port, or a
// URL, or several URLs separated by commas) is on the loopback interface
// and can be reached from another 127/8 source address.
func loopbackSources(addr string) bool {
	first := strings.Split(addr, ",")[0]
	if i := strings.Index(first, "://"); i >= 0 {
		first = first[i+3:]
	}
	host, _, err := net.SplitHostPort(first)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	if host == "localhost" {
		ip = net.IPv4(127, 0, 0, 1)
	}
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return false
	}
	d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, 2, 1)}}
	c, err := d.Dial("tcp", first)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
