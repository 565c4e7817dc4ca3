package intake_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/edge/intake/intaketest"
	"github.com/outpost-edge/outpost/internal/poll"
)

const waitLimit = 10 * time.Second

// checkFor polls f until it returns nil, failing tb with f's last error
// after d.
func checkFor(tb testing.TB, d time.Duration, f func() error) {
	tb.Helper()
	poll.For(tb, d, f)
}

func evTopic(dev string) string  { return "outpost/v1/dev/" + dev + "/ev" }
func errTopic(dev string) string { return "outpost/v1/dev/" + dev + "/err" }

// eventJSON returns one event as a device sends it.
func eventJSON(id, typ string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"type":%q,"ts":1767225600000,"body":{"n":1}}`, id, typ)
}

// pahoClient connects a paho MQTT 3.1.1 client.
func pahoClient(tb testing.TB, h *intaketest.Harness, device, secret, clientID string) (paho.Client, error) {
	tb.Helper()
	o := paho.NewClientOptions().
		AddBroker("tcp://" + h.MQTTAddr()).
		SetClientID(clientID).
		SetUsername(device).
		SetPassword(secret).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetCleanSession(true).
		SetProtocolVersion(4).
		SetConnectTimeout(waitLimit)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(waitLimit) {
		tb.Fatal("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	tb.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func mustPaho(tb testing.TB, h *intaketest.Harness, device, clientID string) paho.Client {
	tb.Helper()
	c, err := pahoClient(tb, h, device, h.Secret(device), clientID)
	if err != nil {
		tb.Fatalf("connect %s: %v", device, err)
	}
	return c
}

func waitToken(tb testing.TB, tok paho.Token) {
	tb.Helper()
	if !tok.WaitTimeout(waitLimit) {
		tb.Fatal("token did not complete")
	}
	if err := tok.Error(); err != nil {
		tb.Fatal(err)
	}
}

// errSub subscribes c to its device's err topic and returns the messages.
type errSub struct {
	mu   sync.Mutex
	msgs []errMessage
}

type errMessage struct {
	Topic    string `json:"topic"`
	PacketID int    `json:"packet_id"`
	Code     int    `json:"code"`
	Reason   string `json:"reason"`
	Error    string `json:"error"`
	WhatToDo string `json:"what_to_do"`
	Acked    bool   `json:"acked"`
	Accepted int    `json:"accepted"`
	Errors   []struct {
		Index *int   `json:"index"`
		ID    string `json:"id"`
		Field string `json:"field"`
		Error string `json:"error"`
	} `json:"errors"`
	Rejected []string `json:"rejected"`
}

func subscribeErr(tb testing.TB, c paho.Client, dev string) *errSub {
	tb.Helper()
	s := &errSub{}
	tok := c.Subscribe(errTopic(dev), 1, func(_ paho.Client, m paho.Message) {
		var e errMessage
		if err := json.Unmarshal(m.Payload(), &e); err != nil {
			tb.Errorf("err message %q: %v", m.Payload(), err)
			return
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, e)
		s.mu.Unlock()
	})
	waitToken(tb, tok)
	if r := tok.(*paho.SubscribeToken).Result()[errTopic(dev)]; r > 2 {
		tb.Fatalf("subscribe to own err topic refused: %#x", r)
	}
	return s
}

func (s *errSub) wait(tb testing.TB, n int) []errMessage {
	tb.Helper()
	checkFor(tb, waitLimit, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.msgs) < n {
			return fmt.Errorf("%d err messages, want %d", len(s.msgs), n)
		}
		return nil
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]errMessage(nil), s.msgs...)
}

// rawClient speaks MQTT over a plain TCP connection with mochi's own packet
// codec: it sees every packet (PUBACK order, MQTT 5 reason codes), which
// paho.mqtt.golang (3.1.1 only) hides.
type rawClient struct {
	tb   testing.TB
	conn net.Conn
	r    *bufio.Reader
	v    byte
}

func dialRaw(tb testing.TB, addr string, version byte, clientID, user, pass string) (*rawClient, packets.Packet) {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	rc := &rawClient{tb: tb, conn: c, r: bufio.NewReader(c), v: version}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            true,
			Keepalive:        60,
			ClientIdentifier: clientID,
			UsernameFlag:     user != "",
			Username:         []byte(user),
			PasswordFlag:     pass != "",
			Password:         []byte(pass),
		},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		tb.Fatal(err)
	}
	rc.write(buf.Bytes())
	ack, err := rc.read(waitLimit)
	if err != nil {
		tb.Fatalf("read connack: %v", err)
	}
	if ack.FixedHeader.Type != packets.Connack {
		tb.Fatalf("got packet type %d, want CONNACK", ack.FixedHeader.Type)
	}
	return rc, ack
}

func (rc *rawClient) write(b []byte) {
	rc.tb.Helper()
	if _, err := rc.conn.Write(b); err != nil {
		rc.tb.Fatal(err)
	}
}

func (rc *rawClient) publish(topic string, qos byte, id uint16, payload []byte) {
	rc.tb.Helper()
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: qos},
		ProtocolVersion: rc.v,
		TopicName:       topic,
		PacketID:        id,
		Payload:         payload,
	}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		rc.tb.Fatal(err)
	}
	rc.write(buf.Bytes())
}

func (rc *rawClient) pubrel(id uint16) {
	rc.tb.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, ProtocolVersion: rc.v, PacketID: id}
	var buf bytes.Buffer
	if err := pk.PubrelEncode(&buf); err != nil {
		rc.tb.Fatal(err)
	}
	rc.write(buf.Bytes())
}

func (rc *rawClient) subscribe(id uint16, filter string) {
	rc.tb.Helper()
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		ProtocolVersion: rc.v,
		PacketID:        id,
		Filters:         packets.Subscriptions{{Filter: filter, Qos: 1}},
	}
	var buf bytes.Buffer
	if err := pk.SubscribeEncode(&buf); err != nil {
		rc.tb.Fatal(err)
	}
	rc.write(buf.Bytes())
}

// read returns the next packet, or an error (io.EOF when the server closed
// the connection).
func (rc *rawClient) read(d time.Duration) (packets.Packet, error) {
	rc.conn.SetReadDeadline(time.Now().Add(d))
	hb, err := rc.r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{ProtocolVersion: rc.v}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(rc.r)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	return pk, err
}

// mustRead returns the next packet that is not a PUBLISH (messages on the
// err topic are returned through pubs when it is not nil).
func (rc *rawClient) mustRead(pubs *[]packets.Packet) packets.Packet {
	rc.tb.Helper()
	for {
		pk, err := rc.read(waitLimit)
		if err != nil {
			rc.tb.Fatalf("read: %v", err)
		}
		if pk.FixedHeader.Type == packets.Publish {
			if pk.FixedHeader.Qos > 0 {
				rc.ack(pk.PacketID)
			}
			if pubs != nil {
				*pubs = append(*pubs, pk)
			}
			continue
		}
		return pk
	}
}

func (rc *rawClient) ack(id uint16) {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: rc.v, PacketID: id}
	var buf bytes.Buffer
	pk.PubackEncode(&buf)
	rc.write(buf.Bytes())
}
