package rollout

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Spec is what an operator asks for: cloud rollouts create, or
// POST /v1/rollouts.
type Spec struct {
	ID          string        // empty: New makes one
	Release     string        // the version to roll out
	Channel     string        // the TUF channel; empty: DefaultChannel
	To          string        // "all", "tag:T" or "stores:S1,S2"
	Stages      string        // cumulative sizes, counts or percentages: "1,5%,25%,100%"
	MaxFailures string        // "2%" of the whole target set, or a count "3"
	Silence     time.Duration // no ota.* event for this long after assignment: silent, a failure
	Window      string        // "HH:MM-HH:MM" in each store's time zone; empty: any time
	Expires     time.Duration // an assignment's validity (its NotAfter and its command's expiry)
	Tenant      string        // the tenant whose edges it targets; "" every tenant's
	CreatedBy   string        // who asked (an API token's name, "cli")
}

// Defaults of Spec.
const (
	DefaultChannel     = "stable"
	DefaultStages      = "1,5%,25%,100%"
	DefaultMaxFailures = "2%"
	DefaultSilence     = 30 * time.Minute
	DefaultExpires     = 72 * time.Hour
)

// size is one stage's cumulative size, or the failure budget: a count or a
// percentage of the target set.
type size struct {
	n   int     // a count when pct < 0
	pct float64 // a percentage, 0 < pct <= 100; -1 for a count
}

