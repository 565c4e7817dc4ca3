package intake

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/protocol"
)

// hook plugs the intake into mochi: authentication at CONNECT, the
// subscription ACL, and the takeover of every device PUBLISH.
type hook struct {
	mqtt.HookBase
	s *Server
}

func (h *hook) ID() string { return "outpost-intake" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnDisconnect, mqtt.OnPacketEncode:
		return true
	}
	return false
}

// MQTT 3.1.1 CONNACK return codes (mochi maps only some v5 codes down).
var (
	v3BadUserOrPassword = packets.Code{Code: 0x04, Reason: "bad user name or password"}
	v3NotAuthorized     = packets.Err3NotAuthorized
)

// OnConnect authenticates the device. It runs before mochi's
// OnConnectAuthenticate so that it can refuse with the precise code (0x86 or
// 0x87, or 0x04 and 0x05 for MQTT 3.1.1), which it sends itself; mochi then
// closes the connection. On success it pins the connection to the device:
// the user name becomes the device id, the client id is put in the device's
// own namespace (so that one device cannot take over another's session and
// its subscriptions), and any will is dropped (a will is published without
// an ACL check, so it would let a device write to any topic).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	s := h.s
	if s.closed.Load() {
		// Close has begun: a CONNECT that completes now gets no session
		// (Close may already have swept the clients).
		code := packets.ErrServerShuttingDown
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrServerUnavailable // 3.1.1 CONNACK 0x03
		}
		s.metrics.ConnectRefused.Add(1)
		if err := s.broker.SendConnack(cl, code, false, nil); err != nil {
			return fmt.Errorf("refuse connect: %w", err)
		}
		return code
	}
	device, r, why := s.authMQTT(cl, pk)
	if r != ReasonNone {
		s.metrics.ConnectRefused.Add(1)
		s.metrics.refuse(r)
		code := r.mqtt5()
		if r == ReasonInternal {
			code = packets.ErrServerUnavailable
		}
		if cl.Properties.ProtocolVersion < 5 {
			switch r {
			case ReasonAuth:
				code = v3BadUserOrPassword
			case ReasonNotAuthorized:
				code = v3NotAuthorized
			}
		}
		s.log.Info("mqtt connect refused", "remote", cl.Net.Remote, "user", logName(string(pk.Connect.Username)), "reason", r.String(), "why", why)
		if err := s.broker.SendConnack(cl, code, false, nil); err != nil {
			return fmt.Errorf("refuse connect: %w", err)
		}
		return code
	}
	cl.Properties.Username = []byte(device)
	cl.ID = device + "|" + cl.ID
	cl.Properties.Will = mqtt.Will{}
	return nil
}

// OnConnectAuthenticate accepts what OnConnect let through.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	return len(cl.Properties.Username) > 0
}

// OnACLCheck allows a device to subscribe only to its own err and cmd
// topics. Publishes are allowed here and judged in OnPublish, which can
// answer per protocol version and keep the refused payload.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline || write {
		return true
	}
	dev := string(cl.Properties.Username)
	t, err := protocol.ParseTopic(topic)
	return err == nil && t.Scope == protocol.ScopeDevice && t.ID == dev &&
		(t.Kind == protocol.KindError || t.Kind == protocol.KindCommand)
}

// OnPublish takes over every device publish: it hands the events to the
// pipeline and returns ErrRejectPacket, which makes mochi neither
// acknowledge nor forward the packet. The pipeline sends the PUBACK (or
// PUBREC) itself once the events are durable.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the intake's own messages on err topics
	}
	h.s.onPublish(cl, pk)
	return pk, packets.ErrRejectPacket
}

