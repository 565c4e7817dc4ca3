package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Flags of sizes, counts and durations that check their range when set, so
// that a bad value fails at start-up naming the flag, the value and what
// is accepted (flag's own Int64Var says only "parse error", and takes a
// negative quota without complaint).

// byteUnits are the units a byte size may carry, as the README writes them
// (1GiB, 256MiB), matched without regard to case; KB, MB, GB and TB are
// powers of 1000.
var byteUnits = []struct {
	name string
	mult int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"kB", 1e3},
	{"B", 1}, {"", 1},
}

// ParseBytes parses a byte size: a whole number with an optional unit (B,
// KiB, MiB, GiB, TiB; KB, MB, GB, TB in powers of 1000), such as 1GiB,
// 256MiB, 64KiB or 1048576.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	for _, u := range byteUnits {
		if len(t) < len(u.name) || !strings.EqualFold(t[len(t)-len(u.name):], u.name) {
			continue
		}
		num := strings.TrimSpace(t[:len(t)-len(u.name)])
		if num == "" {
			break
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return 0, fmt.Errorf("%q is too large a byte size", s)
			}
			break
		}
		if n != 0 && (n > math.MaxInt64/u.mult || n < math.MinInt64/u.mult) {
			return 0, fmt.Errorf("%q is too large a byte size", s)
		}
		return n * u.mult, nil
	}
	return 0, fmt.Errorf("%q is not a byte size: want a whole number with an optional unit B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB), such as 256MiB or 1GiB", s)
}

// FormatBytes writes n in the largest binary unit that divides it.
func FormatBytes(n int64) string {
	for _, u := range byteUnits[:4] {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	if n == 0 {
		return "0"
	}
	return strconv.FormatInt(n, 10) + "B"
}

// Range is what a number flag accepts: Min to Max (Max 0: no upper bound),
// and 0 as well when Zero says what 0 means ("no cap", "none").
type Range struct {
	Min, Max int64
	Zero     string
}

func (r Range) check(n int64, format func(int64) string) error {
	if n == 0 && r.Zero != "" {
		return nil
	}
	if n >= r.Min && (r.Max == 0 || n <= r.Max) {
		return nil
	}
	var want string
	switch {
	case r.Max == 0:
		want = "at least " + format(r.Min)
	case r.Min == r.Max:
		want = format(r.Min)
	default:
		want = "from " + format(r.Min) + " to " + format(r.Max)
	}
	if r.Zero != "" {
		want += ", or 0 for " + r.Zero
	}
	return fmt.Errorf("%s is out of range: want %s", format(n), want)
}

type integer interface{ ~int | ~int64 }

type bytesValue[T integer] struct {
	p *T
	r Range
}

func (v *bytesValue[T]) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return FormatBytes(int64(*v.p))
}

func (v *bytesValue[T]) kind() string { return "size" }

func (v *bytesValue[T]) Set(s string) error {
	n, err := ParseBytes(s)
	if err != nil {
		return err
	}
	if err := v.r.check(n, FormatBytes); err != nil {
		return err
	}
	if int64(T(n)) != n {
		return fmt.Errorf("%s is too large", FormatBytes(n))
	}
	*v.p = T(n)
	return nil
}

// BytesVar defines a byte-size flag (ParseBytes) whose value must be in r.
func BytesVar[T integer](fs *flag.FlagSet, p *T, name string, value T, r Range, usage string) {
	*p = value
	fs.Var(&bytesValue[T]{p, r}, name, usage)
}

type intValue[T integer] struct {
	p *T
	r Range
}

func (v *intValue[T]) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return strconv.FormatInt(int64(*v.p), 10)
}

func (v *intValue[T]) kind() string { return "int" }

func (v *intValue[T]) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || int64(T(n)) != n {
		return fmt.Errorf("%q is not a whole number", s)
	}
	if err := v.r.check(n, func(n int64) string { return strconv.FormatInt(n, 10) }); err != nil {
		return err
	}
	*v.p = T(n)
	return nil
}

// IntVar defines an integer flag whose value must be in r.
func IntVar[T integer](fs *flag.FlagSet, p *T, name string, value T, r Range, usage string) {
	*p = value
	fs.Var(&intValue[T]{p, r}, name, usage)
}

type durationValue struct {
	p *time.Duration
	r Range
}

func (v *durationValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return v.p.String()
}

func (v *durationValue) kind() string { return "duration" }

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a duration: want a number with a unit, such as 30s, 15m or 168h", s)
	}
	if err := v.r.check(int64(d), func(n int64) string { return time.Duration(n).String() }); err != nil {
		return err
	}
	*v.p = d
	return nil
}

// DurationVar defines a duration flag whose value must be in r (in
// nanoseconds: Range{Min: int64(time.Second)}).
func DurationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, r Range, usage string) {
	*p = value
	fs.Var(&durationValue{p, r}, name, usage)
}

// Durations is a Range of durations.
func Durations(min, max time.Duration, zero string) Range {
	return Range{Min: int64(min), Max: int64(max), Zero: zero}
}
