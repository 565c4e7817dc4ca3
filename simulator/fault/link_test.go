package fault_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/simulator/fault"
)

// echoServer echoes lines back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return l.Addr().String()
}

// roundTrip sends a line through c and reads it back.
func roundTrip(c net.Conn, r *bufio.Reader, line string) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return errors.New("echo differs: " + got)
	}
	return nil
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}

func TestLink(t *testing.T) {
	l, err := fault.NewLink("test", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr()
	top := t // connections live as long as the whole test
	c, r := dial(top, addr)
	if err := roundTrip(c, r, "hello"); err != nil {
		t.Fatal(err)
	}

	t.Run("cut", func(t *testing.T) {
		if err := l.Apply(fault.Fault{Kind: fault.Cut}); err != nil {
			t.Fatal(err)
		}
		if l.Mode() != fault.Cut {
			t.Errorf("mode %q", l.Mode())
		}
		if err := roundTrip(c, r, "through a cut"); err == nil {
			t.Error("a connection survived the cut")
		}
		if n, err := net.Dial("tcp", addr); err == nil {
			n.Close()
			t.Error("a new connection was accepted during the cut")
		}
		if err := l.Heal(); err != nil {
			t.Fatal(err)
		}
		if l.Addr() != addr {
			t.Errorf("the link moved from %s to %s", addr, l.Addr())
		}
		c, r = dial(top, addr)
		if err := roundTrip(c, r, "after the cut"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("slow and throttle pass data", func(t *testing.T) {
		for _, f := range []fault.Fault{
			{Kind: fault.Slow, Latency: 20 * time.Millisecond, Jitter: 10 * time.Millisecond},
			{Kind: fault.Throttle, RateKBps: 64},
		} {
			if err := l.Apply(f); err != nil {
				t.Fatal(err)
			}
			if err := roundTrip(c, r, "under "+string(f.Kind)); err != nil {
				t.Fatalf("%s: %v", f.Kind, err)
			}
		}
		if err := l.Heal(); err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(c, r, "healed"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("blackhole", func(t *testing.T) {
		if err := l.Apply(fault.Fault{Kind: fault.Blackhole}); err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := io.WriteString(c, "into the void\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read through a blackhole: %v, want a timeout", err)
		}
		if err := l.Heal(); err != nil {
			t.Fatal(err)
		}
		// The torn connection is closed; new ones work.
		waitFor(t, "the blackholed connection to close", func() bool {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, err := r.ReadString('\n')
			return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
		})
		c, r = dial(top, addr)
		if err := roundTrip(c, r, "after the blackhole"); err != nil {
			t.Fatal(err)
		}
	})
}
