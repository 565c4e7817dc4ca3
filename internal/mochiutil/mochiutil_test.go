package mochiutil_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"

	"github.com/outpost-edge/outpost/internal/mochiutil"
	"github.com/outpost-edge/outpost/internal/poll"
)

func start(t *testing.T, track bool) (*mqtt.Server, *mochiutil.Conns, string) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns *mochiutil.Conns
	var l net.Listener = ln
	if track {
		conns = mochiutil.Track(ln)
		l = conns
	}
	if err := srv.AddListener(mochiutil.NewListener("t", l)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	return srv, conns, ln.Addr().String()
}

func dial(t *testing.T, addr string, connect bool) net.Conn {
	return dialID(t, addr, connect, 'c')
}

func dialID(t *testing.T, addr string, connect bool, id byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if connect {
		// MQTT 3.1.1 CONNECT, clean session, a one-byte client id
		c.Write([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 1, id})
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil || b[0] != 0x20 || b[3] != 0 {
			t.Fatalf("connack % x %v", b, err)
		}
	}
	return c
}

// Shutdown returns with clients connected and connections that never sent
// their CONNECT (mochi waits for those forever in Close), closing them all.
func TestShutdownClosesEverything(t *testing.T) {
	srv, conns, addr := start(t, true)
	var cs []net.Conn
	for i := range 8 {
		cs = append(cs, dialID(t, addr, i%2 == 0, byte('a'+i)))
	}
	poll.Until(t, 10*time.Second, "all connections accepted", func() bool { return conns.Open() == 8 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := mochiutil.Shutdown(ctx, srv, []string{"t"}, conns); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	if n := conns.Open(); n != 0 {
		t.Fatalf("%d connections open", n)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// Without the connections tracked, a connection that never sends its
// CONNECT cannot be reached: Shutdown gives up when its context ends,
// rather than hanging as mochi's Close does.
func TestShutdownBoundedByContext(t *testing.T) {
	srv, _, addr := start(t, false)
	dial(t, addr, true)
	poll.Until(t, 10*time.Second, "the client attached", func() bool { return atomic.LoadInt64(&srv.Info.ClientsConnected) == 1 })
	before := atomic.LoadInt64(&srv.Info.BytesReceived)
	half := dial(t, addr, false)
	half.Write([]byte{0x10, 13, 0, 4, 'M'}) // a CONNECT's fixed header and the start of its body
	poll.Until(t, 10*time.Second, "mochi reading the half CONNECT", func() bool { return atomic.LoadInt64(&srv.Info.BytesReceived) > before })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := mochiutil.Shutdown(ctx, srv, []string{"t"}, nil)
	if !errors.Is(err, mochiutil.ErrNotDrained) {
		t.Fatalf("got %v, want ErrNotDrained", err)
	}
}

// Shutdown while connections keep arriving (a health probe dials the
// intake every few ms, as the systemd watchdog does): the last connection
// the listener accepted must not be counted by mochi after the drain began
// waiting. With mochi's own listener, its per-connection goroutine does
// ClientsWg.Add(1) from inside itself, racing ClientsWg.Wait, which the
// race detector reports ("WaitGroup is reused before previous Wait has
// returned", or a race on the WaitGroup).
func TestShutdownWhileConnectionsArrive(t *testing.T) {
	for round := range 20 {
		srv, conns, addr := start(t, true)
		stop := make(chan struct{})
		dialed := make(chan struct{})
		var n atomic.Int64
		for range 4 {
			go func() {
				defer func() { dialed <- struct{}{} }()
				for {
					select {
					case <-stop:
						return
					default:
					}
					c, err := net.Dial("tcp", addr)
					if err != nil {
						continue // refused once the listener is closed
					}
					n.Add(1)
					c.Close()
				}
			}()
		}
		poll.Until(t, 10*time.Second, "connections arriving", func() bool { return n.Load() > int64(10*(round%3+1)) })
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := mochiutil.Shutdown(ctx, srv, []string{"t"}, conns)
		cancel()
		close(stop)
		for range 4 {
			<-dialed
		}
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// failingAccept is a net.Listener whose next fails Accepts return err (as
// the kernel's accept does with EMFILE when a flood of connections from
// the shop network has used up the process's file descriptors).
type failingAccept struct {
	net.Listener
	fails atomic.Int64
	err   error
}

func (f *failingAccept) Accept() (net.Conn, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, f.err
	}
	return f.Listener.Accept()
}

// An accept that fails for a reason that passes (out of file descriptors)
// must not stop the listener for good: once descriptors are free again,
// devices connect as before. Before the fix, Serve returned on the first
// accept error, and the intake accepted nothing until the process restarted.
func TestListenerSurvivesFailedAccepts(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingAccept{Listener: ln, err: &net.OpError{Op: "accept", Net: "tcp", Addr: ln.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}}
	fl.fails.Store(3)
	conns := mochiutil.Track(fl)
	if err := srv.AddListener(mochiutil.NewListener("t", conns)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := mochiutil.Shutdown(ctx, srv, []string{"t"}, conns); err != nil {
			t.Error(err)
		}
	})
	poll.Until(t, 10*time.Second, "the failed accepts", func() bool { return fl.fails.Load() < 0 })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 1, 'z'})
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 0x20 || b[3] != 0 {
		t.Fatalf("after failed accepts, a CONNECT got % x, %v; want a CONNACK", b, err)
	}
}
