package protocol_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// TestWindowCases answers the shared table (protocoltest.WindowCases and
// OverlapCases) with protocol.Window; edge/ota and cloud/rollout answer the
// same table with their own code.
func TestWindowCases(t *testing.T) {
	for _, tc := range protocoltest.WindowCases {
		loc := protocoltest.Zone(t, tc.Zone)
		w, err := protocol.ParseDailyWindow(tc.Window)
		if err != nil {
			t.Fatal(err)
		}
		at := protocoltest.Instant(t, tc.At, loc)
		if got := w.Contains(at, loc); got != tc.In {
			t.Errorf("%s: %s in %s at %s: inside %v, want %v", tc.Name, tc.Window, tc.Zone, tc.At, got, tc.In)
		}
		if got, want := w.Next(at, loc), protocoltest.Instant(t, tc.Next, loc); !got.Equal(want) {
			t.Errorf("%s: %s in %s at %s: next %s, want %s", tc.Name, tc.Window, tc.Zone, tc.At, got, want)
		}
		if got, want := w.Closes(at, loc), protocoltest.Instant(t, tc.Closes, loc); !got.Equal(want) {
			t.Errorf("%s: %s in %s at %s: closes %s, want %s", tc.Name, tc.Window, tc.Zone, tc.At, got, want)
		}
	}
	for _, tc := range protocoltest.OverlapCases {
		loc := protocoltest.Zone(t, tc.Zone)
		w, err := protocol.ParseDailyWindow(tc.Window)
		if err != nil {
			t.Fatal(err)
		}
		from, to := protocoltest.Instant(t, tc.From, loc), protocoltest.Instant(t, tc.To, loc)
		if got := w.Overlap(from, to, loc); got != tc.Want {
			t.Errorf("%s: %s in %s from %s to %s: %s, want %s", tc.Name, tc.Window, tc.Zone, tc.From, tc.To, got, tc.Want)
		}
	}
}

// TestWindowAgainstMinuteScan checks Next, Closes and Overlap against the
// rule itself (Contains) by walking real time minute by minute across the
// nights the clocks change, for windows around, inside and across each
// change. Windows and changes fall on whole minutes, so the scan is exact.
func TestWindowAgainstMinuteScan(t *testing.T) {
	nights := []struct {
		zone string
		from string // a day before the change
	}{
		{"Europe/Berlin", "2026-03-28T00:00:00Z"},
		{"Europe/Berlin", "2026-10-24T00:00:00Z"},
		{"America/New_York", "2026-03-07T00:00:00Z"},
		{"America/New_York", "2026-10-31T00:00:00Z"},
		{"Australia/Lord_Howe", "2026-04-04T00:00:00Z"},
		{"Australia/Lord_Howe", "2026-10-03T00:00:00Z"},
		{"UTC", "2026-03-28T00:00:00Z"},
		// Offsets that changed for other reasons than a DST rule: Samoa
		// skipped 2011-12-30 whole (-10 to +14), Moscow went back an hour
		// for good in 2014, Caracas forward half an hour in 2016,
		// Pyongyang half an hour in 2018; Troll's DST moves two hours;
		// Casablanca suspends its +01 for Ramadan (2026-02-15).
		{"Pacific/Apia", "2011-12-28T12:00:00Z"},
		{"Europe/Moscow", "2014-10-24T12:00:00Z"},
		{"America/Caracas", "2016-04-30T12:00:00Z"},
		{"Asia/Pyongyang", "2018-05-03T12:00:00Z"},
		{"Antarctica/Troll", "2026-03-28T00:00:00Z"},
		{"Africa/Casablanca", "2026-02-13T12:00:00Z"},
	}
	windows := []string{"01:00-02:00", "01:30-02:00", "01:45-02:15", "02:00-02:30", "02:00-03:00", "02:15-03:00",
		"02:30-03:30", "01:00-04:00", "22:00-02:30", "23:00-01:45", "03:00-02:00", "00:00-00:01"}
	const span = 4 * 24 * 60 // minutes scanned
	for _, n := range nights {
		loc := protocoltest.Zone(t, n.zone)
		start := protocoltest.Instant(t, n.from, loc)
		for _, ws := range windows {
			w, err := protocol.ParseDailyWindow(ws)
			if err != nil {
				t.Fatal(err)
			}
			in := make([]bool, span)
			for i := range in {
				in[i] = w.Contains(start.Add(time.Duration(i)*time.Minute), loc)
			}
			name := fmt.Sprintf("%s in %s", ws, n.zone)
			// Instants in the first two days, so the answer lies in the scan.
			for i := 0; i < span/2; i += 7 {
				at := start.Add(time.Duration(i) * time.Minute)
				j := i
				for !in[j] {
					j++
				}
				if got, want := w.Next(at, loc), start.Add(time.Duration(j)*time.Minute); !got.Equal(want) {
					t.Fatalf("%s at %s: next %s, want %s", name, at, got, want)
				}
				want := time.Time{}
				if in[i] {
					k := i
					for in[k] {
						k++
					}
					want = start.Add(time.Duration(k) * time.Minute)
				}
				if got := w.Closes(at, loc); !got.Equal(want) {
					t.Fatalf("%s at %s: closes %s, want %s", name, at, got, want)
				}
				for _, l := range []int{1, 59, 180, 1500} {
					var inside int
					for k := i; k < i+l; k++ {
						if in[k] {
							inside++
						}
					}
					if got := w.Overlap(at, at.Add(time.Duration(l)*time.Minute), loc); got != time.Duration(inside)*time.Minute {
						t.Fatalf("%s from %s for %dm: overlap %s, want %dm", name, at, l, got, inside)
					}
				}
			}
		}
	}
}

