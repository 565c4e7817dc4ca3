package uplink_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/protocol"
)

// TestRateCap measures the cap: in virtual time (testing/synctest), the
// bytes sent beyond the limiter's burst (one largest segment) take at
// least bytes/RateBytes, and not much longer. Without the limiter the
// whole backlog goes out at virtual time zero, so the first check fails.
func TestRateCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rateBytes = 256 << 10
		groups := make([]int, 40) // 40 segments of about 90 KiB: 3.5 MiB, over three times the burst
		for i := range groups {
			groups[i] = 1000
		}
		start := time.Now()
		r := startMem(t, nil, func(o *uplink.Options) {
			o.Window, o.MaxSegmentBytes, o.RateBytes = 4, protocol.MaxSegmentBytes/2, rateBytes
		}, groups...)
		for r.up.Stats().AckedHWM < r.src.LastSeq() {
			settle(100 * time.Millisecond)
		}
		pubs := r.tr.published()
		elapsed := pubs[len(pubs)-1].at.Sub(start) // the last segment went out
		sent := 0
		for _, p := range pubs {
			sent += p.size
		}
		if sent < 3*protocol.MaxSegmentBytes {
			t.Fatalf("sent %d bytes; the test needs well over the burst of %d", sent, protocol.MaxSegmentBytes)
		}
		least := time.Duration(float64(sent-protocol.MaxSegmentBytes) / rateBytes * float64(time.Second))
		if elapsed < least {
			t.Fatalf("%d bytes went out in %v of virtual time: %.0f bytes/s, over the cap of %d (at least %v expected)",
				sent, elapsed, float64(sent)/elapsed.Seconds(), rateBytes, least)
		}
		if most := time.Duration(float64(sent)/rateBytes*float64(time.Second)) + 2*time.Second; elapsed > most {
			t.Fatalf("%d bytes took %v of virtual time, want at most %v: the cap slows the uplink more than it says", sent, elapsed, most)
		}
		t.Logf("%d bytes in %v of virtual time: %.0f bytes/s for a cap of %d", sent, elapsed, float64(sent)/elapsed.Seconds(), rateBytes)
	})
}
