// Package fault describes the faults the simulator injects and their
// schedule, and holds the uplink proxy (Link) through which it cuts,
// blackholes, slows and throttles an edge's connection to the cloud.
// Crashes (SIGKILL of an edge or of the cloud, then a restart) are carried
// out by the simulator, which owns the processes.
//
// A schedule is a comma-separated list of faults, each
//
//	kind[:target]@at[+for]
//
// where kind is one of the Kinds, target an edge id ("*" or empty: every
// edge; the cloud kinds take none), at the time from the start of the
// traffic and for how long the fault lasts (for a crash, how long the
// program stays down before its restart). For example:
//
//	cut:shop-2@10s+8s,edge-kill:shop-1@25s,cloud-kill@40s+2s,slow:*@5s+10s
package fault

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"
)

// Kind is a kind of fault.
type Kind string

const (
	Cut       Kind = "cut"        // the uplink refuses and resets connections
	Blackhole Kind = "blackhole"  // the uplink silently drops everything
	Slow      Kind = "slow"       // the uplink adds latency
	Throttle  Kind = "throttle"   // the uplink's bandwidth is capped
	EdgeKill  Kind = "edge-kill"  // SIGKILL the edge, restart it after For
	CloudKill Kind = "cloud-kill" // SIGKILL the cloud, restart it after For
)

// targetless is the target a cloud fault may name.
const targetless = "cloud"

// Kinds are the kinds a schedule may name.
var Kinds = []Kind{Cut, Blackhole, Slow, Throttle, EdgeKill, CloudKill}

// IsLink reports whether k is carried out by the uplink proxy.
func (k Kind) IsLink() bool { return k == Cut || k == Blackhole || k == Slow || k == Throttle }

// IsOutage reports whether the fault stops the flow from an edge to the
// cloud, so that a backlog builds up and drains when it ends.
func (k Kind) IsOutage() bool { return k == Cut || k == Blackhole || k == EdgeKill || k == CloudKill }

// Fault is one scheduled fault.
type Fault struct {
	Kind   Kind
	Target string // an edge id, or "*" for every edge; empty for the cloud
	At     time.Duration
	For    time.Duration
	// Slow's latency and jitter, Throttle's rate.
	Latency  time.Duration
	Jitter   time.Duration
	RateKBps int
}

// faultJSON is a Fault in JSON, its durations as strings such as "1.5s".
type faultJSON struct {
	Kind     Kind   `json:"kind"`
	Target   string `json:"target,omitempty"`
	At       string `json:"at"`
	For      string `json:"for"`
	Latency  string `json:"latency,omitempty"`
	Jitter   string `json:"jitter,omitempty"`
	RateKBps int    `json:"rate_kbps,omitempty"`
}

// MarshalJSON writes the fault with its durations as strings.
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{Kind: f.Kind, Target: f.Target, At: f.At.String(), For: f.For.String(), RateKBps: f.RateKBps}
	if f.Latency > 0 {
		j.Latency, j.Jitter = f.Latency.String(), f.Jitter.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*f = Fault{Kind: j.Kind, Target: j.Target, RateKBps: j.RateKBps}
	for _, d := range []struct {
		s string
		p *time.Duration
	}{{j.At, &f.At}, {j.For, &f.For}, {j.Latency, &f.Latency}, {j.Jitter, &f.Jitter}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			return fmt.Errorf("fault: %w", err)
		}
		*d.p = v
	}
	return nil
}

// Defaults for the parameters of Slow and Throttle.
const (
	DefaultLatency  = 300 * time.Millisecond
	DefaultJitter   = 100 * time.Millisecond
	DefaultRateKBps = 8
)

func (f Fault) String() string {
	s := string(f.Kind)
	if f.Target != "" {
		s += ":" + f.Target
	}
	s += "@" + f.At.String()
	if f.For > 0 {
		s += "+" + f.For.String()
	}
	return s
}

