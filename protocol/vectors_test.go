package protocol_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/outpost-edge/outpost/protocol"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors from the code")

// checkVector compares v, as indented JSON, with testdata/vectors/name.json.
// Run `go test ./protocol -run Vectors -update` to rewrite the files after a
// deliberate change to the wire format (and say so in docs/PROTOCOL.md).
func checkVector(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "vectors", name+".json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read vector %s: %v (run with -update to create it)", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("vector %s differs from the code's output:\n--- file\n%s\n--- code\n%s", path, want, got)
	}
}

type keyVector struct {
	SeedInput string `json:"seed_input"` // seed = SHA-256 of this text
	Seed      string `json:"seed"`
	Public    string `json:"public"`
	KID       string `json:"kid"`
}

func keyVec(name string) keyVector {
	k := testKey(name)
	return keyVector{SeedInput: name, Seed: hex.EncodeToString(k.Seed()), Public: hex.EncodeToString([]byte(k.Public().(ed25519.PublicKey))), KID: string(protocol.KeyIDOf([]byte(k.Public().(ed25519.PublicKey))))}
}

const (
	edgeKeyName  = "outpost test edge key 1"
	cloudKeyName = "outpost test cloud key 1"
)

type eventVector struct {
	Name     string `json:"name"`
	JSON     string `json:"json"`
	CBORHex  string `json:"cbor_hex"`
	BodyHex  string `json:"canonical_body_hex"`
	TSMillis int64  `json:"ts_ms"`
}

type recordVector struct {
	Seq      uint64          `json:"seq"`
	Decoded  json.RawMessage `json:"decoded"`
	Hex      string          `json:"hex"`
	LinkHash string          `json:"link_hash"`
}

func TestVectors(t *testing.T) {
	edge := mustSigner(t, edgeKeyName)
	cloud := mustSigner(t, cloudKeyName)
	checkVector(t, "keys", map[string]keyVector{"edge": keyVec(edgeKeyName), "cloud": keyVec(cloudKeyName)})

	// Events: each JSON input and its CBOR twin decode to the same event.
	var evs []eventVector
	for _, in := range []struct{ name, json string }{
		{"telemetry", `{"id":"r-1","type":"telemetry.reading","ts":1795340000000,"body":{"sensor":"fridge-1","metric":"temp_c","value":3.5,"unit":"C"}}`},
		{"rfc3339_ts_and_integral_float", `{"id":"c-9","type":"inventory.counted","ts":"2026-11-22T09:30:00.250+01:00","body":{"store":"s1","sku":"A-1","qty":2000.0}}`},
		{"sale", `{"id":"t1-000042","type":"sale.completed","ts":1795340000000,"body":{"store":"s1","terminal":"t1","business_day":"2026-11-22","txn":"t1-000042","currency":"EUR","lines":[{"sku":"4006381333931","qty":2000,"unit_price":250,"tax":95,"amount":500},{"sku":"bananas","qty":1450,"unit_price":199,"discount":50,"tax":44,"amount":239}],"subtotal":739,"tax":139,"total":878,"tenders":[{"type":"card","amount":500},{"type":"cash","amount":500}],"change":122}}`},
		{"no_body_unknown_type", `{"id":"x","type":"door.opened","ts":0}`},
	} {
		ev, err := protocol.DecodeEvent([]byte(in.json))
		if err != nil {
			t.Fatalf("%s: %v", in.name, err)
		}
		cb, err := ev.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		ev2, err := protocol.DecodeEvent(cb)
		if err != nil {
			t.Fatalf("%s: decode CBOR twin: %v", in.name, err)
		}
		if !eventsEqual(ev, ev2) {
			t.Fatalf("%s: JSON and CBOR decode differently: %+v vs %+v", in.name, ev, ev2)
		}
		evs = append(evs, eventVector{Name: in.name, JSON: in.json, CBORHex: hex.EncodeToString(cb), BodyHex: hex.EncodeToString(ev.Body), TSMillis: ev.TS.UnixMilli()})
	}
	checkVector(t, "events", evs)

	// A chain of records, a tombstone, and the checkpoint over the head.
	chained := stream(t, testStream, 3).SignedBy(edge)
	raws, head := chained.Raws, chained.Head()
	var recs []recordVector
	for _, raw := range raws {
		r, err := protocol.DecodeRecord(raw)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, recordVector{Seq: r.Seq, Decoded: diag(t, raw), Hex: hex.EncodeToString(raw), LinkHash: r.LinkHash(raw).String()})
	}
	tomb, err := protocol.Tombstone(raws[2])
	if err != nil {
		t.Fatal(err)
	}
	tb := tomb.Encode()
	checkVector(t, "records", map[string]any{
		"stream":    map[string]string{"edge": testStream.Edge, "epoch": testStream.Epoch.String()},
		"records":   recs,
		"tombstone": recordVector{Seq: tomb.Seq, Decoded: diag(t, tb), Hex: hex.EncodeToString(tb), LinkHash: tomb.LinkHash(tb).String()},
	})

	cp := chained.Checkpoint(head.Seq)
	rc := cloud.SignReceipt(protocol.Receipt{Edge: testStream.Edge, Epoch: testStream.Epoch, HWM: head.Seq, Head: head.Head, CommittedAt: testT0.UnixMilli() + 1500})
	seg := chained.Segment(1, 3)
	segb, err := protocol.EncodeSegment(seg, false)
	if err != nil {
		t.Fatal(err)
	}
	// A version 2 nack, bound to the segment of the vectors (as if it had
	// arrived with hwm 0 and been refused for its chain).
	ref := protocol.RefOf(segb, seg)
	nk := cloud.SignNack(protocol.Nack{Edge: testStream.Edge, Epoch: testStream.Epoch, Code: protocol.NackChain,
		Reason: "record 1 does not continue the stored head", At: testT0.UnixMilli() + 1600,
		First: ref.First, Last: ref.Last, SegKID: ref.KID, SegHash: ref.Hash})
	hello := protocol.EncodeHello(protocol.Hello{Edge: testStream.Edge, Epoch: testStream.Epoch, Seq: 3, SentAt: testT0.UnixMilli(), Agent: "outpost-edge/0.1.0", Checkpoint: cp, Cmd: 2})
	checkVector(t, "signed", map[string]any{
		"checkpoint": map[string]any{"hex": hex.EncodeToString(cp), "decoded": diag(t, cp)},
		"receipt":    map[string]any{"hex": hex.EncodeToString(rc), "decoded": diag(t, rc)},
		"nack":       map[string]any{"hex": hex.EncodeToString(nk), "decoded": diag(t, nk)},
	})
	checkVector(t, "segment", map[string]any{"hex": hex.EncodeToString(segb), "msg_id": seg.MsgID(0)})
	checkVector(t, "hello", map[string]any{"hex": hex.EncodeToString(hello), "decoded": diag(t, hello)})
	aud := protocol.BrokerAudience(protocol.BrokerNATS, string(cloud.KeyID()))
	const counter = 1795340000000
	btok := edge.BrokerToken(aud, testStream.Edge, counter)
	checkVector(t, "brokertoken", map[string]any{
		"audience": aud, "edge": testStream.Edge, "counter": uint64(counter),
		"message": "outpost-broker-auth/v2\\x00" + aud + "\\x00" + testStream.Edge + "\\x00" + strconv.FormatUint(counter, 10),
		"token":   btok,
	})
	if _, err := protocol.VerifyBrokerToken(aud, testStream.Edge, btok, protocol.NewKeyMap(edge.Public())); err != nil {
		t.Fatal(err)
	}

	// The vectors verify with the published keys.
	if _, err := protocol.VerifyCheckpoint(cp, protocol.NewKeyMap(edge.Public())); err != nil {
		t.Fatal(err)
	}
	for _, m := range [][]byte{rc, nk} {
		if _, err := protocol.VerifyReply(m, protocol.NewKeyMap(cloud.Public())); err != nil {
			t.Fatal(err)
		}
	}
	if *update {
		writeSeedCorpus(t, map[string][][]byte{
			"FuzzDecodeEvents":        {[]byte(evs[0].JSON), []byte(evs[2].JSON), mustHex(t, evs[2].CBORHex), []byte("[" + evs[0].JSON + "," + evs[1].JSON + "]")},
			"FuzzDecodeRecord":        {raws[0], tb},
			"FuzzDecodeSegment":       {segb, mustEncodeSegment(t, seg, true)},
			"FuzzVerifyReply":         {rc, nk},
			"FuzzVerifyCheckpoint":    {cp},
			"FuzzDecodeHello":         {hello},
			"FuzzParseBrokerToken":    {[]byte(btok), []byte("v1.0b64e89c4e3f7edc.1795340000000.AAAA")},
			"FuzzVerifyBrokerTokenV1": {[]byte("v1." + string(edge.KeyID()) + ".1795340000000." + strings.Repeat("A", 86))},
		})
	}
}

