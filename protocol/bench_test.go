package protocol_test

import (
	"testing"

	"github.com/outpost-edge/outpost/protocol"
)

func BenchmarkDecodeRecord(b *testing.B) {
	raws, _ := chain(b, testStream, 3)
	b.ReportAllocs()
	b.SetBytes(int64(len(raws[1])))
	for b.Loop() {
		if _, err := protocol.DecodeRecord(raws[1]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyChain(b *testing.B) {
	raws, head := chain(b, testStream, 100)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := protocol.VerifyChain(protocol.ChainState{Stream: testStream}, raws, &head); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(raws)), "ns/record")
}
