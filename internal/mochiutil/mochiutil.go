// Package mochiutil is what the two embedded mochi-mqtt brokers (the edge's
// device intake and the cloud's broker for edges) need from mochi beyond its
// API: a shutdown that can neither deadlock nor hang.
//
// mochi v2.7.9's Server.Close has two problems. It calls
// Clients.GetByListener, which takes a read lock twice and deadlocks when a
// client connects or disconnects in between (mochi-mqtt/server#488, fixed by
// the open PRs #489 and #507). And it then waits for every client goroutine,
// including one still reading its CONNECT, which mochi reads with no
// deadline: a device that opened a connection and sent nothing, or half a
// CONNECT, holds Close forever. Shutdown avoids both; Conns lets it reach
// the connections mochi does not know as clients yet.
package mochiutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

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
//     was past its CONNECT when step 1 ran) until their goroutines have
//     all ended;
//  3. only then it calls srv.Close, which has nothing left to race with.
//
// When ctx ends first, Shutdown returns an error and does not call
// srv.Close (it would wait forever); the goroutines left end with the
// process.
//
// One window remains, as in mochi's own Close: mochi counts a client in
// Listeners.ClientsWg from inside the goroutine it starts per accepted
// connection, so a connection accepted in the instant the listener closes
// may be counted after the wait began (the race detector reports it as a
// WaitGroup reused). Such a connection is closed by conns and its
// goroutine ends at once.
func Shutdown(ctx context.Context, srv *mqtt.Server, listenerIDs []string, conns *Conns) error {
	for _, id := range listenerIDs {
		srv.Listeners.Close(id, func(string) {})
	}
	drained := make(chan struct{})
	go func() { // ends when the last client goroutine does
		srv.Listeners.ClientsWg.Wait()
		close(drained)
	}()
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
		select {
		case <-drained:
			return srv.Close()
		case <-ctx.Done():
			return fmt.Errorf("mqtt broker: clients still attached when the drain ended: %w", errors.Join(ErrNotDrained, ctx.Err()))
		case <-tick.C:
		}
	}
}

// ErrNotDrained: Shutdown's context ended before every client was gone.
var ErrNotDrained = errors.New("not drained")