// TestWindowContainsIsTheWallClock: Contains reads the zone's wall clock,
// to the nanosecond, and nothing else.
func TestWindowContainsIsTheWallClock(t *testing.T) {
	w, _ := protocol.ParseDailyWindow("02:00-03:00")
	berlin := protocoltest.Zone(t, "Europe/Berlin")
	at := time.Date(2026, 12, 1, 2, 59, 59, 999999999, berlin)
	if !w.Contains(at, berlin) || w.Contains(at.Add(time.Nanosecond), berlin) {
		t.Fatalf("02:59:59.999999999 and 03:00 in Berlin: %v %v", w.Contains(at, berlin), w.Contains(at.Add(time.Nanosecond), berlin))
	}
	if w.Contains(at, time.UTC) {
		t.Fatalf("01:59:59 UTC is inside 02:00-03:00 UTC")
	}
}

// TestWindowAtTheEndOfTheZoneData: past a zone's last explicit transition
// its data's POSIX TZ rule serves, and there Go's ZoneBounds gives every
// instant of the last UTC day of a leap year an end before the instant
// (golang/go#81583): 2040 in any zone data (its transitions stop at 2037),
// and already 2024 and 2028 in the slim data the edge binary carries
// (time/tzdata). Next, Closes and Overlap must still answer by the rule
// (Contains, minute by minute), and return. Before, Next answered an
// instant before the question, outside the window (the Assigner installed
// at once), and Overlap of a window past midnight never returned.
func TestWindowAtTheEndOfTheZoneData(t *testing.T) {
	windows := []string{"02:00-05:00", "22:00-04:00", "12:00-13:00", "13:00-14:00", "00:30-01:30", "23:30-00:30", "01:00-00:59"}
	const span = 4 * 24 * 60 // minutes scanned, from 2040-12-29 00:00 UTC
	for _, zone := range []string{"Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe"} {
		loc := protocoltest.Zone(t, zone)
		start := time.Date(2040, 12, 29, 0, 0, 0, 0, time.UTC)
		if _, end := time.Date(2040, 12, 31, 12, 0, 0, 0, time.UTC).In(loc).ZoneBounds(); end.IsZero() || end.After(start.Add(3*24*time.Hour)) {
			t.Logf("%s: ZoneBounds is right here (end %s): the case checks nothing new", zone, end)
		}
		for _, ws := range windows {
			w, err := protocol.ParseDailyWindow(ws)
			if err != nil {
				t.Fatal(err)
			}
			in := make([]bool, span)
			for i := range in {
				in[i] = w.Contains(start.Add(time.Duration(i)*time.Minute), loc)
			}
			name := fmt.Sprintf("%s in %s", ws, zone)
			// Next and Closes first: before the fix Overlap could loop.
			for i := 0; i < span/2; i += 11 {
				at := start.Add(time.Duration(i) * time.Minute)
				j := i
				for !in[j] {
					j++
				}
				if got, want := w.Next(at, loc), start.Add(time.Duration(j)*time.Minute); !got.Equal(want) {
					t.Fatalf("%s at %s: next %s, want %s", name, at.In(loc), got, want)
				}
				want := time.Time{}
				if in[i] {
					k := i
					for in[k] {
						k++
					}
					want = start.Add(time.Duration(k) * time.Minute)
				}
				if got := w.Closes(at, loc); !got.Equal(want) {
					t.Fatalf("%s at %s: closes %s, want %s", name, at.In(loc), got, want)
				}
			}
			for i := 0; i < span/2; i += 11 {
				at := start.Add(time.Duration(i) * time.Minute)
				for _, l := range []int{59, 1500} {
					var inside int
					for k := i; k < i+l; k++ {
						if in[k] {
							inside++
						}
					}
					if got := w.Overlap(at, at.Add(time.Duration(l)*time.Minute), loc); got != time.Duration(inside)*time.Minute {
						t.Fatalf("%s from %s for %dm: overlap %s, want %dm", name, at.In(loc), l, got, inside)
					}
				}
			}
		}
	}
}
