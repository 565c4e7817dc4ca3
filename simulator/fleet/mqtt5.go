package fleet

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"

	"github.com/outpost-edge/outpost/protocol"
)

// MQTT 5 PUBACK reason codes the edge answers with (edge/intake's
// reason.go has the full table).
const (
	reasonSuccess       = 0x00
	reasonQuotaExceeded = 0x97
	reasonNotAuthorized = 0x87
	reasonBadPayload    = 0x99
)

// MQTT5Sender is a device connected over MQTT 5 (Eclipse Paho's
// paho.golang), publishing at QoS 1. Unlike an MQTT 3.1.1 device it learns
// why a publish was refused from the PUBACK's reason code. It connects on
// first use and again after its connection breaks.
type MQTT5Sender struct {
	addr, device, secret, topic string
	refusals                    atomic.Uint64

	mu sync.Mutex
	c  *paho5.Client
}

var _ Sender = (*MQTT5Sender)(nil)

// NewMQTT5Sender returns a device that publishes to the edge's MQTT
// listener at addr.
func NewMQTT5Sender(addr, device, secret string) (*MQTT5Sender, error) {
	topic, err := protocol.DeviceTopic(device, protocol.KindEvent)
	if err != nil {
		return nil, err
	}
	return &MQTT5Sender{addr: addr, device: device, secret: secret, topic: topic}, nil
}

func (s *MQTT5Sender) client(ctx context.Context) (*paho5.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		select {
		case <-s.c.Done():
			s.c = nil
		default:
			return s.c, nil
		}
	}
	conn, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	c := paho5.NewClient(paho5.ClientConfig{Conn: conn})
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ca, err := c.Connect(cctx, &paho5.Connect{KeepAlive: 10, ClientID: s.device, CleanStart: true,
		Username: s.device, UsernameFlag: true, Password: []byte(s.secret), PasswordFlag: true})
	if err == nil && ca.ReasonCode != reasonSuccess {
		err = errors.New("connect refused")
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	s.c = c
	return c, nil
}

func (s *MQTT5Sender) drop(c *paho5.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == c {
		_ = c.Disconnect(&paho5.Disconnect{})
		s.c = nil
	}
}

// Send publishes payload at QoS 1 and reads the PUBACK's reason code.
func (s *MQTT5Sender) Send(ctx context.Context, payload []byte, copies int, timeout time.Duration) Outcome {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := s.client(ctx)
	if err != nil {
		return NoAnswer
	}
	results := make([]Outcome, max(copies, 1))
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr, err := c.Publish(ctx, &paho5.Publish{Topic: s.topic, QoS: 1, Payload: payload})
			switch {
			case pr == nil:
				results[i] = NoAnswer
			case pr.ReasonCode == reasonSuccess && err == nil:
				results[i] = Acked
			case pr.ReasonCode == reasonQuotaExceeded:
				s.refusals.Add(1)
				results[i] = Refused
			case pr.ReasonCode == reasonBadPayload || pr.ReasonCode == reasonNotAuthorized:
				s.refusals.Add(1)
				results[i] = Invalid
			default:
				s.refusals.Add(1)
				results[i] = NoAnswer
			}
		}()
	}
	wg.Wait()
	best := Invalid + 1
	for _, r := range results {
		best = min(best, r)
	}
	if best == NoAnswer {
		s.drop(c) // a publish that timed out leaves the session in doubt
	}
	return best
}

// Refusals counts the PUBACKs with a failure reason code.
func (s *MQTT5Sender) Refusals() uint64 { return s.refusals.Load() }

// Close disconnects.
func (s *MQTT5Sender) Close() {
	s.mu.Lock()
	c := s.c
	s.c = nil
	s.mu.Unlock()
	if c != nil {
		_ = c.Disconnect(&paho5.Disconnect{})
	}
}