// OnPacketEncode announces MaxPacketSize in a successful MQTT 5 CONNACK
// (mochi enforces its limit but does not say it).
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && cl.Properties.ProtocolVersion >= 5 && pk.ReasonCode < packets.ErrUnspecifiedError.Code {
		pk.Properties.MaximumPacketSize = MaxPacketSize
	}
	return pk
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	s := h.s
	if errors.Is(err, packets.ErrPacketTooLarge) {
		s.metrics.refuse(ReasonTooLarge)
		s.log.Warn("mqtt packet over the maximum packet size: connection closed, nothing acknowledged or kept", "device", logName(string(cl.Properties.Username)), "limit", MaxPacketSize, "mqtt", cl.Properties.ProtocolVersion)
	}
	s.mu.Lock()
	c := s.conns[cl]
	delete(s.conns, cl)
	s.mu.Unlock()
	if c != nil {
		c.kill()
	}
}

// authMQTT returns the device a CONNECT authenticates, or why it does not.
func (s *Server) authMQTT(cl *mqtt.Client, pk packets.Packet) (string, Reason, string) {
	user := string(pk.Connect.Username)
	if cn, ok := verifiedCN(cl.Net.Conn); ok {
		return s.authCert(cn, user)
	}
	if user == "" || !pk.Connect.PasswordFlag {
		return "", ReasonAuth, "no user name and password, and no client certificate"
	}
	if err := protocol.ValidateName("device", user); err != nil {
		return "", ReasonAuth, err.Error()
	}
	return s.authSecret(user, string(pk.Connect.Password))
}

func (s *Server) authCert(cn, user string) (string, Reason, string) {
	if user != "" && user != cn {
		return "", ReasonNotAuthorized, fmt.Sprintf("user name %q is not the certificate's CN %q", logName(user), logName(cn))
	}
	known, err := s.creds.Known(cn)
	if err != nil {
		s.log.Error("credentials", "err", err)
	}
	if !known {
		if err != nil {
			return "", ReasonInternal, "credentials unreadable"
		}
		return "", ReasonNotAuthorized, fmt.Sprintf("certificate CN %q is not a listed device", logName(cn))
	}
	return cn, ReasonNone, ""
}

// authFailed is the one answer to an unknown device and to a bad secret.
const authFailed = "unknown device or bad secret"

func (s *Server) authSecret(device, secret string) (string, Reason, string) {
	err := s.creds.Verify(device, secret)
	switch {
	case err == nil:
		return device, ReasonNone, ""
	case errors.Is(err, ErrUnknownDevice), errors.Is(err, ErrBadSecret):
		// One answer for both, so that device ids cannot be probed; only
		// the edge's own log tells them apart.
		s.log.Debug("device authentication failed", "device", logName(device), "err", err)
		return "", ReasonAuth, authFailed
	}
	s.log.Error("credentials", "device", device, "err", err)
	return "", ReasonInternal, "credentials unreadable"
}

// verifiedCN returns the subject CN of a client certificate that verified
// against the listener's ClientCAs.
func verifiedCN(c net.Conn) (string, bool) {
	tc, ok := netConn(c).(*tls.Conn)
	if !ok {
		return "", false
	}
	return tlsCN(tc.ConnectionState())
}

func tlsCN(st tls.ConnectionState) (string, bool) {
	if len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return "", false
	}
	cn := st.VerifiedChains[0][0].Subject.CommonName
	return cn, cn != "" && cn != protocol.EdgeDevice // the edge's own name is no device's
}

// logName returns a name fit for a log line: a valid id as is, anything
// else only by length (it may be a secret typed in the wrong field).
func logName(s string) string {
	if protocol.ValidateName("device", s) == nil {
		return s
	}
	return fmt.Sprintf("(%d bytes, not a device id)", len(s))
}

// conn is the ack pipeline of one MQTT client connection.
//
// Each publish is handed to the Appender as soon as it is read, so that
// all the publishes a client has in flight reach the store's next group
// commit together, with no wait on the commit before. Publishes also enter
// queue, in packet order. As appends complete (in any order), publishes are
// marked done, and a writer goroutine (at most one per client) pops the
// done prefix of the queue and writes its acknowledgements: in packet
// order, as MQTT requires, each as soon as it and every publish before it
// are durable.
type conn struct {
	s        *Server
	cl       *mqtt.Client
	device   string
	evTopic  string
	errTopic string
	v5       bool

	mu      sync.Mutex
	cond    *sync.Cond  // signalled when the queue shrinks or the conn dies
	queue   []*pub      // unacknowledged publishes, in packet order
	writing bool        // a writer goroutine is running
	dead    bool        // disconnected: append nothing more, write nothing more
	retry   *time.Timer // the held publish's next append (MQTT 3.1.1), or nil
}

