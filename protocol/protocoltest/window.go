package protocoltest

import (
	"testing"
	"time"
)

// WindowCase is one question about a daily maintenance window
// (protocol.Window) at one instant: the table below is answered by
// protocol itself, by the edge (edge/ota.Window: when it downloads and
// installs) and by the cloud (cloud/rollout: when it assigns), so the
// sides cannot drift apart on the nights the clocks change. Instants are
// RFC 3339 with the offset the zone has then, which tells the two
// occurrences of a repeated hour apart.
type WindowCase struct {
	Name   string
	Zone   string // IANA name
	Window string // HH:MM-HH:MM
	At     string
	In     bool   // At is inside the window
	Next   string // the window's next opening at or after At (At itself when In)
	Closes string // when the window containing At closes; "" when !In
}

// OverlapCase is how much real time of [From, To) a window holds.
type OverlapCase struct {
	Name     string
	Zone     string
	Window   string
	From, To string
	Want     time.Duration
}

// In 2026 the clocks change:
//   - Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST, 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC both);
//   - America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT, 2026-11-01 02:00 EDT -> 01:00 EST;
//   - Australia/Lord_Howe (half an hour): 2026-04-05 02:00 +11 -> 01:30 +1030, 2026-10-04 02:00 +1030 -> 02:30 +11.

