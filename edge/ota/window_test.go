package ota_test

import (
	"testing"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// TestWindowAcrossClockChanges answers the shared table of windows on the
// nights the clocks change (protocoltest.WindowCases, the one the cloud's
// rollout controller answers too) with the edge's Window, in the zone of
// the instant as the Assigner and the Downloader ask it.
func TestWindowAcrossClockChanges(t *testing.T) {
	for _, tc := range protocoltest.WindowCases {
		loc := protocoltest.Zone(t, tc.Zone)
		w, err := ota.ParseWindow(tc.Window)
		if err != nil {
			t.Fatal(err)
		}
		at := protocoltest.Instant(t, tc.At, loc)
		if got, want := w.Next(at), protocoltest.Instant(t, tc.Next, loc); !got.Equal(want) {
			t.Errorf("%s: %s in %s at %s: next %s, want %s", tc.Name, tc.Window, tc.Zone, tc.At, got, want)
		}
		if got, want := w.Closes(at), protocoltest.Instant(t, tc.Closes, loc); !got.Equal(want) {
			t.Errorf("%s: %s in %s at %s: closes %s, want %s", tc.Name, tc.Window, tc.Zone, tc.At, got, want)
		}
	}
}
