package protocol_test

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

func TestSmoke(t *testing.T) {
	key := ed25519.NewKeyFromSeed(make([]byte, 32))
	s, err := protocol.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	st := protocol.Stream{Edge: "e1", Epoch: protocol.Epoch{1}}
	var raws [][]byte
	prev := protocol.Hash{}
	for i := 1; i <= 3; i++ {
		ev, err := protocol.DecodeEvent([]byte(`{"id":"a` + string(rune('0'+i)) + `","type":"telemetry.reading","ts":1700000000000,"body":{"sensor":"s","metric":"t","value":1.5}}`))
		if err != nil {
			t.Fatal(err)
		}
		r := protocol.NewRecord(st, "d1", ev)
		r.Seq = uint64(i)
		r.Prev = prev
		r.EdgeTime = protocol.HLCFromTime(time.Now())
		b := r.Encode()
		prev = protocol.HashBytes(b)
		raws = append(raws, b)
	}
	cp := s.SignCheckpoint(protocol.Checkpoint{Edge: "e1", Epoch: st.Epoch, Seq: 3, Head: prev})
	seg := &protocol.Segment{V: 1, Edge: "e1", Epoch: st.Epoch, First: 1, Last: 3, Records: raws, Checkpoint: cp}
	for _, z := range []bool{false, true} {
		b, err := protocol.EncodeSegment(seg, z)
		if err != nil {
			t.Fatal(err)
		}
		got, err := protocol.DecodeSegment(b)
		if err != nil {
			t.Fatal(err)
		}
		c, err := protocol.VerifyCheckpoint(got.Checkpoint, protocol.NewKeyMap(s.Public()))
		if err != nil {
			t.Fatal(err)
		}
		want := protocol.ChainState{Stream: c.Stream(), Seq: c.Seq, Head: c.Head}
		if _, _, err := protocol.VerifyChain(protocol.ChainState{Stream: st}, got.Records, &want); err != nil {
			t.Fatal(err)
		}
		t.Logf("segment %d bytes (z=%v)", len(b), z)
	}
}
