package fleet

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/outpost-edge/outpost/protocol"
)

// Outcome is what became of one send.
type Outcome int

const (
	// Acked: the edge acknowledged the payload (PUBACK, or HTTP 200/201):
	// its events are durable on the edge.
	Acked Outcome = iota
	// NoAnswer: no acknowledgement came (the edge is down or restarting,
	// the connection broke, the wait timed out). The device should send
	// the same payload again.
	NoAnswer
	// Refused: the edge answered that it cannot store the payload now
	// (quota, full disk, busy). The device may retry later, or, for a
	// reading, drop it.
	Refused
	// Invalid: the edge refused the payload as bad input. The simulator
	// sends only valid events, so this is a bug somewhere.
	Invalid
)

func (o Outcome) String() string {
	return [...]string{"acked", "no answer", "refused", "invalid"}[o]
}

// Sender sends a device's payloads (one event or a batch, JSON or CBOR)
// to its edge.
type Sender interface {
	// Send sends payload copies times without waiting in between (2 is a
	// duplicate publish), then waits up to timeout for the answers. It is
	// Acked when any copy was acknowledged.
	Send(ctx context.Context, payload []byte, copies int, timeout time.Duration) Outcome
	// Refusals counts the refusals the edge explained (MQTT err topic,
	// HTTP error answers).
	Refusals() uint64
	Close()
}

// MQTTSender is a device connected over MQTT 3.1.1 (paho), publishing at
// QoS 1 to outpost/v1/dev/{device}/ev, reconnecting on its own.
type MQTTSender struct {
	c        paho.Client
	topic    string
	refusals atomic.Uint64
	// store holds paho's unacknowledged publishes. paho completes the
	// token of a publish it resends after reconnecting without an error,
	// though no PUBACK came for it; a real PUBACK removes the publish from
	// the store before its token completes. So a publish counts as
	// acknowledged only when its token completed and it left the store.
	store   copyStore
	mu      sync.Mutex
	lastErr string
}

var _ Sender = (*MQTTSender)(nil)

// DialMQTT connects device to the edge's MQTT listener at addr. It returns
// at once; the client keeps (re)connecting in the background.
func DialMQTT(addr, device, secret string) (*MQTTSender, error) {
	topic, err := protocol.DeviceTopic(device, protocol.KindEvent)
	if err != nil {
		return nil, err
	}
	errTopic, _ := protocol.DeviceTopic(device, protocol.KindError)
	s := &MQTTSender{topic: topic, store: copyStore{paho.NewMemoryStore()}}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(device).
		SetUsername(device).SetPassword(secret).SetProtocolVersion(4).SetCleanSession(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetMaxReconnectInterval(time.Second).SetConnectTimeout(3 * time.Second).SetKeepAlive(10 * time.Second).
		SetWriteTimeout(5 * time.Second).SetOrderMatters(false).
		SetStore(s.store).
		SetOnConnectHandler(func(c paho.Client) {
			c.Subscribe(errTopic, 0, func(_ paho.Client, m paho.Message) {
				s.refusals.Add(1)
				s.mu.Lock()
				s.lastErr = string(m.Payload())
				s.mu.Unlock()
			})
		})
	s.c = paho.NewClient(opts)
	s.c.Connect()
	return s, nil
}

// Send publishes payload at QoS 1. It is Acked only when a PUBACK came for
// one of the copies.
func (s *MQTTSender) Send(ctx context.Context, payload []byte, copies int, timeout time.Duration) Outcome {
	if !s.c.IsConnectionOpen() {
		// Publishing while disconnected queues the message in paho; wait
		// a little for the reconnect instead, then report no answer.
		if waitFor(ctx, "connection", min(timeout, time.Second), s.c.IsConnectionOpen) != nil {
			return NoAnswer
		}
	}
	toks := make([]paho.Token, max(copies, 1))
	for i := range toks {
		toks[i] = s.c.Publish(s.topic, 1, false, payload)
	}
	deadline := time.Now().Add(timeout)
	acked := false
	for _, t := range toks {
		if t.WaitTimeout(time.Until(deadline)) && t.Error() == nil && s.pubacked(t) {
			acked = true
		}
	}
	if acked {
		return Acked
	}
	return NoAnswer
}

// pubacked reports whether the completed token t was completed by a PUBACK:
// then its publish is no longer in paho's store. (Should paho reuse the
// message id for a new publish first, this says no: a send counted as no
// answer is resent and deduplicated, never wrongly counted.)
func (s *MQTTSender) pubacked(t paho.Token) bool {
	pt, ok := t.(*paho.PublishToken)
	return ok && s.store.Get(fmt.Sprintf("o.%d", pt.MessageID())) == nil
}

// Refusals counts the messages on the device's err topic.
func (s *MQTTSender) Refusals() uint64 { return s.refusals.Load() }

// LastRefusal returns the last err topic message.
func (s *MQTTSender) LastRefusal() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Close disconnects.
func (s *MQTTSender) Close() { s.c.Disconnect(100) }

// HTTPSender is a device posting to the edge's POST /v1/events with HTTP
// Basic authentication.
type HTTPSender struct {
	url, device, secret string
	client              *http.Client
	refusals            atomic.Uint64
}

var _ Sender = (*HTTPSender)(nil)

// NewHTTPSender returns a device posting to the edge's HTTP listener at addr.
func NewHTTPSender(addr, device, secret string) *HTTPSender {
	return &HTTPSender{url: "http://" + addr + "/v1/events", device: device, secret: secret,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}}}
}

