package ledger

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// TestCopyReaderChunks: the binary COPY reads the same whatever the size
// of the reads, and is a header, one tuple of len(ledgerColumns) fields
// per record, and the trailer.
func TestCopyReaderChunks(t *testing.T) {
	s := protocoltest.NewStream(t, "edge-1", protocoltest.NewSigner(t)).AddN(t, 700)
	var recs []Committed
	for i, raw := range s.Raws {
		r, err := protocol.DecodeRecord(raw)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, Committed{Stream: s.Stream, Record: r, Raw: raw, Hash: s.Links[i],
			CommittedAt: time.Now(), Pos: int64(i + 1)})
	}
	read := func(size int) []byte {
		var out []byte
		c := &copyReader{recs: recs}
		p := make([]byte, size)
		for {
			n, err := c.Read(p)
			out = append(out, p[:n]...)
			if err == io.EOF {
				return out
			}
			if err != nil || n == 0 {
				t.Fatalf("read of %d: %d, %v", size, n, err)
			}
		}
	}
	want := read(1 << 20)
	if len(want) < 3*65536 {
		t.Fatalf("only %d bytes: make the test larger than a few chunks", len(want))
	}
	for _, size := range []int{1, 7, 4096, 65531} {
		if got := read(size); !bytes.Equal(got, want) {
			t.Fatalf("reads of %d bytes give %d bytes, reads of 1 MiB %d", size, len(got), len(want))
		}
	}
	b, ok := bytes.CutPrefix(want, []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	if !ok {
		t.Fatalf("header %q", want[:19])
	}
	for i := range recs {
		if n := binary.BigEndian.Uint16(b); int(n) != len(ledgerColumns) {
			t.Fatalf("tuple %d has %d fields", i, n)
		}
		b = b[2:]
		for range ledgerColumns {
			n := binary.BigEndian.Uint32(b)
			b = b[4+n:]
		}
	}
	if !bytes.Equal(b, []byte{0xff, 0xff}) {
		t.Fatalf("after the tuples: %x", b)
	}
}