// WindowCases is the shared table of instants.
var WindowCases = []WindowCase{
	// An ordinary night, for reference.
	{"ordinary, before", "Europe/Berlin", "02:00-05:00", "2026-12-01T01:15:00+01:00", false, "2026-12-01T02:00:00+01:00", ""},
	{"ordinary, inside", "Europe/Berlin", "02:00-05:00", "2026-12-01T03:00:00+01:00", true, "2026-12-01T03:00:00+01:00", "2026-12-01T05:00:00+01:00"},
	{"ordinary, after", "Europe/Berlin", "02:00-05:00", "2026-12-01T05:00:00+01:00", false, "2026-12-02T02:00:00+01:00", ""},
	{"ordinary, past midnight", "Europe/Berlin", "22:00-04:00", "2026-12-01T23:00:00+01:00", true, "2026-12-01T23:00:00+01:00", "2026-12-02T04:00:00+01:00"},

	// Spring forward in Berlin: 02:00-03:00 does not exist that night.
	{"berlin spring, window skipped", "Europe/Berlin", "02:00-03:00", "2026-03-29T01:59:00+01:00", false, "2026-03-30T02:00:00+02:00", ""},
	{"berlin spring, window skipped, after the jump", "Europe/Berlin", "02:00-03:00", "2026-03-29T03:00:00+02:00", false, "2026-03-30T02:00:00+02:00", ""},
	{"berlin spring, the night before", "Europe/Berlin", "02:00-03:00", "2026-03-28T02:30:00+01:00", true, "2026-03-28T02:30:00+01:00", "2026-03-28T03:00:00+01:00"},
	{"berlin spring, ends in the gap: opens", "Europe/Berlin", "01:30-02:30", "2026-03-29T01:00:00+01:00", false, "2026-03-29T01:30:00+01:00", ""},
	{"berlin spring, ends in the gap: closes at the jump", "Europe/Berlin", "01:30-02:30", "2026-03-29T01:45:00+01:00", true, "2026-03-29T01:45:00+01:00", "2026-03-29T03:00:00+02:00"},
	{"berlin spring, ends in the gap: 03:15 is outside", "Europe/Berlin", "01:30-02:30", "2026-03-29T03:15:00+02:00", false, "2026-03-30T01:30:00+02:00", ""},
	{"berlin spring, starts in the gap: opens at the jump", "Europe/Berlin", "02:30-04:00", "2026-03-29T01:00:00+01:00", false, "2026-03-29T03:00:00+02:00", ""},
	{"berlin spring, starts in the gap: 03:10 is inside", "Europe/Berlin", "02:30-04:00", "2026-03-29T03:10:00+02:00", true, "2026-03-29T03:10:00+02:00", "2026-03-29T04:00:00+02:00"},
	{"berlin spring, contains the change", "Europe/Berlin", "01:00-04:00", "2026-03-29T01:00:00+01:00", true, "2026-03-29T01:00:00+01:00", "2026-03-29T04:00:00+02:00"},
	{"berlin spring, past midnight into the gap", "Europe/Berlin", "22:00-02:30", "2026-03-28T23:00:00+01:00", true, "2026-03-28T23:00:00+01:00", "2026-03-29T03:00:00+02:00"},

	// Fall back in Berlin: 02:00-03:00 happens twice, and is inside both times.
	{"berlin fall, first 02:30", "Europe/Berlin", "02:00-03:00", "2026-10-25T02:30:00+02:00", true, "2026-10-25T02:30:00+02:00", "2026-10-25T03:00:00+01:00"},
	{"berlin fall, second 02:30", "Europe/Berlin", "02:00-03:00", "2026-10-25T02:30:00+01:00", true, "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"},
	{"berlin fall, opens at the first 02:00", "Europe/Berlin", "02:00-03:00", "2026-10-25T01:30:00+02:00", false, "2026-10-25T02:00:00+02:00", ""},
	{"berlin fall, opens twice: first closes at the change", "Europe/Berlin", "02:30-03:30", "2026-10-25T02:45:00+02:00", true, "2026-10-25T02:45:00+02:00", "2026-10-25T02:00:00+01:00"},
	{"berlin fall, opens twice: second opening", "Europe/Berlin", "02:30-03:30", "2026-10-25T02:10:00+01:00", false, "2026-10-25T02:30:00+01:00", ""},
	{"berlin fall, contains the change", "Europe/Berlin", "01:00-04:00", "2026-10-25T01:00:00+02:00", true, "2026-10-25T01:00:00+02:00", "2026-10-25T04:00:00+01:00"},
	{"berlin fall, past midnight, closes then reopens", "Europe/Berlin", "23:00-02:30", "2026-10-25T02:29:00+02:00", true, "2026-10-25T02:29:00+02:00", "2026-10-25T02:30:00+02:00"},
	{"berlin fall, past midnight, reopens on the repeated time", "Europe/Berlin", "23:00-02:30", "2026-10-25T02:45:00+02:00", false, "2026-10-25T02:00:00+01:00", ""},

	// New York.
	{"new york spring, window skipped", "America/New_York", "02:00-03:00", "2026-03-08T01:30:00-05:00", false, "2026-03-09T02:00:00-04:00", ""},
	{"new york spring, past midnight into the gap", "America/New_York", "22:00-02:30", "2026-03-07T23:00:00-05:00", true, "2026-03-07T23:00:00-05:00", "2026-03-08T03:00:00-04:00"},
	{"new york fall, repeated hour first time", "America/New_York", "01:00-02:00", "2026-11-01T01:30:00-04:00", true, "2026-11-01T01:30:00-04:00", "2026-11-01T02:00:00-05:00"},
	{"new york fall, repeated hour second time", "America/New_York", "01:00-02:00", "2026-11-01T01:10:00-05:00", true, "2026-11-01T01:10:00-05:00", "2026-11-01T02:00:00-05:00"},
	{"new york fall, past midnight across the change", "America/New_York", "22:00-04:00", "2026-10-31T22:00:00-04:00", true, "2026-10-31T22:00:00-04:00", "2026-11-01T04:00:00-05:00"},
	{"new york fall, 02:00 is outside once", "America/New_York", "01:00-02:00", "2026-11-01T02:00:00-05:00", false, "2026-11-02T01:00:00-05:00", ""},

	// Lord Howe: the clock moves by half an hour.
	{"lord howe spring, window skipped", "Australia/Lord_Howe", "02:00-02:30", "2026-10-04T01:50:00+10:30", false, "2026-10-05T02:00:00+11:00", ""},
	{"lord howe spring, starts in the gap: opens at the jump", "Australia/Lord_Howe", "02:15-03:00", "2026-10-04T01:50:00+10:30", false, "2026-10-04T02:30:00+11:00", ""},
	{"lord howe spring, ends in the gap", "Australia/Lord_Howe", "01:30-02:15", "2026-10-04T01:50:00+10:30", true, "2026-10-04T01:50:00+10:30", "2026-10-04T02:30:00+11:00"},
	{"lord howe fall, repeated half hour first time", "Australia/Lord_Howe", "01:30-02:00", "2026-04-05T01:45:00+11:00", true, "2026-04-05T01:45:00+11:00", "2026-04-05T02:00:00+10:30"},
	{"lord howe fall, repeated half hour second time", "Australia/Lord_Howe", "01:30-02:00", "2026-04-05T01:35:00+10:30", true, "2026-04-05T01:35:00+10:30", "2026-04-05T02:00:00+10:30"},
	{"lord howe fall, opens twice: first closes at the change", "Australia/Lord_Howe", "01:45-02:30", "2026-04-05T01:50:00+11:00", true, "2026-04-05T01:50:00+11:00", "2026-04-05T01:30:00+10:30"},
	{"lord howe fall, opens twice: second opening", "Australia/Lord_Howe", "01:45-02:30", "2026-04-05T01:35:00+10:30", false, "2026-04-05T01:45:00+10:30", ""},

	// The end of the zone data: on the last UTC day of a leap year served
	// by the data's TZ rule (2040 in any data; 2024 and 2028 in the slim
	// data time/tzdata embeds) Go's ZoneBounds gives an end before the
	// instant (golang/go#81583); nothing changes that night.
	{"end of the zone data, before", "Europe/Berlin", "02:00-05:00", "2040-12-30T05:03:00+01:00", false, "2040-12-31T02:00:00+01:00", ""},
	{"end of the zone data, on the last day", "Europe/Berlin", "02:00-05:00", "2040-12-31T12:00:00+01:00", false, "2041-01-01T02:00:00+01:00", ""},
	{"end of the zone data, inside past midnight", "Australia/Sydney", "22:00-04:00", "2041-01-01T03:00:00+11:00", true, "2041-01-01T03:00:00+11:00", "2041-01-01T04:00:00+11:00"},
}

