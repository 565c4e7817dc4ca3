package intake_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/outpost-edge/outpost/edge/intake"
	"github.com/outpost-edge/outpost/edge/intake/intaketest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
)

func newFake(tb testing.TB) *intaketest.FakeAppender {
	f := intaketest.NewFakeAppender()
	tb.Cleanup(f.Close) // runs after the server's Close (cleanups are LIFO)
	return f
}

func TestConnectRefused(t *testing.T) {
	f := newFake(t)
	h := intaketest.MustStart(t, f, nil)
	for _, tc := range []struct {
		name, user, pass string
	}{
		{"bad secret", "dev-1", "wrong-secret-0123456789"},
		{"unknown device", "dev-9", "dev-9-secret-0123456789"},
		{"no credentials", "", ""},
		{"secret of another device", "dev-1", h.Secret("dev-2")},
	} {
		t.Run(tc.name+"/3.1.1", func(t *testing.T) {
			_, err := pahoClient(t, h, tc.user, tc.pass, "c-"+tc.user)
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), "bad user name or password") {
				t.Fatalf("connect: %v, want bad user name or password", err)
			}
			_, ack := dialRaw(t, h.MQTTAddr(), 4, "r-"+tc.user, tc.user, tc.pass)
			if ack.ReasonCode != 0x04 {
				t.Fatalf("3.1.1 CONNACK return code %#x, want 0x04", ack.ReasonCode)
			}
		})
		t.Run(tc.name+"/5", func(t *testing.T) {
			_, ack := dialRaw(t, h.MQTTAddr(), 5, "r5-"+tc.user, tc.user, tc.pass)
			if ack.ReasonCode != packets.ErrBadUsernameOrPassword.Code {
				t.Fatalf("CONNACK reason %#x, want 0x86", ack.ReasonCode)
			}
		})
	}
	if got := h.Server.Metrics().ConnectRefused.Load(); got != 12 {
		t.Errorf("ConnectRefused = %d, want 12", got)
	}
	if _, ack := dialRaw(t, h.MQTTAddr(), 5, "ok", "dev-1", h.Secret("dev-1")); ack.ReasonCode != 0 {
		t.Fatalf("good secret refused: %#x", ack.ReasonCode)
	}
}

// TestPubackAfterDurable holds the appender's commit and checks that the
// PUBACK has not reached the paho client until the commit completes.
func TestPubackAfterDurable(t *testing.T) {
	f := newFake(t)
	h := intaketest.MustStart(t, f, nil)
	c := mustPaho(t, h, "dev-1", "held")
	f.Hold()
	tok := c.Publish(evTopic("dev-1"), 1, false, eventJSON("e1", "sale.note"))
	checkFor(t, waitLimit, func() error {
		if f.Calls() < 1 {
			return errors.New("the publish has not reached the appender")
		}
		return nil
	})
	select {
	case <-tok.Done():
		t.Fatal("PUBACK arrived before the append was durable")
	default:
	}
	if n := h.Server.Metrics().Acked.Load(); n != 0 {
		t.Fatalf("Acked = %d before the commit", n)
	}
	f.Release()
	waitToken(t, tok)
	recs := f.Records()
	if len(recs) != 1 || recs[0].Device != "dev-1" || recs[0].Event.ID != "e1" {
		t.Fatalf("records %+v", recs)
	}
}

