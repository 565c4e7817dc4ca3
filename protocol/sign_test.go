package protocol_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/outpost-edge/outpost/protocol"
)

// TestEd25519AlgorithmID pins the COSE algorithm identifier: go-cose has
// renamed its Ed25519 constants across versions, and a change in the number
// would make every stored signature unreadable by other implementations.
func TestEd25519AlgorithmID(t *testing.T) {
	if cose.AlgorithmEdDSA != -8 {
		t.Fatalf("cose.AlgorithmEdDSA = %d; the wire format uses -8 (EdDSA, RFC 9053)", cose.AlgorithmEdDSA)
	}
	s := mustSigner(t, edgeKeyName)
	cp := s.SignCheckpoint(protocol.Checkpoint{Edge: "e1", Epoch: protocol.Epoch{1}, Seq: 1})
	var m cose.Sign1Message
	if err := m.UnmarshalCBOR(cp); err != nil {
		t.Fatal(err)
	}
	// The protected header bytes start with map(3), 1: -8 (0xa3 0x01 0x27).
	var got []byte // RawProtected is a bstr wrapping the header map
	if err := cbor.Unmarshal(m.Headers.RawProtected, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) < 3 || got[0] != 0xa3 || got[1] != 0x01 || got[2] != 0x27 {
		t.Fatalf("protected header %x does not start a3 01 27 (alg: -8)", got)
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	s := mustSigner(t, edgeKeyName)
	in := protocol.Checkpoint{Edge: "e1", Epoch: protocol.Epoch{1}, Seq: 42, Head: protocol.HashBytes([]byte("x")), EdgeTime: 7}
	got, err := protocol.VerifyCheckpoint(s.SignCheckpoint(in), protocol.NewKeyMap(s.Public()))
	if err != nil {
		t.Fatal(err)
	}
	in.KID = s.KeyID()
	if got != in {
		t.Fatalf("got %+v, want %+v", got, in)
	}
}

func TestSignatureRefusals(t *testing.T) {
	edge := mustSigner(t, edgeKeyName)
	other := mustSigner(t, "another edge")
	keys := protocol.NewKeyMap(edge.Public())
	good := edge.SignCheckpoint(protocol.Checkpoint{Edge: "e1", Epoch: protocol.Epoch{1}, Seq: 5, Head: protocol.Hash{1}})

	resign := func(t *testing.T, mutate func(m *cose.Sign1Message)) []byte {
		t.Helper()
		var m cose.Sign1Message
		if err := m.UnmarshalCBOR(good); err != nil {
			t.Fatal(err)
		}
		mutate(&m)
		b, err := m.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es256, _ := cose.NewSigner(cose.AlgorithmES256, ecKey)
	otherAlg, err := cose.Sign1(rand.Reader, es256, cose.Headers{Protected: cose.ProtectedHeader{
		cose.HeaderLabelAlgorithm:   cose.AlgorithmES256,
		cose.HeaderLabelContentType: protocol.ContentTypeCheckpoint,
		cose.HeaderLabelKeyID:       []byte(edge.KeyID()),
	}}, mustPayload(t, good), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Payload kid naming another key than the header.
	var p map[string]any
	_ = cbor.Unmarshal(mustPayload(t, good), &p)

	cases := []struct {
		name string
		msg  []byte
		keys protocol.Keys
	}{
		{"wrong key", other.SignCheckpoint(protocol.Checkpoint{Edge: "e1", Epoch: protocol.Epoch{1}, Seq: 5}), keys},
		{"unknown kid", good, protocol.NewKeyMap(other.Public())},
		{"kid of another registered key", resign(t, func(m *cose.Sign1Message) {
			m.Headers.RawProtected = nil
			m.Headers.Protected[cose.HeaderLabelKeyID] = []byte(other.KeyID())
		}), protocol.NewKeyMap(edge.Public(), other.Public())},
		{"altered payload", resign(t, func(m *cose.Sign1Message) { m.Payload[len(m.Payload)-1] ^= 1 }), keys},
		{"altered protected header", resign(t, func(m *cose.Sign1Message) {
			m.Headers.RawProtected = nil
			m.Headers.Protected[cose.HeaderLabelContentType] = protocol.ContentTypeReceipt
		}), keys},
		{"altered signature", resign(t, func(m *cose.Sign1Message) { m.Signature[0] ^= 1 }), keys},
		{"other algorithm", otherAlg, keys},
		{"a receipt is not a checkpoint", edge.SignReceipt(protocol.Receipt{Edge: "e1", Epoch: protocol.Epoch{1}, HWM: 5}), keys},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := protocol.VerifyCheckpoint(c.msg, c.keys)
			if !errors.Is(err, protocol.ErrBadSignature) {
				t.Fatalf("want ErrBadSignature, got %v", err)
			}
		})
	}
}

func mustPayload(t *testing.T, msg []byte) []byte {
	t.Helper()
	var m cose.Sign1Message
	if err := m.UnmarshalCBOR(msg); err != nil {
		t.Fatal(err)
	}
	return m.Payload
}

func TestReplies(t *testing.T) {
	cloud := mustSigner(t, cloudKeyName)
	keys := protocol.NewKeyMap(cloud.Public())
	r, err := protocol.VerifyReply(cloud.SignReceipt(protocol.Receipt{Edge: "e1", Epoch: protocol.Epoch{1}, HWM: 9, CommittedAt: 5}), keys)
	if err != nil || r.Receipt == nil || r.Nack != nil || r.Receipt.HWM != 9 || r.Receipt.KID != cloud.KeyID() {
		t.Fatalf("receipt: %+v %v", r, err)
	}
	r, err = protocol.VerifyReply(cloud.SignNack(protocol.Nack{Edge: "e1", Epoch: protocol.Epoch{1}, HWM: 3, Code: protocol.NackGap, Reason: "gap"}), keys)
	if err != nil || r.Nack == nil || r.Receipt != nil || r.Nack.Code != protocol.NackGap {
		t.Fatalf("nack: %+v %v", r, err)
	}
	// A receipt signed by an edge key (not the pinned cloud key) is refused.
	edge := mustSigner(t, edgeKeyName)
	if _, err := protocol.VerifyReply(edge.SignReceipt(protocol.Receipt{Edge: "e1", Epoch: protocol.Epoch{1}, HWM: 9}), keys); !errors.Is(err, protocol.ErrBadSignature) {
		t.Fatalf("forged receipt: %v", err)
	}
	// A checkpoint is neither a receipt nor a nack.
	if _, err := protocol.VerifyReply(cloud.SignCheckpoint(protocol.Checkpoint{Edge: "e1", Epoch: protocol.Epoch{1}, Seq: 1}), keys); !errors.Is(err, protocol.ErrBadSignature) {
		t.Fatalf("checkpoint as reply: %v", err)
	}
}

func TestBrokerToken(t *testing.T) {
	s := mustSigner(t, edgeKeyName)
	keys := protocol.NewKeyMap(s.Public())
	aud := protocol.BrokerAudience(protocol.BrokerMQTT, "c1")
	tok := s.BrokerToken(aud, "edge-001", 42)
	got, err := protocol.VerifyBrokerToken(aud, "edge-001", tok, keys)
	if err != nil {
		t.Fatal(err)
	}
	if got.Counter != 42 || got.KID != s.KeyID() {
		t.Fatalf("parsed %+v, want counter 42 and kid %s", got, s.KeyID())
	}
	for name, c := range map[string]struct {
		aud, edge, tok string
	}{
		"other edge":         {aud, "edge-002", tok},
		"NATS token on MQTT": {aud, "edge-001", s.BrokerToken(protocol.BrokerAudience(protocol.BrokerNATS, "c1"), "edge-001", 42)},
		"other cloud":        {aud, "edge-001", s.BrokerToken(protocol.BrokerAudience(protocol.BrokerMQTT, "c2"), "edge-001", 42)},
		"other key":          {aud, "edge-001", mustSigner(t, "x").BrokerToken(aud, "edge-001", 42)},
		"garbage":            {aud, "edge-001", "hunter2"},
		"altered counter":    {aud, "edge-001", strings.Replace(tok, ".42.", ".43.", 1)},
		"leading zero":       {aud, "edge-001", strings.Replace(tok, ".42.", ".042.", 1)},
		"negative counter":   {aud, "edge-001", strings.Replace(tok, ".42.", ".-42.", 1)},
		"v1":                 {aud, "edge-001", "v1." + string(s.KeyID()) + ".1795340000000.AAAA"},
		"too long":           {aud, "edge-001", tok + strings.Repeat("A", 300)},
	} {
		if _, err := protocol.VerifyBrokerToken(c.aud, c.edge, c.tok, keys); !errors.Is(err, protocol.ErrBadSignature) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := protocol.ParseBrokerToken("v1.k.1.x"); !errors.Is(err, protocol.ErrBrokerTokenVersion) || !strings.Contains(err.Error(), "upgrade the edge") {
		t.Errorf("v1 token: %v, want a version refusal that says to upgrade", err)
	}
}
