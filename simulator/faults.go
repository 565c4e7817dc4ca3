package simulator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/simulator/fault"
	"github.com/outpost-edge/outpost/simulator/fleet"
)

// FaultResult is what became of one scheduled fault.
type FaultResult struct {
	Fault   fault.Fault `json:"fault"`
	Spec    string      `json:"spec"`
	What    string      `json:"what"`
	Started time.Time   `json:"started"`
	// Ended is when the fault was healed: the link restored, the program
	// restarted and answering.
	Ended time.Time  `json:"ended"`
	Error string     `json:"error,omitempty"`
	Edges []EdgeHead `json:"edges,omitempty"`
	// Drain is how long after Ended the cloud committed everything the
	// affected edges held when the fault ended (the slowest edge).
	Drain Millis `json:"drain_ms"`
}

// EdgeHead is an edge's stream and head seq when a fault ended, and how
// long the cloud took from then to commit it.
type EdgeHead struct {
	Edge  string `json:"edge"`
	Epoch string `json:"epoch"`
	Head  uint64 `json:"head"`
	Drain Millis `json:"drain_ms"`
}

func scheduleText(fs []fault.Fault) string {
	if len(fs) == 0 {
		return "none"
	}
	return fault.Format(fs)
}

// schedule injects every fault of the schedule at its time, each for its
// length, and returns once all are over. Faults not yet started when the
// traffic ends are skipped; those in force then are healed at once.
func (r *run) schedule(ctx context.Context) {
	locks := map[string]*sync.Mutex{"cloud": {}}
	for _, e := range r.edges {
		locks[e.ID()] = &sync.Mutex{}
	}
	var wg sync.WaitGroup
	for i, f := range r.cfg.Faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.inject(ctx, i, f, locks)
		}()
	}
	wg.Wait()
}

// targets returns the edges a fault acts on (every edge for a cloud crash,
// whose outage they all see).
func (r *run) targets(f fault.Fault) []*fleet.Edge {
	if f.Kind == fault.CloudKill || f.Target == "*" || f.Target == "" {
		return r.edges
	}
	e, _, err := r.edge(f.Target)
	if err != nil {
		return nil
	}
	return []*fleet.Edge{e}
}

func (r *run) inject(ctx context.Context, i int, f fault.Fault, locks map[string]*sync.Mutex) {
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-r.trafficEnd:
			return false
		case <-t.C:
			return true
		}
	}
	if !wait(time.Until(r.start.Add(f.At))) {
		return
	}
	edges := r.targets(f)
	var held []string
	if f.Kind == fault.CloudKill {
		held = []string{"cloud"}
	} else {
		for _, e := range edges {
			held = append(held, e.ID())
		}
	}
	slices.Sort(held)
	for _, k := range held {
		locks[k].Lock()
	}
	defer func() {
		for _, k := range held {
			locks[k].Unlock()
		}
	}()
	select {
	case <-r.trafficEnd:
		return
	default:
	}

	res := FaultResult{Fault: f, Spec: f.String(), What: f.Describe()}
	var errs []string
	switch {
	case f.Kind.IsLink():
		for _, e := range edges {
			_, l, _ := r.edge(e.ID())
			if err := l.Apply(f); err != nil {
				errs = append(errs, err.Error())
			}
		}
	case f.Kind == fault.EdgeKill:
		for _, e := range edges {
			e.Kill()
		}
	case f.Kind == fault.CloudKill:
		r.cloud.Kill()
	}
	res.Started = time.Now()
	r.setActive(i, f, res.Started)
	r.printf("fault: %s (%s)", res.What, lengthText(f))

	wait(f.For)

	switch {
	case f.Kind.IsLink():
		for _, e := range edges {
			_, l, _ := r.edge(e.ID())
			if err := l.Heal(); err != nil {
				errs = append(errs, err.Error())
			}
		}
	case f.Kind == fault.EdgeKill:
		for _, e := range edges {
			if err := e.Start(ctx); err != nil {
				errs = append(errs, fmt.Sprintf("restart edge %s: %v", e.ID(), err))
			}
		}
	case f.Kind == fault.CloudKill:
		if err := r.cloud.Start(ctx); err != nil {
			errs = append(errs, fmt.Sprintf("restart the cloud: %v", err))
		}
	}
	res.Ended = time.Now()
	r.setActive(i, f, time.Time{})
	for _, e := range edges {
		if st, err := e.State(ctx); err == nil {
			res.Edges = append(res.Edges, EdgeHead{Edge: e.ID(), Epoch: st.Epoch, Head: st.Head()})
		}
	}
	res.Error = strings.Join(errs, "; ")
	if res.Error != "" {
		r.printf("fault: %s: %s", res.What, res.Error)
	} else {
		r.printf("fault: healed: %s, after %s", res.What, res.Ended.Sub(res.Started).Round(10*time.Millisecond))
	}
	r.mu.Lock()
	r.faults = append(r.faults, res)
	r.mu.Unlock()
}

func lengthText(f fault.Fault) string {
	switch f.Kind {
	case fault.EdgeKill, fault.CloudKill:
		if f.For == 0 {
			return "restart at once"
		}
		return "restart after " + f.For.String()
	}
	return "for " + f.For.String()
}

// activeFault is a fault in force since started.
type activeFault struct {
	f       fault.Fault
	started time.Time
}

// setActive notes fault i in force since started, or over when started is
// zero.
func (r *run) setActive(i int, f fault.Fault, started time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !started.IsZero() {
		r.active[i] = activeFault{f, started}
	} else {
		delete(r.active, i)
	}
}

// activeText describes the faults in force, for the progress line.
func (r *run) activeText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.active) == 0 {
		return ""
	}
	var idx []int
	for i := range r.active {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	var parts []string
	for _, i := range idx {
		a := r.active[i]
		left := time.Until(a.started.Add(a.f.For)).Round(time.Second)
		parts = append(parts, fmt.Sprintf("%s (%s left)", a.f.Describe(), max(left, 0)))
	}
	return strings.Join(parts, "; ")
}