// TestPipelinedAcksInOrder sends 100 QoS 1 publishes back to back while
// a commit is held: they must all be carried by few group commits (each
// publish is its own Append; the appender batches them), and their
// PUBACKs must come back in packet order, none before its commit.
func TestPipelinedAcksInOrder(t *testing.T) {
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			f := newFake(t)
			h := intaketest.MustStart(t, f, nil)
			rc, _ := dialRaw(t, h.MQTTAddr(), v, "pipe", "dev-1", h.Secret("dev-1"))
			f.Hold()
			const n = 100
			for i := 1; i <= n; i++ {
				rc.publish(evTopic("dev-1"), 1, uint16(i), eventJSON(fmt.Sprintf("p%d", i), "sale.note"))
			}
			m := h.Server.Metrics()
			checkFor(t, waitLimit, func() error {
				if got := m.Published.Load(); got != n {
					return fmt.Errorf("%d publishes received, want %d", got, n)
				}
				return nil
			})
			checkFor(t, waitLimit, func() error {
				if got := f.Calls(); got != n {
					return fmt.Errorf("%d appends, want %d", got, n)
				}
				return nil
			})
			if m.Acked.Load() != 0 || f.Commits() != 0 {
				t.Fatalf("acked %d, commits %d while the commit is held", m.Acked.Load(), f.Commits())
			}
			f.Release()
			for i := 1; i <= n; i++ {
				pk := rc.mustRead(nil)
				if pk.FixedHeader.Type != packets.Puback || pk.PacketID != uint16(i) || pk.ReasonCode != 0 {
					t.Fatalf("ack %d: type %d id %d reason %#x", i, pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
				}
			}
			if commits := f.Commits(); commits > 3 {
				t.Errorf("%d publishes took %d commits; want them to share few", n, commits)
			}
			recs := f.Records()
			if len(recs) != n {
				t.Fatalf("%d records, want %d", len(recs), n)
			}
			for i, r := range recs {
				if want := fmt.Sprintf("p%d", i+1); r.Event.ID != want {
					t.Fatalf("record %d is %s, want %s: publish order lost", i, r.Event.ID, want)
				}
			}
			t.Logf("%d publishes: %d appends, %d commits", n, f.Calls(), f.Commits())
		})
	}
}