// Send posts payload copies times at once.
func (s *HTTPSender) Send(ctx context.Context, payload []byte, copies int, timeout time.Duration) Outcome {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ct := "application/json"
	if f, _ := protocol.DetectFormat(payload); f == protocol.FormatCBOR {
		ct = "application/cbor"
	}
	results := make([]Outcome, max(copies, 1))
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.post(ctx, payload, ct)
		}()
	}
	wg.Wait()
	best := Invalid + 1
	for _, r := range results {
		best = min(best, r)
	}
	return best
}

func (s *HTTPSender) post(ctx context.Context, payload []byte, ct string) Outcome {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(payload))
	if err != nil {
		return Invalid
	}
	req.SetBasicAuth(s.device, s.secret)
	req.Header.Set("Content-Type", ct)
	resp, err := s.client.Do(req)
	if err != nil {
		return NoAnswer
	}
	defer resp.Body.Close()
	switch c := resp.StatusCode; {
	case c == http.StatusOK || c == http.StatusCreated:
		return Acked
	case c == http.StatusTooManyRequests || c == http.StatusInsufficientStorage || c == http.StatusServiceUnavailable:
		s.refusals.Add(1)
		return Refused
	case c >= 500:
		s.refusals.Add(1)
		return NoAnswer
	default:
		s.refusals.Add(1)
		return Invalid
	}
}

// Refusals counts the error answers.
func (s *HTTPSender) Refusals() uint64 { return s.refusals.Load() }

// Close releases idle connections.
func (s *HTTPSender) Close() { s.client.CloseIdleConnections() }

// String names a sender's transport.
func String(s Sender) string {
	switch s.(type) {
	case *MQTTSender:
		return "MQTT 3.1.1"
	case *MQTT5Sender:
		return "MQTT 5"
	case *HTTPSender:
		return "HTTP"
	}
	return fmt.Sprintf("%T", s)
}

// copyStore is paho's memory store holding a copy of each packet. The
// memory store keeps the packet it is given, which paho may still be
// writing to the wire while a reconnect's resume sets the same packet's
// DUP flag: a data race inside paho (v1.5.1) that -race reports. A copy
// made on the way in keeps the resumed packet apart from the one in flight.
type copyStore struct{ *paho.MemoryStore }

func (s copyStore) Put(key string, m packets.ControlPacket) {
	if p, ok := m.(*packets.PublishPacket); ok {
		cp := *p // the fields resume sets are plain values; the payload is not written
		m = &cp
	}
	s.MemoryStore.Put(key, m)
}