// pub is one PUBLISH on its way through the pipeline.
type pub struct {
	packetID uint16
	qos      byte
	topic    string
	v        *verdict
	events   []protocol.Event // v.events then v.rejects
	// Set by complete before done is set under conn.mu.
	res  []Result
	err  error
	done bool
	held int // appends refused for storage so far (MQTT 3.1.1: the PUBACK is held)
}

func (s *Server) connFor(cl *mqtt.Client) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.conns[cl]; c != nil {
		return c
	}
	dev := string(cl.Properties.Username)
	ev, _ := protocol.DeviceTopic(dev, protocol.KindEvent)
	et, _ := protocol.DeviceTopic(dev, protocol.KindError)
	c := &conn{s: s, cl: cl, device: dev, evTopic: ev, errTopic: et, v5: cl.Properties.ProtocolVersion >= 5, dead: s.closed.Load()}
	c.cond = sync.NewCond(&c.mu)
	s.conns[cl] = c
	return c
}

// onPublish runs in the client's read loop.
func (s *Server) onPublish(cl *mqtt.Client, pk packets.Packet) {
	c := s.connFor(cl)
	s.metrics.Published.Add(1)
	qos := pk.FixedHeader.Qos
	if qos == 0 {
		s.metrics.QoS0.Add(1)
	}
	v := s.judge(c.device, pk.TopicName, "mqtt", pk.Payload, pk.TopicName == c.evTopic)
	switch {
	case v.refusal != ReasonNone:
		s.metrics.refuse(v.refusal)
	case len(v.items) > 0:
		s.metrics.refused[ReasonInvalid].Add(uint64(len(v.items)))
	}
	p := &pub{packetID: pk.PacketID, qos: qos, topic: pk.TopicName, v: v}
	p.events = append(slices.Clip(v.events), v.rejects...)
	if !c.enqueue(p) {
		return
	}
	s.metrics.Events.Add(uint64(len(v.events)))
	if len(p.events) == 0 { // a refusal that keeps no record
		s.wg.Add(1)
		c.complete(p, make([]Result, 0), nil)
		s.wg.Done()
		return
	}
	s.appendEvents(c.device, p.events, func(res []Result, err error) { c.complete(p, res, err) })
}

// enqueue adds p to the queue, waiting while the client has
// MaxPendingPerClient publishes unacknowledged: the read loop stops, and TCP
// pushes back on the device. It returns false when the client is gone.
func (c *conn) enqueue(p *pub) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.queue) >= c.s.MaxPendingPerClient && !c.dead {
		c.cond.Wait()
	}
	if c.dead {
		return false
	}
	c.queue = append(c.queue, p)
	return true
}

// complete runs when p's append is durable or failed. It only does
// bookkeeping and starts the writer: the Appender's goroutine never waits
// on a network write.
func (c *conn) complete(p *pub, res []Result, err error) {
	p.res, p.err = res, err
	c.s.account(p.v, res, err)
	c.mu.Lock()
	p.done = true
	start := !c.writing && len(c.queue) > 0 && c.queue[0].done
	if start {
		c.writing = true
		c.s.wg.Add(1) // inside the append's own count, so never from zero
	}
	c.mu.Unlock()
	if start {
		go c.write()
	}
}

