package intake_test

import (
	"context"
	"net"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"

	"github.com/outpost-edge/outpost/edge/intake/intaketest"
	"github.com/outpost-edge/outpost/protocol"
)

// TestPahoMQTT5 drives the intake with Eclipse Paho's MQTT 5 client
// (paho.golang), next to the MQTT 3.1.1 tests that use paho.mqtt.golang:
// a good publish is acknowledged with 0x00 after the append, a bad one gets
// 0x99 with a reason string, a quota refusal 0x97.
func TestPahoMQTT5(t *testing.T) {
	f := newFake(t)
	f.Fail = func(_ string, ev protocol.Event) error {
		if ev.ID == "full-1" {
			return intaketest.QuotaError{}
		}
		return nil
	}
	h := intaketest.MustStart(t, f, nil)
	conn, err := net.Dial("tcp", h.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho5.Connect{KeepAlive: 30, ClientID: "paho5", CleanStart: true,
		Username: "dev-1", UsernameFlag: true, Password: []byte(h.Secret("dev-1")), PasswordFlag: true})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	defer c.Disconnect(&paho5.Disconnect{})

	pr, err := c.Publish(ctx, &paho5.Publish{Topic: evTopic("dev-1"), QoS: 1, Payload: eventJSON("p5-1", "sale.note")})
	if err != nil || pr.ReasonCode != 0 {
		t.Fatalf("good publish: %v %+v", err, pr)
	}
	if got := f.RecordsOfType("sale.note"); len(got) != 1 {
		t.Fatalf("%d records stored when the PUBACK arrived, want 1", len(got))
	}
	pr, err = c.Publish(ctx, &paho5.Publish{Topic: evTopic("dev-1"), QoS: 1, Payload: []byte(`{"id":"p5-2","type":"Not.Valid","ts":1}`)})
	if err == nil || pr == nil || pr.ReasonCode != 0x99 || pr.Properties == nil || pr.Properties.ReasonString == "" {
		t.Fatalf("bad publish: %v %+v", err, pr)
	}
	pr, err = c.Publish(ctx, &paho5.Publish{Topic: evTopic("dev-1"), QoS: 1, Payload: eventJSON("full-1", "sale.note")})
	if err == nil || pr == nil || pr.ReasonCode != 0x97 {
		t.Fatalf("quota publish: %v %+v", err, pr)
	}
}
