package outbox

import (
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// The dedup window and clock steps.
//
// A pair is a duplicate while its record's edge_time is at or after the
// window's cutoff. Were the cutoff simply the wall clock minus the window,
// a forward step of the clock by more than the window (a gateway that ran
// days behind until NTP corrected it) would put every pair before the
// step outside the window at once, and a device's resend seconds later
// would be stored a second time.
//
// So the cutoff moves on its own, as a reading of the edge's hybrid logical
// clock: it never goes back, never passes wall clock minus window, and
// never advances faster than cutoffRate times the time that really passed,
// as Options.Monotonic measures it (a clock no step moves). Without steps
// it is exactly wall clock minus window. After a forward step it lags and
// catches up at cutoffRate, so a pair stays a duplicate for at least
// 1/cutoffRate of the window of real time whatever the clock did (3.5 days
// of the default 7). After a backward step it waits for the wall clock to
// catch up, keeping pairs longer, never shorter.
//
// The cutoff is stored with each commit, with the wall clock then. A
// restart (which no monotonic clock spans) moves it on by the wall time
// that passed since, so an edge switched off for longer than the window
// forgets what it should; a step taken while running keeps the lag it had
// at its last commit, so a crash right after a step does not undo the
// protection (a step during the downtime itself cannot be told from the
// downtime).
const cutoffRate = 2

// cutoff advances the dedup cutoff to now and returns it. It runs in the
// builder (or in Open, through startCutoff).
func (o *Outbox) cutoff(now time.Time) protocol.HLCTime {
	mono := o.opts.Monotonic()
	ms := max(0, (mono-o.cutMono)/time.Millisecond)
	o.cutMono += ms * time.Millisecond
	if mono < o.cutMono { // a monotonic clock that went back (a test's): start over from it
		o.cutMono = mono
	}
	want := protocol.HLCFromTime(now.Add(-o.opts.DedupWindow))
	limit := o.w.dedupCut + protocol.HLCTime(uint64(cutoffRate*ms)<<16)
	o.w.dedupCut = max(o.w.dedupCut, min(want, limit))
	o.w.dedupCutAt = now.UnixMilli()
	return o.w.dedupCut
}

// startCutoff is the cutoff at Open: the stored one moved on by the wall
// time since it was stored, up to wall clock minus window; for a file that
// has none (new, or written by an older build) wall clock minus window.
func (o *Outbox) startCutoff(stored protocol.HLCTime, storedAt int64) protocol.HLCTime {
	o.cutMono = o.opts.Monotonic()
	now := o.opts.Now()
	want := protocol.HLCFromTime(now.Add(-o.opts.DedupWindow))
	if stored == 0 {
		return want
	}
	since := max(0, now.UnixMilli()-storedAt)
	return max(stored, min(want, stored+protocol.HLCTime(uint64(since)<<16)))
}
