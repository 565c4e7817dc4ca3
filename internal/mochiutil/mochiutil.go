// Package mochiutil is what the two embedded mochi-mqtt brokers (the edge's
// device intake and the cloud's broker for edges) need from mochi beyond its
// API: a shutdown that can neither deadlock, hang nor race.
//
// mochi v2.7.9's Server.Close has three problems. It calls
// Clients.GetByListener, which takes a read lock twice and deadlocks when a
// client connects or disconnects in between (mochi-mqtt/server#488, fixed by
// the open PRs #489 and #507). It then waits for every client goroutine,
// including one still reading its CONNECT, which mochi reads with no
// deadline: a device that opened a connection and sent nothing, or half a
// CONNECT, holds Close forever. And its listeners start a goroutine per
// accepted connection that counts itself in Listeners.ClientsWg from inside
// that goroutine, so a connection accepted just before the listener closes
// is counted after the wait for all clients has begun: a WaitGroup Add from
// zero racing its Wait, which the race detector reports (a health probe that
// dials the intake every few ms, as the systemd watchdog's does, meets it at
// every shutdown). Those listeners also stop for good at the first failed
// accept, so a connection flood that runs the process out of file
// descriptors leaves the broker deaf until a restart. Listener (instead of
// mochi's listeners.NewNet) counts its connections before it hands them
// on, and waits out a failed accept and tries again; Shutdown avoids the other two; Conns
// lets it reach the connections mochi does not know as clients yet.
package mochiutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Listener is a mochi listener (listeners.Listener) over a net.Listener, in
// place of mochi's listeners.NewNet. It counts each connection it hands to
// mochi in a WaitGroup of its own before the goroutine that serves it
// starts, under a lock that Close also takes, so that once it is closed
// nothing is counted any more and Shutdown can wait for every connection
// to be done without racing the count.
type Listener struct {
	id  string
	ln  net.Listener
	log *slog.Logger

	mu     sync.Mutex
	closed bool
	quit   chan struct{}  // closed by the first Close: ends a wait between failed accepts
	wg     sync.WaitGroup // the Serve loop and each connection's establish
}

// Accept retries: a failed accept that is not the listener's closing (the
// process out of file descriptors during a connection flood, a connection
// aborted before it was accepted) is waited out, from acceptRetryMin
// doubling to acceptRetryMax, as net/http's Server does, rather than
// ending the listener for good.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

var _ listeners.Listener = (*Listener)(nil)

// NewListener returns a mochi listener named id serving ln.
func NewListener(id string, ln net.Listener) *Listener {
	return &Listener{id: id, ln: ln, log: slog.New(slog.DiscardHandler), quit: make(chan struct{})}
}

// Init is called by mochi's Server.AddListener.
func (l *Listener) Init(log *slog.Logger) error {
	if log != nil {
		l.log = log
	}
	return nil
}

// ID is the listener's name.
func (l *Listener) ID() string { return l.id }

// Address is the address it listens on.
func (l *Listener) Address() string { return l.ln.Addr().String() }

// Protocol is the network it listens on ("tcp").
func (l *Listener) Protocol() string { return l.ln.Addr().Network() }

// count adds one to wg unless the listener is closed.
func (l *Listener) count() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	return true
}

// Serve accepts connections and has mochi establish each, until Close.
func (l *Listener) Serve(establish listeners.EstablishFn) {
	if !l.count() {
		return
	}
	defer l.wg.Done()
	var retry time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			retry = min(acceptRetryMax, max(acceptRetryMin, 2*retry))
			l.log.Warn("accept a connection failed; retrying", "listener", l.id, "error", err, "retry_in", retry)
			t := time.NewTimer(retry)
			select {
			case <-l.quit:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		retry = 0
		if !l.count() {
			c.Close()
			return
		}
		go func() {
			defer l.wg.Done()
			if err := establish(l.id, c); err != nil {
				// The same line as mochi's own listeners log (tests count
				// it to know that mochi is done with a connection).
				l.log.Warn("", "error", err)
			}
		}()
	}
}

// Close stops accepting. The first call also calls closeClients (mochi
// gives its own, which Shutdown replaces with one that does nothing).
func (l *Listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	first := !l.closed
	l.closed = true
	if first {
		close(l.quit)
	}
	l.mu.Unlock()
	if first && closeClients != nil {
		closeClients(l.id)
	}
	l.ln.Close()
}

