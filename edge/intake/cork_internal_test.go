package intake

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
)

// writesConn is a net.Conn that records each Write it gets.
type writesConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	err    error
}

func (w *writesConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	w.writes = append(w.writes, bytes.Clone(p))
	return len(p), nil
}

func TestCorkSendsARoundInOneWrite(t *testing.T) {
	under := &writesConn{}
	c := &sizeConn{Conn: under}
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	c.cork()
	for _, s := range []string{"b", "c", "d"} {
		if n, err := c.Write([]byte(s)); n != 1 || err != nil {
			t.Fatalf("corked write: %d, %v", n, err)
		}
	}
	if len(under.writes) != 1 {
		t.Fatalf("%d writes reached the connection while corked, want only the one before", len(under.writes))
	}
	if err := c.uncork(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("e")); err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "bcd", "e"}
	if len(under.writes) != len(want) {
		t.Fatalf("writes %q, want %q", under.writes, want)
	}
	for i, w := range want {
		if string(under.writes[i]) != w {
			t.Fatalf("write %d is %q, want %q", i, under.writes[i], w)
		}
	}
	if err := c.uncork(); err != nil || len(under.writes) != 3 {
		t.Fatalf("an empty uncork: %v, %d writes", err, len(under.writes))
	}
}

func TestUncorkReportsTheWriteError(t *testing.T) {
	boom := errors.New("connection reset")
	under := &writesConn{err: boom}
	c := &sizeConn{Conn: under}
	c.cork()
	c.Write([]byte("puback"))
	if err := c.uncork(); !errors.Is(err, boom) {
		t.Fatalf("uncork: %v, want %v", err, boom)
	}
}