func TestACL(t *testing.T) {
	f := newFake(t)
	h := intaketest.MustStart(t, f, nil)

	t.Run("3.1.1 publish to another device's topic", func(t *testing.T) {
		c := mustPaho(t, h, "dev-1", "acl3")
		errs := subscribeErr(t, c, "dev-1")
		payload := eventJSON("x1", "sale.note")
		waitToken(t, c.Publish(evTopic("dev-2"), 1, false, payload)) // acknowledged, so the device does not loop
		msgs := errs.wait(t, 1)
		if m := msgs[0]; m.Reason != "not_authorized" || m.Code != 0x87 || m.Topic != evTopic("dev-2") || !m.Acked || len(m.Rejected) != 1 {
			t.Fatalf("err message %+v", m)
		}
		recs := f.RecordsOfType(protocol.TypeIntakeRejected)
		if len(recs) != 1 || recs[0].Device != "dev-1" {
			t.Fatalf("rejected records %+v", recs)
		}
		body := rejectedBody(t, recs[0])
		if body["reason"] != "not_authorized" || body["topic"] != evTopic("dev-2") || body["payload_b64"] != base64.StdEncoding.EncodeToString(payload) {
			t.Fatalf("rejected body %v", body)
		}
		for _, r := range f.Records() {
			if r.Device == "dev-2" || r.Event.ID == "x1" {
				t.Fatalf("event stored from a foreign topic: %+v", r)
			}
		}
	})

	t.Run("3.1.1 subscribe to another device's topics", func(t *testing.T) {
		c := mustPaho(t, h, "dev-1", "acl3s")
		for _, topic := range []string{errTopic("dev-2"), "outpost/v1/dev/dev-2/cmd", evTopic("dev-2"), evTopic("dev-1"), "outpost/v1/dev/+/err", "#", "$SYS/#"} {
			tok := c.Subscribe(topic, 1, nil)
			waitToken(t, tok)
			if r := tok.(interface{ Result() map[string]byte }).Result()[topic]; r != 0x80 {
				t.Errorf("subscribe %s: granted %#x, want 0x80", topic, r)
			}
		}
		tok := c.Subscribe("outpost/v1/dev/dev-1/cmd", 1, nil)
		waitToken(t, tok)
		if r := tok.(interface{ Result() map[string]byte }).Result()["outpost/v1/dev/dev-1/cmd"]; r != 1 {
			t.Errorf("subscribe to own cmd topic: %#x", r)
		}
	})

	t.Run("devices do not see each other's messages", func(t *testing.T) {
		spy := mustPaho(t, h, "dev-2", "spy")
		spyErrs := subscribeErr(t, spy, "dev-2")
		c := mustPaho(t, h, "dev-1", "talker")
		errs := subscribeErr(t, c, "dev-1")
		waitToken(t, c.Publish(evTopic("dev-1"), 1, false, eventJSON("seen-by-none", "sale.note")))
		waitToken(t, c.Publish(evTopic("dev-1"), 1, false, []byte("not json")))
		errs.wait(t, 1)
		// dev-2's err message (if one had been sent) would have been
		// published before dev-1's: same broker, same inline client.
		spyErrs.mu.Lock()
		defer spyErrs.mu.Unlock()
		if got := len(spyErrs.msgs); got != 0 {
			t.Fatalf("dev-2 received %d of dev-1's messages", got)
		}
	})

	t.Run("5 publish to another device's topic", func(t *testing.T) {
		rc, _ := dialRaw(t, h.MQTTAddr(), 5, "acl5", "dev-1", h.Secret("dev-1"))
		rc.publish(evTopic("dev-2"), 1, 7, eventJSON("x5", "sale.note"))
		if pk := rc.mustRead(nil); pk.FixedHeader.Type != packets.Puback || pk.PacketID != 7 || pk.ReasonCode != 0x87 {
			t.Fatalf("PUBACK %d id %d reason %#x, want 0x87", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
		}
	})

	t.Run("client ids are per device", func(t *testing.T) {
		a := mustPaho(t, h, "dev-1", "same-id")
		mustPaho(t, h, "dev-2", "same-id") // must not take over dev-1's session
		waitToken(t, a.Publish(evTopic("dev-1"), 1, false, eventJSON("still-here", "sale.note")))
	})
}

func rejectedBody(tb testing.TB, r intaketest.Record) map[string]any {
	tb.Helper()
	var m map[string]any
	if err := r.Event.Body.Decode(&m); err != nil {
		tb.Fatal(err)
	}
	if !strings.HasPrefix(r.Event.ID, "rej-") || r.Event.Type != protocol.TypeIntakeRejected {
		tb.Fatalf("rejected record id %q type %q", r.Event.ID, r.Event.Type)
	}
	return m
}

// num reads a decoded body's integer, whichever Go type CBOR gave it.
func num(v any) int {
	switch x := v.(type) {
	case int64:
		return int(x)
	case uint64:
		return int(x)
	}
	return -1
}

func TestBadPayload311(t *testing.T) {
	f := newFake(t)
	h := intaketest.MustStart(t, f, nil)
	c := mustPaho(t, h, "dev-1", "bad")
	errs := subscribeErr(t, c, "dev-1")

	// A payload that is not an event at all.
	bad := []byte(`{"id":"b1","type":"Sale Completed","ts":1767225600000}`)
	waitToken(t, c.Publish(evTopic("dev-1"), 1, false, bad))
	m := errs.wait(t, 1)[0]
	if m.Reason != "invalid" || m.Code != 0x99 || !m.Acked || m.Accepted != 0 || len(m.Errors) != 1 || m.Errors[0].Field != "type" || m.WhatToDo == "" {
		t.Fatalf("err message %+v", m)
	}
	recs := f.RecordsOfType(protocol.TypeIntakeRejected)
	if len(recs) != 1 || m.Rejected[0] != recs[0].Event.ID {
		t.Fatalf("rejected records %+v, err message names %v", recs, m.Rejected)
	}
	if b := rejectedBody(t, recs[0]); b["payload_b64"] != base64.StdEncoding.EncodeToString(bad) || b["truncated"] != false || num(b["code"]) != 0x99 {
		t.Fatalf("rejected body %v", b)
	}

	// The same bad payload again: acknowledged, no second record.
	waitToken(t, c.Publish(evTopic("dev-1"), 1, false, bad))
	errs.wait(t, 2)
	if n := len(f.RecordsOfType(protocol.TypeIntakeRejected)); n != 1 {
		t.Fatalf("%d rejected records after a repeat, want 1", n)
	}

	// A batch with one bad item of three: the good ones are stored.
	batch := []byte(`[{"id":"g1","type":"sale.note","ts":1767225600000},{"id":"g2","type":"sale.note","ts":"yesterday"},{"id":"g3","type":"sale.note","ts":1767225600000}]`)
	waitToken(t, c.Publish(evTopic("dev-1"), 1, false, batch))
	m = errs.wait(t, 3)[2]
	if m.Code != 0 || m.Accepted != 2 || len(m.Errors) != 1 || *m.Errors[0].Index != 1 || m.Errors[0].ID != "g2" || m.Errors[0].Field != "ts" {
		t.Fatalf("err message %+v", m)
	}
	var ids []string
	for _, r := range f.Records() {
		ids = append(ids, r.Event.ID)
	}
	if s := strings.Join(ids, ","); !strings.Contains(s, "g1") || !strings.Contains(s, "g3") || strings.Contains(s, "g2") {
		t.Fatalf("stored %s", s)
	}
	recs = f.RecordsOfType(protocol.TypeIntakeRejected)
	if len(recs) != 2 {
		t.Fatalf("%d rejected records, want 2", len(recs))
	}
	b := rejectedBody(t, recs[1])
	item, _ := base64.StdEncoding.DecodeString(b["payload_b64"].(string))
	if num(b["index"]) != 1 || !strings.Contains(string(item), `"g2"`) || strings.Contains(string(item), "g1") {
		t.Fatalf("rejected item body %v (%s)", b, item)
	}

	// A huge payload is kept truncated.
	big := []byte(`{"id":"big","type":"sale.note","ts":1767225600000,"body":{"s":"` + strings.Repeat("x", 70<<10) + `"}}`)
	waitToken(t, c.Publish(evTopic("dev-1"), 1, false, big))
	m = errs.wait(t, 4)[3]
	if m.Reason != "too_large" {
		t.Fatalf("err message %+v", m)
	}
	recs = f.RecordsOfType(protocol.TypeIntakeRejected)
	b = rejectedBody(t, recs[len(recs)-1])
	kept, _ := base64.StdEncoding.DecodeString(b["payload_b64"].(string))
	if b["truncated"] != true || len(kept) != 4096 || num(b["size"]) != len(big) {
		t.Fatalf("truncated record: truncated=%v kept=%d size=%v", b["truncated"], len(kept), b["size"])
	}
}

func TestReasonCodesMQTT5(t *testing.T) {
	f := newFake(t)
	f.Fail = func(_ string, ev protocol.Event) error {
		if ev.Type == protocol.TypeIntakeRejected {
			return nil
		}
		switch {
		case strings.HasPrefix(ev.ID, "quota"):
			return intaketest.QuotaError{}
		case strings.HasPrefix(ev.ID, "disk"):
			return intaketest.DiskFullError{}
		case strings.HasPrefix(ev.ID, "boom"):
			return errors.New("boom")
		}
		return nil
	}
	h := intaketest.MustStart(t, f, nil)
	rc, _ := dialRaw(t, h.MQTTAddr(), 5, "codes", "dev-1", h.Secret("dev-1"))
	rc.subscribe(1, errTopic("dev-1"))
	if pk := rc.mustRead(nil); pk.FixedHeader.Type != packets.Suback || pk.ReasonCodes[0] != 1 {
		t.Fatalf("suback %+v", pk)
	}
	for i, tc := range []struct {
		name    string
		topic   string
		payload []byte
		want    byte
	}{
		{"ok", evTopic("dev-1"), eventJSON("ok1", "sale.note"), 0x00},
		{"repeat", evTopic("dev-1"), eventJSON("ok1", "sale.note"), 0x00},
		{"not authorized", evTopic("dev-3"), eventJSON("n1", "sale.note"), 0x87},
		{"not an event", evTopic("dev-1"), []byte("hello"), 0x99},
		{"invalid field", evTopic("dev-1"), eventJSON("bad id with a very long name that goes on and on past sixty-four bytes", "sale.note"), 0x99},
		{"reserved type", evTopic("dev-1"), eventJSON("r1", "intake.rejected"), 0x99},
		{"partial batch", evTopic("dev-1"), []byte(`[{"id":"pb1","type":"sale.note","ts":1},{"id":"pb2","type":"x"}]`), 0x00},
		{"quota", evTopic("dev-1"), eventJSON("quota1", "sale.note"), 0x97},
		{"disk full", evTopic("dev-1"), eventJSON("disk1", "sale.note"), 0x97},
		{"other", evTopic("dev-1"), eventJSON("boom1", "sale.note"), 0x83},
		{"after the refusals", evTopic("dev-1"), eventJSON("ok2", "sale.note"), 0x00},
	} {
		id := uint16(100 + i)
		rc.publish(tc.topic, 1, id, tc.payload)
		pk := rc.mustRead(nil)
		if pk.FixedHeader.Type != packets.Puback || pk.PacketID != id || pk.ReasonCode != tc.want {
			t.Errorf("%s: packet %d id %d reason %#x (%q), want PUBACK %#x", tc.name, pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode, pk.Properties.ReasonString, tc.want)
		}
		if tc.want >= 0x80 && pk.Properties.ReasonString == "" {
			t.Errorf("%s: no reason string", tc.name)
		}
	}
	m := h.Server.Metrics()
	for r, want := range map[intake.Reason]uint64{intake.ReasonNotAuthorized: 1, intake.ReasonInvalid: 4, intake.ReasonQuota: 1, intake.ReasonDiskFull: 1, intake.ReasonInternal: 1} {
		if got := m.Refused(r); got != want {
			t.Errorf("Refused(%s) = %d, want %d", r, got, want)
		}
	}
	if m.Duplicates.Load() != 1 {
		t.Errorf("Duplicates = %d, want 1", m.Duplicates.Load())
	}
}

// TestStorageRefusal311 checks that an MQTT 3.1.1 publish that could not be
// stored is not acknowledged: the device is disconnected and resends it.
// An MQTT 3.1.1 publish the edge cannot store is not acknowledged, and the
// device is not disconnected (see TestPaho311StorageRefusalIsNotAnAck): the
// PUBACK is held, with those after it, until a retry stores it.
func TestStorageRefusal311(t *testing.T) {
	f := newFake(t)
	var full atomic.Bool
	full.Store(true)
	var tries atomic.Int64
	f.Fail = func(_ string, ev protocol.Event) error {
		if ev.ID == "q1" {
			tries.Add(1)
			if full.Load() {
				return intaketest.QuotaError{}
			}
		}
		return nil
	}
	h := intaketest.MustStart(t, f, func(s *intake.Server) { s.HoldRetry = 5 * time.Millisecond })
	rc, _ := dialRaw(t, h.MQTTAddr(), 4, "quota3", "dev-1", h.Secret("dev-1"))
	rc.publish(evTopic("dev-1"), 1, 1, eventJSON("fine", "sale.note"))
	rc.publish(evTopic("dev-1"), 1, 2, eventJSON("q1", "sale.note"))
	rc.publish(evTopic("dev-1"), 1, 3, eventJSON("fine2", "sale.note"))
	if pk := rc.mustRead(nil); pk.FixedHeader.Type != packets.Puback || pk.PacketID != 1 {
		t.Fatalf("first ack: %+v", pk)
	}
	poll.Until(t, waitLimit, "retries of the refused append", func() bool { return tries.Load() >= 3 })
	full.Store(false)
	for _, want := range []uint16{2, 3} {
		pk := rc.mustRead(nil)
		if pk.FixedHeader.Type != packets.Puback || pk.PacketID != want {
			t.Fatalf("got type %d id %d, want PUBACK %d", pk.FixedHeader.Type, pk.PacketID, want)
		}
		if len(f.RecordsOfType("sale.note")) != 3 {
			t.Fatalf("PUBACK %d before q1 was stored", want)
		}
	}
	if n := h.Server.Metrics().Refused(intake.ReasonQuota); n < 3 {
		t.Fatalf("Refused(quota) = %d, want one per try", n)
	}
}

func TestQoS0AndQoS2(t *testing.T) {
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			f := newFake(t)
			h := intaketest.MustStart(t, f, nil)
			rc, _ := dialRaw(t, h.MQTTAddr(), v, "qos", "dev-1", h.Secret("dev-1"))
			rc.publish(evTopic("dev-1"), 0, 0, eventJSON("zero", "sale.note"))
			rc.publish(evTopic("dev-1"), 2, 9, eventJSON("two", "sale.note"))
			pk := rc.mustRead(nil)
			if pk.FixedHeader.Type != packets.Pubrec || pk.PacketID != 9 || pk.ReasonCode != 0 {
				t.Fatalf("want PUBREC 9, got type %d id %d reason %#x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
			}
			if n := len(f.Records()); n != 2 {
				t.Fatalf("%d records at PUBREC, want 2 (QoS 0 and 2 both durable)", n)
			}
			rc.pubrel(9)
			if pk := rc.mustRead(nil); pk.FixedHeader.Type != packets.Pubcomp || pk.PacketID != 9 || pk.ReasonCode != 0 {
				t.Fatalf("want PUBCOMP 9 success, got type %d id %d reason %#x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode)
			}
			if q := h.Server.Metrics().QoS0.Load(); q != 1 {
				t.Fatalf("QoS0 = %d", q)
			}
		})
	}
}

