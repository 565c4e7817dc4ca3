package ota

import (
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Window is a daily local-time window such as 02:00-05:00; one whose end
// is before its start spans midnight (22:00-04:00). It is a set of
// wall-clock times of day (protocol.Window).
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

func (w *Window) rule() protocol.Window { return protocol.Window{Start: w.Start, End: w.End} }

// Next is t when t is inside the window, else when it next opens, in t's
// location (the zone the window is in). On the nights the clocks change
// it follows protocol.Window's rule, the cloud's too: a window, or the part
// of it, that the clock skips does not happen that night, and a repeated
// hour is inside both times.
func (w *Window) Next(t time.Time) time.Time {
	return w.rule().Next(t, t.Location())
}

// Closes is when the window that contains t closes, or zero when t is
// outside it (in t's location, by protocol.Window's rule).
func (w *Window) Closes(t time.Time) time.Time {
	return w.rule().Closes(t, t.Location())
}