// write pops the done prefix of the queue and writes its acknowledgements,
// until the head of the queue is not done.
func (c *conn) write() {
	defer c.s.wg.Done()
	for {
		c.mu.Lock()
		k := 0
		for k < len(c.queue) && c.queue[k].done {
			k++
		}
		if k == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		ready := slices.Clone(c.queue[:k])
		clear(c.queue[:k])
		c.queue = c.queue[k:]
		c.cond.Broadcast()
		dead := c.dead
		c.mu.Unlock()
		// The round's acknowledgements leave in one write.
		sc, _ := c.cl.Net.Conn.(*sizeConn)
		if sc != nil && !dead {
			sc.cork()
		}
		for i, p := range ready {
			if dead {
				break
			}
			switch c.ack(p) {
			case ackGone:
				dead = true
			case ackHeld:
				// p and those after it wait at the head of the queue, in
				// order, until p's retry completes.
				c.mu.Lock()
				p.done, p.res, p.err = false, nil, nil
				c.queue = append(slices.Clone(ready[i:]), c.queue...)
				c.mu.Unlock()
				c.hold(p)
				dead = true // stop this round; the retry's completion starts the next
			}
		}
		if sc != nil {
			if err := sc.uncork(); err != nil {
				c.kill()
			}
		}
	}
}

// hold schedules p's next append. It runs in the writer, whose WaitGroup
// count covers the timer's until the timer's own append has been added.
func (c *conn) hold(p *pub) {
	s := c.s
	d := s.HoldRetry << min(p.held-1, 5)
	s.wg.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		s.wg.Done()
		return
	}
	c.retry = time.AfterFunc(d, func() {
		defer s.wg.Done()
		c.mu.Lock()
		dead := c.dead
		c.retry = nil
		c.mu.Unlock()
		if !dead {
			s.appendEvents(c.device, p.events, func(res []Result, err error) { c.complete(p, res, err) })
		}
	})
}