// TestClientBackpressure checks that a client with MaxPendingPerClient
// publishes unacknowledged is not read from, and resumes in order.
func TestClientBackpressure(t *testing.T) {
	f := newFake(t)
	h := intaketest.MustStart(t, f, func(s *intake.Server) { s.MaxPendingPerClient = 5 })
	rc, _ := dialRaw(t, h.MQTTAddr(), 5, "bp", "dev-1", h.Secret("dev-1"))
	f.Hold()
	const n = 12
	for i := 1; i <= n; i++ {
		rc.publish(evTopic("dev-1"), 1, uint16(i), eventJSON(fmt.Sprintf("bp%d", i), "sale.note"))
	}
	m := h.Server.Metrics()
	checkFor(t, waitLimit, func() error {
		// Five in the queue, the sixth read and waiting for room.
		if f.Calls() != 5 || m.Published.Load() != 6 {
			return fmt.Errorf("%d appends, %d publishes read; want 5 and 6", f.Calls(), m.Published.Load())
		}
		return nil
	})
	f.Release()
	for i := 1; i <= n; i++ {
		if pk := rc.mustRead(nil); pk.FixedHeader.Type != packets.Puback || pk.PacketID != uint16(i) {
			t.Fatalf("ack %d: type %d id %d", i, pk.FixedHeader.Type, pk.PacketID)
		}
	}
}

func TestCloseWithHeldAppends(t *testing.T) {
	f := newFake(t)
	h := intaketest.MustStart(t, f, nil)
	rc, _ := dialRaw(t, h.MQTTAddr(), 4, "closing", "dev-1", h.Secret("dev-1"))
	f.Hold()
	for i := 1; i <= 10; i++ {
		rc.publish(evTopic("dev-1"), 1, uint16(i), eventJSON(fmt.Sprintf("c%d", i), "sale.note"))
	}
	checkFor(t, waitLimit, func() error {
		if h.Server.Metrics().Published.Load() != 10 {
			return errors.New("publishes not all received")
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- h.Server.Close() }()
	f.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := h.Server.Metrics().Inflight.Load(); n != 0 {
		t.Fatalf("%d appends in flight after Close", n)
	}
}
