package mqtt

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

// chunkConn is a net.Conn that reads data in chunks of at most n bytes.
type chunkConn struct {
	net.Conn
	r      *bytes.Reader
	n      int
	closed bool
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

func (c *chunkConn) Close() error { c.closed = true; return nil }

// refuses is what connectLimitConn must decide about a connection whose
// first bytes are data: refuse when the first packet's remaining length,
// as far as it is there, is over MaxConnectBytes or is not a valid
// variable byte integer.
func refuses(data []byte) bool {
	if len(data) < 2 {
		return false
	}
	rem, mult := 0, 1
	for i, b := range data[1:min(len(data), 5)] {
		rem += int(b&0x7f) * mult
		mult *= 128
		if rem > MaxConnectBytes || (b&0x80 != 0 && i == 3) {
			return true
		}
		if b&0x80 == 0 {
			return false
		}
	}
	return false
}

// FuzzConnectLimit feeds outside bytes, in reads of any size, through the
// check on the first packet's fixed header: it passes every byte through
// unchanged until it refuses, and refuses exactly the headers over the cap.
func FuzzConnectLimit(f *testing.F) {
	f.Add([]byte{0x10, 0x2a, 0x00, 0x04, 'M', 'Q', 'T', 'T'}, uint8(3))                // a small CONNECT
	f.Add(append([]byte{0x10}, varint(256<<20-1)...), uint8(1))                        // 256 MiB declared
	f.Add([]byte{0x10, 0x80, 0x80, 0x80, 0x80, 0x01}, uint8(2))                        // a 5-byte length
	f.Add(append(append([]byte{0x10}, varint(MaxConnectBytes)...), 1, 2, 3), uint8(7)) // at the cap
	f.Add(append([]byte{0x30}, varint(MaxConnectBytes+1)...), uint8(255))              // over it, not a CONNECT
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		under := &chunkConn{r: bytes.NewReader(data), n: int(chunk) + 1}
		c := &connectLimitConn{Conn: under}
		var got []byte
		buf := make([]byte, 64)
		var err error
		for {
			var n int
			n, err = c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if !bytes.HasPrefix(data, got) {
			t.Fatalf("passed %x through for %x", got, data)
		}
		want := refuses(data)
		switch {
		case want && !errors.Is(err, errConnectTooLarge):
			t.Fatalf("%x: not refused (err %v)", data, err)
		case !want && !errors.Is(err, io.EOF):
			t.Fatalf("%x: refused (err %v)", data, err)
		case want && !under.closed:
			t.Fatalf("%x: refused without closing the connection", data)
		case !want && !bytes.Equal(got, data):
			t.Fatalf("passed %x through for %x", got, data)
		}
	})
}
