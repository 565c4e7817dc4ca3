package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
)

// healthTimeout bounds one /healthz: a commit loop that does not answer
// within it is unhealthy.
const healthTimeout = 5 * time.Second

// localHealth proves, from local facts only, that this edge works: the
// outbox takes a durable write through its commit loop, and the intake's
// listeners accept connections. It never asks the cloud. /healthz serves
// it, and the OTA probation (edge supervise, and the systemd path) decides
// on it.
type localHealth struct {
	ob    *outbox.Outbox
	addrs []string // the intake's listeners
	fault func() error
	// answered runs after a healthy answer was sent (a fault switch).
	answered func()
}

// check runs the probes. The outbox probe is a Trim at watermark 0: it is
// always at or below the stored watermark, so it moves nothing the cloud
// acknowledged and adds no record, but it runs one write transaction on
// the outbox's single-writer commit loop (between group commits) and
// returns once that is fsynced. An outbox that cannot commit fails it.
func (h *localHealth) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	if h.fault != nil {
		if err := h.fault(); err != nil {
			return err
		}
	}
	if err := h.probeOutbox(ctx); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	var d net.Dialer
	for _, a := range h.addrs {
		c, err := d.DialContext(ctx, "tcp", a)
		if err != nil {
			return fmt.Errorf("intake listener %s: %w", a, err)
		}
		c.Close()
	}
	return nil
}

func (h *localHealth) probeOutbox(ctx context.Context) error {
	for try := 0; ; try++ {
		s := h.ob.Stream()
		done := make(chan error, 1)
		go func() { done <- h.ob.Trim(protocol.Receipt{Edge: s.Edge, Epoch: s.Epoch}) }()
		select {
		case err := <-done:
			// A new epoch between Stream and Trim: ask again, once.
			if errors.Is(err, outbox.ErrReceipt) && try == 0 && h.ob.Stream() != s {
				continue
			}
			if err != nil {
				return fmt.Errorf("a probe write did not commit: %w", err)
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("a probe write did not commit within %s: %w", healthTimeout, ctx.Err())
		}
	}
}

func (h *localHealth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.check(r.Context()); err != nil {
		http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
	if h.answered != nil {
		// Send the answer before the fault acts on it.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		h.answered()
	}
}