// OverlapCases is the shared table of spans.
var OverlapCases = []OverlapCase{
	{"ordinary", "Europe/Berlin", "02:00-05:00", "2026-12-01T00:00:00+01:00", "2026-12-01T12:00:00+01:00", 3 * time.Hour},
	{"ordinary, three days", "UTC", "02:00-05:00", "2026-03-01T00:00:00Z", "2026-03-04T00:00:00Z", 9 * time.Hour},
	{"berlin spring, skipped", "Europe/Berlin", "02:00-03:00", "2026-03-29T00:00:00+01:00", "2026-03-29T12:00:00+02:00", 0},
	{"berlin spring, ends in the gap", "Europe/Berlin", "01:30-02:30", "2026-03-29T00:00:00+01:00", "2026-03-29T12:00:00+02:00", 30 * time.Minute},
	{"berlin spring, starts in the gap", "Europe/Berlin", "02:30-04:00", "2026-03-29T00:00:00+01:00", "2026-03-29T12:00:00+02:00", time.Hour},
	{"berlin spring, contains the change", "Europe/Berlin", "01:00-04:00", "2026-03-29T00:00:00+01:00", "2026-03-29T12:00:00+02:00", 2 * time.Hour},
	{"berlin spring, four nights, one skipped", "Europe/Berlin", "02:00-03:00", "2026-03-27T00:00:00+01:00", "2026-03-31T00:00:00+02:00", 3 * time.Hour},
	{"berlin spring, past midnight into the gap", "Europe/Berlin", "22:00-02:30", "2026-03-28T12:00:00+01:00", "2026-03-29T12:00:00+02:00", 4 * time.Hour},
	{"berlin fall, the repeated hour twice", "Europe/Berlin", "02:00-03:00", "2026-10-25T00:00:00+02:00", "2026-10-25T12:00:00+01:00", 2 * time.Hour},
	{"berlin fall, opens twice", "Europe/Berlin", "02:30-03:30", "2026-10-25T00:00:00+02:00", "2026-10-25T12:00:00+01:00", 90 * time.Minute},
	{"berlin fall, contains the change", "Europe/Berlin", "01:00-04:00", "2026-10-25T00:00:00+02:00", "2026-10-25T12:00:00+01:00", 4 * time.Hour},
	{"berlin fall, past midnight, reopens", "Europe/Berlin", "23:00-02:30", "2026-10-24T12:00:00+02:00", "2026-10-25T12:00:00+01:00", 4 * time.Hour},
	{"berlin fall, from inside the second occurrence", "Europe/Berlin", "02:00-03:00", "2026-10-25T02:15:00+01:00", "2026-10-25T12:00:00+01:00", 45 * time.Minute},
	{"new york spring, skipped", "America/New_York", "02:00-03:00", "2026-03-08T00:00:00-05:00", "2026-03-08T12:00:00-04:00", 0},
	{"new york fall, the repeated hour twice", "America/New_York", "01:00-02:00", "2026-11-01T00:00:00-04:00", "2026-11-01T12:00:00-05:00", 2 * time.Hour},
	{"new york fall, past midnight across the change", "America/New_York", "22:00-04:00", "2026-10-31T12:00:00-04:00", "2026-11-01T12:00:00-05:00", 7 * time.Hour},
	{"lord howe spring, skipped", "Australia/Lord_Howe", "02:00-02:30", "2026-10-04T00:00:00+10:30", "2026-10-04T12:00:00+11:00", 0},
	{"lord howe spring, half of it", "Australia/Lord_Howe", "02:00-03:00", "2026-10-04T00:00:00+10:30", "2026-10-04T12:00:00+11:00", 30 * time.Minute},
	{"lord howe fall, the repeated half hour twice", "Australia/Lord_Howe", "01:30-02:00", "2026-04-05T00:00:00+11:00", "2026-04-05T12:00:00+10:30", time.Hour},
	{"lord howe fall, opens twice", "Australia/Lord_Howe", "01:45-02:30", "2026-04-05T00:00:00+11:00", "2026-04-05T12:00:00+10:30", 60 * time.Minute},
	{"end of the zone data, three nights", "Europe/Berlin", "22:00-04:00", "2040-12-29T12:00:00+01:00", "2041-01-01T12:00:00+01:00", 18 * time.Hour},
	{"end of the zone data, new york", "America/New_York", "23:00-01:00", "2040-12-30T12:00:00-05:00", "2041-01-01T12:00:00-05:00", 4 * time.Hour},
	{"empty span", "UTC", "02:00-05:00", "2026-03-01T04:00:00Z", "2026-03-01T03:00:00Z", 0},
}

// Zone loads an IANA zone or fails the test.
func Zone(tb testing.TB, name string) *time.Location {
	tb.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		tb.Fatalf("zone %s: %v", name, err)
	}
	return l
}

// Instant parses an RFC 3339 instant of the tables, in loc; "" is the
// zero time.
func Instant(tb testing.TB, s string, loc *time.Location) time.Time {
	tb.Helper()
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		tb.Fatalf("instant %q: %v", s, err)
	}
	return t.In(loc)
}