// done is closed when, after Close, the Serve loop and every connection's
// establish have returned.
func (l *Listener) done() <-chan struct{} {
	ch := make(chan struct{})
	go func() { l.wg.Wait(); close(ch) }()
	return ch
}

// Conns is a net.Listener that keeps the connections it accepted, so that
// Shutdown can close those still in their CONNECT. Wrap the TCP listener
// (under any TLS listener) with Track and give it to mochi.
type Conns struct {
	net.Listener

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
}

// Track wraps ln.
func Track(ln net.Listener) *Conns {
	return &Conns{Listener: ln, conns: map[*conn]struct{}{}}
}

// Accept accepts a connection and keeps it until it is closed. After
// CloseAll, a connection the kernel had already accepted is closed at once.
func (c *Conns) Accept() (net.Conn, error) {
	nc, err := c.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &conn{Conn: nc, set: c}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		nc.Close()
		return nil, net.ErrClosed
	}
	c.conns[tc] = struct{}{}
	c.mu.Unlock()
	return tc, nil
}

// Open returns how many accepted connections are not closed yet.
func (c *Conns) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// CloseAll closes the listener and every connection it accepted, and from
// now on any it still accepts.
func (c *Conns) CloseAll() {
	c.mu.Lock()
	c.closed = true
	open := make([]*conn, 0, len(c.conns))
	for tc := range c.conns {
		open = append(open, tc)
	}
	c.mu.Unlock()
	c.Listener.Close()
	for _, tc := range open {
		tc.Close()
	}
}

type conn struct {
	net.Conn
	set  *Conns
	once sync.Once
}

// CloseWrite half-closes a TCP connection (and so a TLS one above it).
func (tc *conn) CloseWrite() error {
	if cw, ok := tc.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (tc *conn) Close() error {
	err := tc.Conn.Close()
	tc.once.Do(func() {
		tc.set.mu.Lock()
		delete(tc.set.conns, tc)
		tc.set.mu.Unlock()
	})
	return err
}

// Shutdown stops srv within ctx:
//
//  1. it closes the listeners named, so nothing new is accepted, with a
//     closer that does nothing (so that srv.Close later finds them closed
//     and never calls the deadlocking GetByListener), and every connection
//     conns accepted (conns may be nil), a client in mid-CONNECT included;
//  2. it disconnects every client (MQTT 5: DISCONNECT 0x8B, server
//     shutting down) and repeats while clients keep appearing (one that
//     was past its CONNECT when step 1 ran) until every connection's
//     goroutine has ended;
//  3. only then it calls srv.Close, which has nothing left to race with.
//
// When ctx ends first, Shutdown returns an error and does not call
// srv.Close (it would wait forever); the goroutines left end with the
// process.
//
// The wait in step 2 is each Listener's own count when every listener
// named is a Listener. For another listener (mochi's listeners.NewNet) it
// falls back to mochi's Listeners.ClientsWg, which a connection accepted in
// the instant the listener closes may join after the wait began (see the
// package comment): use Listener.
func Shutdown(ctx context.Context, srv *mqtt.Server, listenerIDs []string, conns *Conns) error {
	var waits []<-chan struct{}
	foreign := false
	for _, id := range listenerIDs {
		srv.Listeners.Close(id, func(string) {})
		if l, ok := srv.Listeners.Get(id); ok {
			if ml, ok := l.(*Listener); ok {
				waits = append(waits, ml.done())
				continue
			}
		}
		foreign = true
	}
	if foreign {
		drained := make(chan struct{})
		go func() { // ends when the last client goroutine does
			srv.Listeners.ClientsWg.Wait()
			close(drained)
		}()
		waits = append(waits, drained)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if conns != nil {
			conns.CloseAll()
		}
		for _, cl := range srv.Clients.GetAll() {
			if cl.Net.Inline || cl.Closed() {
				continue
			}
			if cl.Properties.ProtocolVersion >= 5 {
				srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
			} else {
				cl.Stop(packets.ErrServerShuttingDown)
			}
		}
		for len(waits) > 0 {
			select {
			case <-waits[0]:
				waits = waits[1:]
				continue
			default:
			}
			break
		}
		if len(waits) == 0 {
			return srv.Close()
		}
		select {
		case <-waits[0]:
		case <-ctx.Done():
			return fmt.Errorf("mqtt broker: clients still attached when the drain ended: %w", errors.Join(ErrNotDrained, ctx.Err()))
		case <-tick.C:
		}
	}
}

// ErrNotDrained: Shutdown's context ended before every client was gone.
var ErrNotDrained = errors.New("not drained")
