package protocol_test

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// Fixed test keys: the seed is SHA-256 of a name, so other implementations
// can derive them too (testdata/vectors/keys.json).
func testKey(name string) ed25519.PrivateKey { return protocoltest.Key(name) }

func mustSigner(tb testing.TB, name string) *protocol.Signer {
	tb.Helper()
	return protocoltest.Signer(tb, name)
}

var (
	testStream = protocol.Stream{Edge: "edge-001", Epoch: protocol.Epoch{0x0e, 0x90, 0xc1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}}
	testT0     = time.Date(2026, 11, 22, 9, 30, 0, 0, time.UTC)
)

// stream builds n records of st with a mix of ledger and telemetry
// events, from till-1, edge time testT0 plus seq logical ticks.
func stream(tb testing.TB, st protocol.Stream, n int) *protocoltest.Stream {
	tb.Helper()
	s := &protocoltest.Stream{Stream: st}
	for range n {
		seq := s.Last() + 1
		var ev protocol.Event
		if seq%3 == 0 {
			ev = telemetryEvent(tb, seq)
		} else {
			ev = inventoryEvent(tb, seq)
		}
		r := protocol.NewRecord(st, "till-1", ev)
		r.EdgeTime = protocol.HLCFromTime(testT0) + protocol.HLCTime(seq)
		s.Add(r)
	}
	return s
}

// chain is stream's records and the state after the last.
func chain(tb testing.TB, st protocol.Stream, n int) ([][]byte, protocol.ChainState) {
	tb.Helper()
	s := stream(tb, st, n)
	return s.Raws, s.Head()
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