func mustHex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustEncodeSegment(t *testing.T, s *protocol.Segment, z bool) []byte {
	b, err := protocol.EncodeSegment(s, z)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeSeedCorpus writes testdata/fuzz/<target>/seed-N files in the format
// `go test -fuzz` reads.
func writeSeedCorpus(t *testing.T, seeds map[string][][]byte) {
	for target, list := range seeds {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, b := range list {
			body := "go test fuzz v1\n[]byte(" + quoteBytes(b) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, "seed-"+itoa(uint64(i))), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func quoteBytes(b []byte) string {
	var sb bytes.Buffer
	sb.WriteByte('"')
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			sb.WriteByte('\\')
			sb.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			sb.WriteByte(c)
		default:
			sb.WriteString(`\x`)
			sb.WriteString(hex.EncodeToString([]byte{c}))
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

// diag renders CBOR as JSON-ish diagnostic data for the vector files:
// byte strings as hex, so a reader can see every field.
func diag(t *testing.T, b []byte) json.RawMessage {
	t.Helper()
	dm, _ := cbor.DecOptions{TagsMd: cbor.TagsAllowed}.DecMode()
	var v any
	if err := dm.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(toJSONable(v))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func toJSONable(v any) any {
	switch x := v.(type) {
	case []byte:
		return "h'" + hex.EncodeToString(x) + "'"
	case cbor.Tag:
		return map[string]any{"tag": x.Number, "content": toJSONable(x.Content)}
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = toJSONable(x[i])
		}
		return out
	case map[any]any:
		out := map[string]any{}
		for k, e := range x {
			out[toKey(k)] = toJSONable(e)
		}
		return out
	}
	return v
}

func toKey(k any) string {
	switch x := k.(type) {
	case string:
		return x
	case []byte:
		return "h'" + hex.EncodeToString(x) + "'"
	}
	b, _ := json.Marshal(k)
	return string(b)
}

func eventsEqual(a, b protocol.Event) bool {
	return a.ID == b.ID && a.Type == b.Type && a.TS.Equal(b.TS) && bytes.Equal(a.Body, b.Body)
}