func (s size) String() string {
	if s.pct >= 0 {
		return strconv.FormatFloat(s.pct, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(s.n)
}

// of is the size as a count of a set of total: a percentage rounds up for
// a stage (a stage of 1% of 10 edges is one edge, not none).
func (s size) of(total int) int {
	if s.pct < 0 {
		return min(s.n, total)
	}
	return min(total, int(math.Ceil(s.pct*float64(total)/100-1e-9)))
}

// budget is the failure budget of a set of total: a percentage rounds down
// (2% of 10 edges is none: the first failure pauses).
func (s size) budget(total int) int {
	if s.pct < 0 {
		return s.n
	}
	return int(math.Floor(s.pct*float64(total)/100 + 1e-9))
}

func parseSize(what, s string, zeroOK bool) (size, error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || math.IsNaN(v) || v < 0 || v > 100 || (v == 0 && !zeroOK) {
			return size{}, fmt.Errorf("%s %q: want a percentage above 0%% and at most 100%%, such as 5%%", what, s)
		}
		return size{pct: v}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || (n == 0 && !zeroOK) || n > 1_000_000 {
		return size{}, fmt.Errorf("%s %q: want a count (such as 10) or a percentage (such as 5%%)", what, s)
	}
	return size{n: n, pct: -1}, nil
}

// parseStages parses --stages: comma-separated cumulative sizes that do
// not shrink.
func parseStages(s string) ([]size, error) {
	if s == "" {
		return nil, fmt.Errorf("--stages is empty; give cumulative sizes such as %s", DefaultStages)
	}
	parts := strings.Split(s, ",")
	if len(parts) > 20 {
		return nil, fmt.Errorf("--stages %q has %d stages; at most 20", s, len(parts))
	}
	out := make([]size, 0, len(parts))
	for i, p := range parts {
		z, err := parseSize(fmt.Sprintf("--stages stage %d", i+1), strings.TrimSpace(p), false)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			prev := out[i-1]
			if prev.pct >= 0 && z.pct >= 0 && z.pct < prev.pct || prev.pct < 0 && z.pct < 0 && z.n < prev.n {
				return nil, fmt.Errorf("--stages %q: stage %d (%s) is smaller than stage %d (%s); sizes are cumulative (edges assigned by the end of the stage)",
					s, i+1, z, i, prev)
			}
		}
		out = append(out, z)
	}
	return out, nil
}

// parseTarget parses --to.
func parseTarget(to string) (kind string, args []string, err error) {
	switch {
	case to == "all":
		return "all", nil, nil
	case strings.HasPrefix(to, "tag:"):
		t := strings.TrimPrefix(to, "tag:")
		if err := CheckTag(t); err != nil {
			return "", nil, fmt.Errorf("--to %q: %w", to, err)
		}
		return "tag", []string{t}, nil
	case strings.HasPrefix(to, "stores:"):
		ss := strings.Split(strings.TrimPrefix(to, "stores:"), ",")
		for _, st := range ss {
			if err := protocol.ValidateName("store", st); err != nil {
				return "", nil, fmt.Errorf("--to %q: %w", to, err)
			}
		}
		return "stores", ss, nil
	}
	return "", nil, fmt.Errorf("--to %q: want all, tag:TAG or stores:S1,S2", to)
}

// CheckTag checks an edge tag: 1 to 64 of A-Z a-z 0-9 _ -.
func CheckTag(t string) error {
	if err := protocol.ValidateName("tag", t); err != nil {
		return err
	}
	return nil
}

// plan is a checked Spec.
type plan struct {
	stages   []size
	failures size
	toKind   string
	toArgs   []string
}

// check fills the defaults of s and checks it.
func (s *Spec) check() (plan, error) {
	var p plan
	if s.Channel == "" {
		s.Channel = DefaultChannel
	}
	if s.Stages == "" {
		s.Stages = DefaultStages
	}
	if s.MaxFailures == "" {
		s.MaxFailures = DefaultMaxFailures
	}
	if s.Silence == 0 {
		s.Silence = DefaultSilence
	}
	if s.Expires == 0 {
		s.Expires = DefaultExpires
	}
	if s.ID != "" {
		if err := protocol.ValidateName("rollout id", s.ID); err != nil {
			return p, err
		}
	}
	if s.Release == "" {
		return p, fmt.Errorf("no release: give --release, the version to roll out (cloud release status lists them)")
	}
	if err := checkText("--release", s.Release, 64); err != nil {
		return p, err
	}
	if err := checkText("--channel", s.Channel, 64); err != nil {
		return p, err
	}
	var err error
	if p.toKind, p.toArgs, err = parseTarget(s.To); err != nil {
		return p, err
	}
	if p.stages, err = parseStages(s.Stages); err != nil {
		return p, err
	}
	if p.failures, err = parseSize("--max-failures", s.MaxFailures, true); err != nil {
		return p, err
	}
	if s.Silence < time.Second {
		return p, fmt.Errorf("--silence %s: want at least 1s (a silent edge counts as a failure)", s.Silence)
	}
	if s.Expires < time.Minute {
		return p, fmt.Errorf("--expires %s: want at least 1m", s.Expires)
	}
	if s.Window != "" {
		if _, _, err := protocol.ParseWindow(s.Window); err != nil {
			return p, fmt.Errorf("--window: %w", err)
		}
	}
	return p, nil
}

func checkText(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s is %d bytes; the limit is %d", what, len(s), max)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '/' {
			return fmt.Errorf("%s %q has %q at byte %d; use printable ASCII without spaces or slashes", what, s, c, i)
		}
	}
	return nil
}

// inWindow reports whether t, in zone loc, is inside the daily window w
// ("" always is), by protocol.Window's rule, the edge's too: the store's
// wall clock then reads a time of the window (on the nights the clocks
// change, what the clock skips is not inside, a repeated hour is inside
// both times).
func inWindow(w string, t time.Time, loc *time.Location) bool {
	if w == "" {
		return true
	}
	win, err := protocol.ParseDailyWindow(w)
	if err != nil {
		return false
	}
	return win.Contains(t, loc)
}

// zoneOf is an edge's store time zone ("" or unknown: UTC).
func zoneOf(zone string) *time.Location {
	if zone != "" {
		if l, err := time.LoadLocation(zone); err == nil {
			return l
		}
	}
	return time.UTC
}

// windowOverlap is how much real time of [from, to) lies inside the daily
// window w in loc (protocol.Window.Overlap): a window skipped by a
// spring-forward change counts nothing that night, a repeated hour twice.
func windowOverlap(w string, loc *time.Location, from, to time.Time) time.Duration {
	win, err := protocol.ParseDailyWindow(w)
	if err != nil {
		return 0
	}
	return win.Overlap(from, to, loc)
}