func (c *conn) kill() {
	c.mu.Lock()
	if c.retry != nil && c.retry.Stop() {
		c.s.wg.Done()
	}
	c.retry = nil
	c.dead = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

// account counts what one payload's append did.
func (s *Server) account(v *verdict, res []Result, err error) {
	good := len(v.events)
	if err != nil {
		s.metrics.RejectedDropped.Add(uint64(len(v.rejects)))
		return
	}
	for i, r := range res {
		switch {
		case i >= good && r.Err == nil:
			s.metrics.RejectedKept.Add(1)
		case i >= good:
			s.metrics.RejectedDropped.Add(1)
		case r.Err == nil && r.Duplicate:
			s.metrics.Duplicates.Add(1)
		}
	}
}

// outcome decides a payload's answer: its refusal as bad input, else the
// worst storage refusal of its valid events, else success.
func outcome(v *verdict, res []Result, err error) (Reason, string) {
	if v.refusal != ReasonNone {
		return v.refusal, v.err
	}
	good := len(v.events)
	if err != nil {
		return classify(err), fmt.Sprintf("no event was stored: %v", err)
	}
	r, bad, first := ReasonNone, 0, ""
	for _, x := range res[:good] {
		if x.Err != nil {
			r = worse(r, classify(x.Err))
			if bad++; first == "" {
				first = x.Err.Error()
			}
		}
	}
	if r != ReasonNone {
		return r, fmt.Sprintf("%d of %d events were not stored: %s", bad, good, first)
	}
	return ReasonNone, v.err
}

// errMessage is what a device receives on its err topic when a publish is
// refused in whole or in part. Field names are stable.
type errMessage struct {
	V           int         `json:"v"`
	Topic       string      `json:"topic"`               // where the refused publish went
	PacketID    uint16      `json:"packet_id,omitempty"` // its packet id (QoS 1 and 2)
	Code        int         `json:"code"`                // the MQTT 5 reason code of the outcome; 0 when the valid events of a batch were accepted
	Reason      string      `json:"reason"`              // none, not_authorized, invalid, too_large, quota, disk_full, internal
	Error       string      `json:"error"`
	WhatToDo    string      `json:"what_to_do"`
	Acked       bool        `json:"acked"`              // the publish was acknowledged; false: not yet (MQTT 5: the client resends it; 3.1.1: the edge holds the PUBACK and retries)
	Accepted    int         `json:"accepted"`           // events of the payload stored (or already stored)
	Errors      []itemError `json:"errors,omitempty"`   // per item
	ErrorsTotal int         `json:"errors_total"`       // items refused, when Errors is cut short
	Rejected    []string    `json:"rejected,omitempty"` // ids of the intake.rejected records that keep the refused bytes
}

// What ack did with a publish.
const (
	ackSent = iota // answered (or nothing to answer, at QoS 0)
	ackHeld        // MQTT 3.1.1 storage refusal: no PUBACK yet; retry the append
	ackGone        // the client is gone or has been disconnected
)

// ack answers one publish: the err topic message when something was
// refused, then the PUBACK or PUBREC.
func (c *conn) ack(p *pub) int {
	s := c.s
	r, detail := outcome(p.v, p.res, p.err)
	if p.v.refusal == ReasonNone && r != ReasonNone {
		s.metrics.refuse(r)
	}
	if r.transient() && !c.v5 && p.qos > 0 {
		// MQTT 3.1.1 has no negative acknowledgement, and a PUBACK would
		// tell the device it may forget events that are not stored. Nor
		// may the intake disconnect: paho.mqtt.golang, reconnecting with
		// its session or store, completes the token of every publish it
		// resends without an error, as if acknowledged. So the PUBACK is
		// held and the append retried until it is stored (or the device
		// leaves, and resends it after reconnecting).
		if p.held++; p.held == 1 {
			c.publishErr(p, r, detail, false)
			s.log.Warn("mqtt 3.1.1 publish not stored; holding its PUBACK and retrying", "device", c.device, "packet_id", p.packetID, "reason", r.String(), "err", detail)
		}
		return ackHeld
	}
	if r != ReasonNone || len(p.v.items) > 0 {
		c.publishErr(p, r, detail, true)
	}
	if p.qos == 0 {
		return ackSent
	}
	code := packets.CodeSuccess
	if c.v5 {
		code = r.mqtt5()
	}
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Puback},
		PacketID:    p.packetID,
		ReasonCode:  code.Code,
	}
	if c.v5 && (r != ReasonNone || len(p.v.items) > 0) {
		ack.Properties.ReasonString = clip(detail)
	}
	if p.qos == 2 {
		ack.FixedHeader.Type = packets.Pubrec
		if code.Code < packets.ErrUnspecifiedError.Code {
			// Let mochi finish the exchange: with the PUBREC in the
			// client's inflight map, its PUBREL gets a PUBCOMP.
			// mochi expires inflight messages by its own wall clock, so
			// this is time.Now, not Server.Now (the records' clock).
			now := time.Now().Unix()
			ack.Created, ack.Expiry = now, now+s.broker.Options.Capabilities.MaximumMessageExpiryInterval
			if c.cl.State.Inflight.Set(ack) {
				atomic.AddInt64(&s.broker.Info.Inflight, 1)
			}
		}
	}
	if err := c.cl.WritePacket(ack); err != nil {
		c.kill()
		return ackGone
	}
	s.metrics.Acked.Add(1)
	return ackSent
}

func (c *conn) publishErr(p *pub, r Reason, detail string, acked bool) {
	m := errMessage{
		V:           1,
		Topic:       p.topic,
		PacketID:    p.packetID,
		Code:        int(r.mqtt5().Code),
		Reason:      r.String(),
		Error:       detail,
		WhatToDo:    r.advice(),
		Acked:       acked || p.qos == 0,
		ErrorsTotal: len(p.v.items),
	}
	if r == ReasonNone {
		m.WhatToDo = ReasonInvalid.advice()
	}
	if p.err == nil {
		for i, x := range p.res {
			switch {
			case i < len(p.v.events) && x.Err == nil:
				m.Accepted++
			case i >= len(p.v.events) && x.Err == nil:
				m.Rejected = append(m.Rejected, p.events[i].ID)
			}
		}
	}
	for _, it := range p.v.items[:min(len(p.v.items), maxBodyItems)] {
		it.Error = clip(it.Error)
		m.Errors = append(m.Errors, it)
	}
	b, err := json.Marshal(m)
	if err == nil {
		err = c.s.broker.Publish(c.errTopic, b, false, 1)
	}
	if err != nil {
		c.s.log.Error("publish refusal", "device", c.device, "err", err)
	}
}
