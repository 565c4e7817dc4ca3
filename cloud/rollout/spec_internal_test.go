package rollout

import (
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// TestWindowAcrossClockChanges answers the shared table of windows on the
// nights the clocks change (protocoltest.WindowCases and OverlapCases, the
// ones the edge's Window answers too) with the controller's inWindow (when
// it assigns) and windowOverlap (how long an edge told to wait for its
// window has been silent).
func TestWindowAcrossClockChanges(t *testing.T) {
	for _, tc := range protocoltest.WindowCases {
		loc := protocoltest.Zone(t, tc.Zone)
		at := protocoltest.Instant(t, tc.At, loc)
		if got := inWindow(tc.Window, at, loc); got != tc.In {
			t.Errorf("%s: inWindow(%s, %s, %s) = %v, want %v", tc.Name, tc.Window, tc.At, tc.Zone, got, tc.In)
		}
	}
	for _, tc := range protocoltest.OverlapCases {
		loc := protocoltest.Zone(t, tc.Zone)
		from, to := protocoltest.Instant(t, tc.From, loc), protocoltest.Instant(t, tc.To, loc)
		if got := windowOverlap(tc.Window, loc, from, to); got != tc.Want {
			t.Errorf("%s: %s in %s from %s to %s: %s, want %s", tc.Name, tc.Window, tc.Zone, tc.From, tc.To, got, tc.Want)
		}
	}
}

func TestWindowOverlap(t *testing.T) {
	tokyo, _ := time.LoadLocation("Asia/Tokyo")
	paris, _ := time.LoadLocation("Europe/Paris")
	at := func(loc *time.Location, s string) time.Time {
		t.Helper()
		v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name     string
		w        string
		loc      *time.Location
		from, to string
		want     time.Duration
	}{
		{"inside", "02:00-05:00", time.UTC, "2026-03-01 03:00", "2026-03-01 04:00", time.Hour},
		{"across the close and the next open", "02:00-05:00", time.UTC, "2026-03-01 04:59", "2026-03-02 02:10", 11 * time.Minute},
		{"outside", "02:00-05:00", time.UTC, "2026-03-01 06:00", "2026-03-02 01:00", 0},
		{"past midnight", "22:00-04:00", tokyo, "2026-03-01 21:00", "2026-03-01 23:00", time.Hour},
		{"past midnight, early part", "22:00-04:00", tokyo, "2026-03-02 03:00", "2026-03-02 05:00", time.Hour},
		{"three days", "02:00-05:00", time.UTC, "2026-03-01 00:00", "2026-03-04 00:00", 9 * time.Hour},
		// The night clocks go forward in Paris (2026-03-29 02:00 -> 03:00):
		// the window 01:00-04:00 holds two real hours.
		{"dst", "01:00-04:00", paris, "2026-03-29 00:00", "2026-03-29 12:00", 2 * time.Hour},
		{"empty span", "02:00-05:00", time.UTC, "2026-03-01 04:00", "2026-03-01 03:00", 0},
	} {
		if got := windowOverlap(tc.w, tc.loc, at(tc.loc, tc.from), at(tc.loc, tc.to)); got != tc.want {
			t.Errorf("%s: %s in %s from %s to %s: %s, want %s", tc.name, tc.w, tc.loc, tc.from, tc.to, got, tc.want)
		}
	}
}

func TestInWindow(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	now := time.Date(2026, 3, 2, 7, 30, 0, 0, time.UTC) // 02:30 in New York
	for _, tc := range []struct {
		w    string
		loc  *time.Location
		want bool
	}{
		{"", time.UTC, true},
		{"02:00-05:00", ny, true},
		{"02:00-05:00", time.UTC, false},
		{"22:00-03:00", ny, true},
		{"07:30-07:31", time.UTC, true},
		{"07:00-07:30", time.UTC, false},
	} {
		if got := inWindow(tc.w, now, tc.loc); got != tc.want {
			t.Errorf("inWindow(%q, %s, %s) = %v", tc.w, now, tc.loc, got)
		}
	}
}
