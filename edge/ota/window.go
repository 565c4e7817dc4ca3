package ota

import (
	"fmt"
	"time"
)

// Window is a daily local-time window such as 02:00-05:00; one whose end
// is before its start spans midnight (22:00-04:00).
type Window struct {
	Start, End time.Duration // since local midnight
}

// ParseWindow parses "HH:MM-HH:MM".
func ParseWindow(s string) (*Window, error) {
	var h1, m1, h2, m2 int
	if n, err := fmt.Sscanf(s, "%d:%d-%d:%d", &h1, &m1, &h2, &m2); err != nil || n != 4 ||
		fmt.Sprintf("%02d:%02d-%02d:%02d", h1, m1, h2, m2) != s {
		return nil, fmt.Errorf("window %q: want HH:MM-HH:MM in local time, such as 02:00-05:00", s)
	}
	if h1 > 23 || m1 > 59 || h2 > 23 || m2 > 59 || h1 < 0 || m1 < 0 || h2 < 0 || m2 < 0 {
		return nil, fmt.Errorf("window %q: hours 00-23, minutes 00-59", s)
	}
	w := &Window{Start: time.Duration(h1)*time.Hour + time.Duration(m1)*time.Minute, End: time.Duration(h2)*time.Hour + time.Duration(m2)*time.Minute}
	if w.Start == w.End {
		return nil, fmt.Errorf("window %q is empty", s)
	}
	return w, nil
}

func (w *Window) String() string {
	f := func(d time.Duration) string { return fmt.Sprintf("%02d:%02d", int(d.Hours()), int(d.Minutes())%60) }
	return f(w.Start) + "-" + f(w.End)
}

// midnight is the start of t's local day (in t's location).
func midnight(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, t.Location())
}

// at is the wall-clock offset off on the day of mid (daylight saving
// changes are taken by the calendar, not by adding durations).
func at(mid time.Time, off time.Duration) time.Time {
	return time.Date(mid.Year(), mid.Month(), mid.Day(), int(off/time.Hour), int(off%time.Hour/time.Minute), 0, 0, mid.Location())
}

// span returns the window occurrence that contains t, or the next one.
func (w *Window) span(t time.Time) (start, end time.Time) {
	mid := midnight(t)
	for day := -1; day <= 1; day++ {
		d := mid.AddDate(0, 0, day)
		s := at(d, w.Start)
		e := at(d, w.End)
		if w.End < w.Start {
			e = at(d.AddDate(0, 0, 1), w.End)
		}
		if t.Before(e) {
			return s, e
		}
	}
	d := mid.AddDate(0, 0, 2)
	return at(d, w.Start), at(d, w.End)
}

// Next is t when t is inside the window, else when it next opens.
func (w *Window) Next(t time.Time) time.Time {
	s, _ := w.span(t)
	if t.Before(s) {
		return s
	}
	return t
}

// Closes is when the window that contains t closes, or zero when t is
// outside it.
func (w *Window) Closes(t time.Time) time.Time {
	s, e := w.span(t)
	if t.Before(s) {
		return time.Time{}
	}
	return e
}
