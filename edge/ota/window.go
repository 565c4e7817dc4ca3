package ota

import (
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Window is a daily local-time window such as 02:00-05:00; one whose end
// is before its start spans midnight (22:00-04:00).
type Window struct {
	Start, End time.Duration // since local midnight
}

// ParseWindow parses "HH:MM-HH:MM" (protocol.ParseWindow).
func ParseWindow(s string) (*Window, error) {
	start, end, err := protocol.ParseWindow(s)
	if err != nil {
		return nil, err
	}
	return &Window{Start: start, End: end}, nil
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
