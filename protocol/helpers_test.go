package protocol_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Fixed test keys: the seed is SHA-256 of a name, so other implementations
// can derive them too (testdata/vectors/keys.json).
func testKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func mustSigner(tb testing.TB, name string) *protocol.Signer {
	tb.Helper()
	s, err := protocol.NewSigner(testKey(name))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

var (
	testStream = protocol.Stream{Edge: "edge-001", Epoch: protocol.Epoch{0x0e, 0x90, 0xc1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}}
	testT0     = time.Date(2026, 11, 22, 9, 30, 0, 0, time.UTC)
)

// chain builds n records of testStream with a mix of ledger and telemetry
// events and returns their bytes and the state after the last.
func chain(tb testing.TB, st protocol.Stream, from protocol.ChainState, n int) ([][]byte, protocol.ChainState) {
	tb.Helper()
	raws := make([][]byte, 0, n)
	cur := from
	cur.Stream = st
	for i := 0; i < n; i++ {
		seq := cur.Seq + 1
		var ev protocol.Event
		if seq%3 == 0 {
			ev = telemetryEvent(tb, seq)
		} else {
			ev = inventoryEvent(tb, seq)
		}
		r := protocol.NewRecord(st, "till-1", ev)
		r.Seq = seq
		r.Prev = cur.Head
		r.EdgeTime = protocol.HLCFromTime(testT0) + protocol.HLCTime(seq)
		b := r.Encode()
		raws = append(raws, b)
		cur.Seq, cur.Head = seq, protocol.HashBytes(b)
	}
	return raws, cur
}

func telemetryEvent(tb testing.TB, n uint64) protocol.Event {
	tb.Helper()
	body, err := protocol.NewBody(map[string]any{"sensor": "fridge-1", "metric": "temp_c", "value": 3.5 + float64(n%4)/2, "unit": "C"})
	if err != nil {
		tb.Fatal(err)
	}
	return protocol.Event{ID: "t-" + itoa(n), Type: "telemetry.reading", TS: testT0.Add(time.Duration(n) * time.Second), Body: body}
}

func inventoryEvent(tb testing.TB, n uint64) protocol.Event {
	tb.Helper()
	body, err := protocol.NewBody(map[string]any{"store": "s1", "sku": "sku-" + itoa(n%7), "qty_delta": int64(n) * 1000, "reason": "received"})
	if err != nil {
		tb.Fatal(err)
	}
	return protocol.Event{ID: "i-" + itoa(n), Type: "inventory.adjusted", TS: testT0.Add(time.Duration(n) * time.Second), Body: body}
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
