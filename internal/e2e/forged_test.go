package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/internal/keyfile"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// TestForgedSegmentDoesNotFreezeUploads publishes a forged segment on an
// edge's topic, as anyone with an account on an external broker that does
// not enforce per-edge ACLs can: the edge's stream and its next range,
// signed by a key the cloud does not know. The cloud quarantines it and
// nacks it to the edge, which used to hold its whole backlog for 10
// minutes; the nack now names the forged bytes, the edge ignores it, and
// uploads go on.
func TestForgedSegmentDoesNotFreezeUploads(t *testing.T) {
	broker := freePort(t)
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: broker})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	s := newSiteOn(t, broker)
	e := s.addEdge("shop-f", "till-1")
	o := newOracle()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := httpDevice(ctx, e, "till-1", 10, o, 0); err != nil {
		t.Fatal(err)
	}
	s.drained(30 * time.Second)

	var st struct {
		Epoch    string `json:"epoch"`
		AckedHWM uint64 `json:"acked_hwm"`
	}
	resp, err := http.Get("http://" + e.status + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	ep, perr := protocol.ParseEpoch(st.Epoch)
	if err != nil || perr != nil {
		t.Fatalf("status: %v %v", err, perr)
	}
	forger := (&protocoltest.Stream{Stream: protocol.Stream{Edge: "shop-f", Epoch: ep}, Signer: protocoltest.Signer(t, "attacker")}).AddN(t, int(st.AckedHWM)+5)
	forged := protocoltest.Encode(t, forger.Segment(st.AckedHWM+1, st.AckedHWM+5), false)

	opts := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("attacker").SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("attacker connect: %v", tok.Error())
	}
	topic, _ := protocol.EdgeTopic("shop-f", protocol.KindSegment)
	if tok := c.Publish(topic, 1, false, forged); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish the forgery: %v", tok.Error())
	}
	waitFor(t, "the forgery quarantined", 30*time.Second, func() bool { return quarantined(t, s) == 1 }, s.cloud)
	defer c.Disconnect(100)

	// The shop keeps selling, and its events keep going up.
	if err := httpDevice(ctx, e, "till-1", 30, o, 10); err != nil {
		t.Fatal(err)
	}
	s.drained(30 * time.Second)
	verifyLedger(t, ledgerRows(t, s.dbURL), o)
	var u struct {
		Uplink struct {
			Nacks   uint64 `json:"nacks"`
			Ignored uint64 `json:"ignored_nacks"`
		} `json:"uplink"`
	}
	resp, err = http.Get("http://" + e.status + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&u); err != nil || u.Uplink.Nacks != 0 || u.Uplink.Ignored != 1 {
		t.Errorf("uplink: %d nacks acted on, %d ignored (%v); want 0 and 1", u.Uplink.Nacks, u.Uplink.Ignored, err)
	}
}

// TestForgedSegmentDoesNotFreezeUploadsNATS is the same attack over the
// cloud's embedded NATS server, by someone holding the edge's credentials
// (its key): a second connection as the edge publishes the forgery on the
// edge's own subject, so the nack reaches the real edge too.
func TestForgedSegmentDoesNotFreezeUploadsNATS(t *testing.T) {
	s := newSiteWith(t, siteOptions{nats: natsEmbedded})
	e := s.addEdge("shop-n", "till-1")
	dir := filepath.Join(s.dir, "shop-n")
	o := newOracle()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := httpDevice(ctx, e, "till-1", 10, o, 0); err != nil {
		t.Fatal(err)
	}
	s.drained(30 * time.Second)
	st := statusOf(t, e)
	ep, err := protocol.ParseEpoch(st.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	key, err := keyfile.Load(filepath.Join(dir, "edge.key"))
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := protocol.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	var id struct {
		CloudKID string `json:"cloud_kid"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "identity.json")); err != nil || json.Unmarshal(b, &id) != nil {
		t.Fatalf("identity: %v", err)
	}
	token := stolen.BrokerToken(protocol.BrokerAudience("nats", id.CloudKID), "shop-n", uint64(time.Now().UnixMilli()+60_000))
	nc, err := natsgo.Connect("nats://"+s.nats, natsgo.UserInfo("shop-n", token), natsgo.CustomInboxPrefix(protocol.NATSInboxPrefix("shop-n")))
	if err != nil {
		t.Fatalf("attacker connect: %v", err)
	}
	defer nc.Close()
	forger := (&protocoltest.Stream{Stream: protocol.Stream{Edge: "shop-n", Epoch: ep}, Signer: protocoltest.Signer(t, "attacker")}).AddN(t, int(st.AckedHWM)+5)
	forged := protocoltest.Encode(t, forger.Segment(st.AckedHWM+1, st.AckedHWM+5), false)
	subject, _ := protocol.EdgeSubject("shop-n", protocol.KindSegment)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, subject, forged); err != nil {
		t.Fatalf("publish the forgery: %v", err)
	}
	waitFor(t, "the forgery quarantined", 30*time.Second, func() bool { return quarantined(t, s) == 1 }, s.cloud)
	waitFor(t, "the edge saw the nack", 30*time.Second, func() bool {
		u := statusOf(t, e).Uplink
		return u.Nacks+u.Ignored > 0
	}, e.proc)

	if err := httpDevice(ctx, e, "till-1", 30, o, 10); err != nil {
		t.Fatal(err)
	}
	s.drained(30 * time.Second)
	verifyLedger(t, ledgerRows(t, s.dbURL), o)
	if u := statusOf(t, e).Uplink; u.Nacks != 0 || u.Ignored != 1 {
		t.Errorf("uplink: %d nacks acted on, %d ignored; want 0 and 1", u.Nacks, u.Ignored)
	}
}

type edgeStatusJSON struct {
	Epoch    string `json:"epoch"`
	AckedHWM uint64 `json:"acked_hwm"`
	Uplink   struct {
		Nacks   uint64 `json:"nacks"`
		Ignored uint64 `json:"ignored_nacks"`
	} `json:"uplink"`
}

func statusOf(t *testing.T, e *edgeProc) edgeStatusJSON {
	t.Helper()
	var st edgeStatusJSON
	resp, err := http.Get("http://" + e.status + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}
