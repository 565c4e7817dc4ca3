package simulator

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/simulator/fleet"
)

// printer writes messages (to out) and the live progress line (to
// progress), keeping them from garbling each other on a terminal.
type printer struct {
	mu       sync.Mutex
	out      io.Writer
	progress io.Writer
	tty      bool
	shown    bool // a progress line is on the terminal
	start    time.Time
}

func newPrinter(out, progress io.Writer, tty bool) *printer {
	return &printer{out: out, progress: progress, tty: tty && progress != nil, start: time.Now()}
}

func (p *printer) clear() {
	if p.shown {
		fmt.Fprint(p.progress, "\r\x1b[K")
		p.shown = false
	}
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.out, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

func (p *printer) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.progress, "\r\x1b[K"+s)
		p.shown = true
		return
	}
	fmt.Fprintln(p.progress, s)
}

func (p *printer) endProgress() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
}

// progress draws a line of live progress every ProgressEvery: events sent
// and acknowledged by the edges, records committed by the cloud, each
// edge's backlog, and the faults in force.
func (r *run) progress(ctx context.Context) {
	t := time.NewTicker(r.cfg.ProgressEvery)
	defer t.Stop()
	lastAt := time.Now()
	var lastAcked int
	var lastCommitted uint64
	committedKnown := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		secs := now.Sub(lastAt).Seconds()
		lastAt = now
		c := r.oracle.Counts()

		states := make([]*fleet.EdgeStatus, len(r.edges))
		var wg sync.WaitGroup
		for i, e := range r.edges {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
				defer cancel()
				if st, err := e.State(sctx); err == nil {
					states[i] = &st
				}
			}()
		}
		var committed uint64
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		streams, cerr := r.cloud.Streams(cctx)
		cancel()
		wg.Wait()
		for _, s := range streams {
			committed += s.HWM
		}

		var b strings.Builder
		fmt.Fprintf(&b, "%5.0fs  sent %d  acked %d (%.0f/s)", time.Since(r.start).Seconds(), c.Events, c.Acked, float64(c.Acked-lastAcked)/secs)
		lastAcked = c.Acked
		if cerr != nil {
			fmt.Fprintf(&b, "  committed ? (cloud down)")
		} else {
			rate := 0.0
			if committedKnown {
				rate = float64(int64(committed)-int64(lastCommitted)) / secs
			}
			fmt.Fprintf(&b, "  committed %d (%.0f/s)", committed, rate)
			lastCommitted, committedKnown = committed, true
		}
		b.WriteString("  backlog")
		var shed uint64
		for i, st := range states {
			if st == nil {
				fmt.Fprintf(&b, " %s down", r.edges[i].ID())
				continue
			}
			fmt.Fprintf(&b, " %s %d", r.edges[i].ID(), st.Backlog)
			shed += st.Shed
		}
		if shed > 0 {
			fmt.Fprintf(&b, "  shed %d", shed)
		}
		if a := r.activeText(); a != "" {
			fmt.Fprintf(&b, "  | %s", a)
		}
		r.out.line(b.String())
	}
}
