package ota_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/protocol"
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

// TestAssignerWindowOnClockChangeNights (virtual time): the Assigner waits
// for its window by the shared rule on the nights the clocks change in
// Europe/Berlin. 02:00-03:00 does not exist on the last Sunday of March:
// an assignment that night installs at 02:00 the next night. On the last
// Sunday of October 02:00-03:00 happens twice: it installs at the first
// 02:00 (CEST), not an hour later at the second (where time.Date put it;
// this case failed before).
func TestAssignerWindowOnClockChangeNights(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		virtual = true
		defer func() { virtual = false }()
		r := newAssignRig(t)
		var mu sync.Mutex
		var at []time.Time
		install := func(ctx context.Context, a *ota.Assigned, set func(state, reason string) error) error {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
			return set(ota.AssignInstalled, "on probation")
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w := &ota.Assigner{Store: r.store, Install: install, Logger: slog.New(slog.DiscardHandler)}
		go func() { _ = w.Run(ctx) }()
		for i, tc := range []struct{ assigned, want string }{
			{"2026-03-29T00:30:00+01:00", "2026-03-30T02:00:00+02:00"},
			{"2026-10-25T01:30:00+02:00", "2026-10-25T02:00:00+02:00"},
		} {
			time.Sleep(time.Until(protocoltest.Instant(t, tc.assigned, time.UTC)))
			r.assign(t, protocol.Assignment{Rollout: fmt.Sprintf("r-%d", i), Target: "edge-1.1.0", Version: "1.1.0", Window: "02:00-03:00",
				Zone: "Europe/Berlin", NotAfter: time.Now().Add(72 * time.Hour).UnixMilli()})
			waitState(t, r, ota.AssignInstalled)
			mu.Lock()
			got := at[len(at)-1]
			mu.Unlock()
			if want := protocoltest.Instant(t, tc.want, time.UTC); !got.Equal(want) {
				t.Errorf("assigned at %s: installed at %s, want %s", tc.assigned, got.In(protocoltest.Zone(t, "Europe/Berlin")), tc.want)
			}
		}
	})
}