// Describe says what the fault does, for people.
func (f Fault) Describe() string {
	who := "edge " + f.Target
	if f.Target == "*" || f.Target == "" {
		who = "every edge"
	}
	switch f.Kind {
	case Cut:
		return "uplink cut for " + who
	case Blackhole:
		return "uplink blackholed for " + who
	case Slow:
		return fmt.Sprintf("uplink slowed by %s±%s for %s", f.Latency, f.Jitter, who)
	case Throttle:
		return fmt.Sprintf("uplink throttled to %d KB/s for %s", f.RateKBps, who)
	case EdgeKill:
		return "kill -9 of " + who
	case CloudKill:
		return "kill -9 of the cloud"
	}
	return string(f.Kind)
}

// Parse reads a schedule (see the package doc).
func Parse(s string) ([]Fault, error) {
	var out []Fault
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		spec, when, ok := strings.Cut(item, "@")
		if !ok {
			return nil, fmt.Errorf("fault %q: want kind[:target]@at[+for], such as cut:shop-1@10s+5s", item)
		}
		kind, target, _ := strings.Cut(spec, ":")
		f := Fault{Kind: Kind(kind), Target: target}
		if !slices.Contains(Kinds, f.Kind) {
			return nil, fmt.Errorf("fault %q: kind %q is not one of %v", item, kind, Kinds)
		}
		if f.Kind == CloudKill {
			if target != "" && target != targetless {
				return nil, fmt.Errorf("fault %q: %s takes no target", item, kind)
			}
			f.Target = ""
		} else if f.Target == "" {
			f.Target = "*"
		}
		at, dur, _ := strings.Cut(when, "+")
		var err error
		if f.At, err = time.ParseDuration(at); err != nil || f.At < 0 {
			return nil, fmt.Errorf("fault %q: start %q is not a duration such as 10s", item, at)
		}
		if dur != "" {
			if f.For, err = time.ParseDuration(dur); err != nil || f.For < 0 {
				return nil, fmt.Errorf("fault %q: length %q is not a duration such as 5s", item, dur)
			}
		}
		if f.For == 0 && f.Kind.IsLink() {
			return nil, fmt.Errorf("fault %q: an uplink fault needs a length, such as %s+5s", item, item)
		}
		out = append(out, f.withDefaults())
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out, nil
}

func (f Fault) withDefaults() Fault {
	switch f.Kind {
	case Slow:
		if f.Latency == 0 {
			f.Latency, f.Jitter = DefaultLatency, DefaultJitter
		}
	case Throttle:
		if f.RateKBps == 0 {
			f.RateKBps = DefaultRateKBps
		}
	}
	return f
}

// Format writes a schedule in the form Parse reads.
func Format(fs []Fault) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.String()
	}
	return strings.Join(parts, ",")
}

// Soak makes a schedule that runs every kind of fault, in turns, over
// duration: one fault every gap or so, each on an edge taken in turn
// (some on every edge at once), leaving the last part of the run quiet.
// The same seed makes the same schedule.
func Soak(seed uint64, duration time.Duration, edges []string, gap time.Duration) []Fault {
	if gap <= 0 {
		gap = 30 * time.Second
	}
	rng := rand.New(rand.NewPCG(seed, 0x50a4))
	cycle := []Kind{Cut, EdgeKill, Slow, CloudKill, Throttle, Blackhole, EdgeKill, Cut}
	var out []Fault
	end := duration - max(gap, duration/10)
	for i, at := 0, gap/2; at < end && len(edges) > 0; i, at = i+1, at+gap {
		k := cycle[i%len(cycle)]
		f := Fault{Kind: k, At: at, Target: edges[i%len(edges)]}
		switch k {
		case Cut, Blackhole:
			f.For = gap/3 + time.Duration(rng.Int64N(int64(gap/3)))
			if i%len(cycle) == len(cycle)-1 {
				f.Target = "*" // the whole fleet offline at once
			}
		case Slow, Throttle:
			f.For = gap / 2
		case EdgeKill:
			f.For = time.Duration(rng.Int64N(int64(2 * time.Second)))
		case CloudKill:
			f.Target = ""
			f.For = time.Second + time.Duration(rng.Int64N(int64(3*time.Second)))
		}
		f.For = min(f.For, end-at).Round(100 * time.Millisecond)
		out = append(out, f.withDefaults())
	}
	return out
}
