package protocol

import "time"

// Window is a daily maintenance window, "HH:MM-HH:MM" (ParseDailyWindow),
// in a time zone given with each question. The edge (edge/ota: when to
// download and install an assignment) and the cloud (cloud/rollout: when to
// assign, and how long an edge has been silent inside its window) both
// answer by it, so the two never disagree about a night.
//
// The rule: a window is a set of local wall-clock times of day, from Start
// (included) to End (excluded), past midnight when End is before Start. An
// instant is inside when the zone's wall clock then reads a time of the
// set, and at no other instant. So on the nights the clocks change:
//
//   - spring forward: the part of the window that the clock skips does not
//     happen that night; the window is shortened to what exists, and a
//     window wholly inside the skipped hour (02:00-03:00 in Europe/Berlin
//     on the last Sunday of March) is skipped that night;
//   - fall back: the repeated wall-clock times are inside both times they
//     happen; 02:00-03:00 in Europe/Berlin on the last Sunday of October
//     lasts two real hours, and 02:30-03:30 opens twice (02:30-03:00 summer
//     time, then 02:30-03:30 winter time).
//
// Nothing is ever taken from a neighbouring hour: a window never opens at
// a wall-clock time outside it.
type Window struct {
	Start, End time.Duration // since local midnight, wall-clock
}

// ParseDailyWindow parses "HH:MM-HH:MM" (ParseWindow) into a Window.
func ParseDailyWindow(s string) (Window, error) {
	start, end, err := ParseWindow(s)
	return Window{Start: start, End: end}, err
}

const day = 24 * time.Hour

// maxPeriods bounds the zone periods (spans of one UTC offset) a question
// walks: a window opens within a day or two in any real zone.
const maxPeriods = 16

// holds reports whether the wall-clock time of day d is in w.
func (w Window) holds(d time.Duration) bool {
	if w.Start < w.End {
		return d >= w.Start && d < w.End
	}
	return d >= w.Start || d < w.End // past midnight
}

// wallOfDay is the time of day the wall clock reads at t under the UTC
// offset off (seconds east).
func wallOfDay(t time.Time, off int) time.Duration {
	s := (t.Unix() + int64(off)) % 86400
	if s < 0 {
		s += 86400
	}
	return time.Duration(s)*time.Second + time.Duration(t.Nanosecond())
}

func modDay(d time.Duration) time.Duration {
	if d %= day; d < 0 {
		d += day
	}
	return d
}

// period is the UTC offset of loc at t and an instant after t until which
// it holds (zero: for ever). Within a period the wall clock runs with real
// time, so every answer is arithmetic on it; the zone's changes are the
// periods' ends (an end where nothing changes only asks again from there).
//
// The end is ZoneBounds' when it is after t. It is not always: past a
// zone's last explicit transition its data's POSIX TZ rule serves, and
// there Go gives every instant of the last UTC day of a leap year the end
// 00:00 UTC of that day, before the instant (golang/go#81583; 2024 and
// 2028 in the slim data time/tzdata embeds, 2040 in any). Then the end is
// found by probing the offset (probeEnd).
func period(t time.Time, loc *time.Location) (off int, end time.Time) {
	lt := t.In(loc)
	_, off = lt.Zone()
	_, end = lt.ZoneBounds()
	if !end.IsZero() && !end.After(t) {
		end = probeEnd(t, loc, off)
	}
	return off, end
}

// probeEnd is the first instant after t, within a day, at which the offset
// of loc is not off, or t plus a day when there is none: probed hour by
// hour, then by halving to the second (zones change on whole seconds). It
// takes a zone not to change and change back within an hour, which holds
// where it is used: a TZ rule's changes are months apart.
func probeEnd(t time.Time, loc *time.Location, off int) time.Time {
	offAt := func(sec int64) int {
		_, o := time.Unix(sec, 0).In(loc).Zone()
		return o
	}
	lo := t.Unix() // t's second: a change on a whole second after it is after t
	for h := int64(1); h <= 24; h++ {
		hi := lo + h*3600
		if offAt(hi) == off {
			continue
		}
		for l := hi - 3600; hi-l > 1; {
			if m := l + (hi-l)/2; offAt(m) == off {
				l = m
			} else {
				hi = m
			}
		}
		return time.Unix(hi, 0)
	}
	return time.Unix(lo+24*3600, 0)
}

// Contains reports whether the wall clock of loc at t reads a time in w.
func (w Window) Contains(t time.Time, loc *time.Location) bool {
	_, off := t.In(loc).Zone()
	return w.holds(wallOfDay(t, off))
}

// Next is t when t is inside w, else the first instant after t that is
// (in loc).
func (w Window) Next(t time.Time, loc *time.Location) time.Time {
	for range maxPeriods {
		off, end := period(t, loc)
		u := t
		if d := wallOfDay(t, off); !w.holds(d) {
			u = t.Add(modDay(w.Start - d))
		}
		if end.IsZero() || u.Before(end) {
			return u.In(loc)
		}
		t = end // the zone changes first: ask again from there
	}
	return t.In(loc)
}

// Closes is the first instant after t that is outside w, when t is inside
// it (in loc), or zero when t is outside. A window may close early at a
// spring-forward change, and stays open across a fall-back change that
// takes the clock back into it.
func (w Window) Closes(t time.Time, loc *time.Location) time.Time {
	if !w.Contains(t, loc) {
		return time.Time{}
	}
	for range maxPeriods {
		off, end := period(t, loc)
		u := t.Add(modDay(w.End - wallOfDay(t, off))) // > t: t is inside, End is not
		if end.IsZero() || u.Before(end) {
			return u.In(loc)
		}
		if !w.Contains(end, loc) {
			return end.In(loc)
		}
		t = end
	}
	return t.In(loc)
}

// Overlap is how much real time of [from, to) is inside w in loc.
func (w Window) Overlap(from, to time.Time, loc *time.Location) time.Duration {
	var total time.Duration
	for t := from; t.Before(to); {
		s := w.Next(t, loc)
		if !s.Before(to) {
			break
		}
		e := w.Closes(s, loc)
		if e.IsZero() { // Next gave up past maxPeriods
			break
		}
		e = minTime(e, to)
		if !e.After(t) { // no progress: never loop
			break
		}
		total += e.Sub(s)
		t = e
	}
	return total
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
