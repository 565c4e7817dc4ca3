// Package poll is for tests: wait for a condition with a deadline instead
// of sleeping for a fixed time and hoping.
package poll

import (
	"testing"
	"time"
)

// Until checks cond every few milliseconds until it holds. If it does not
// hold within timeout, it fails tb, naming what was awaited.
func Until(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}
