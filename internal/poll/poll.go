// Package poll is for tests: wait for a condition with a deadline instead
// of sleeping for a fixed time and hoping.
//
// For is the one helper, in nats-server's checkFor form: the check returns
// an error that says what it saw, and a timeout fails the test with the
// last one, so the failure tells what the test was waiting for and how far
// it got. Until is For for a condition with nothing more to say than its
// name.
package poll

import (
	"errors"
	"testing"
	"time"
)

// How often For checks: at once, then after MinInterval, doubling up to
// MaxInterval. A condition that holds soon is seen soon; a long wait (for
// a process to start, say) does not spin.
const (
	MinInterval = 2 * time.Millisecond
	MaxInterval = 20 * time.Millisecond
)

// For runs check until it returns nil. If it has not within timeout, For
// fails tb with check's last error.
func For(tb testing.TB, timeout time.Duration, check func() error) {
	tb.Helper()
	if err := wait(timeout, check); err != nil {
		tb.Fatalf("timed out after %s: %v", timeout, err)
	}
}

// Until is For with a condition: on timeout it fails tb naming what was
// awaited.
func Until(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	if err := wait(timeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}); err != nil {
		tb.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

var errNotYet = errors.New("not yet")

// wait runs check until it returns nil or timeout passes, and returns its
// last error then (nil when it passed).
func wait(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for d := MinInterval; ; d = min(2*d, MaxInterval) {
		err := check()
		if err == nil || !time.Now().Before(deadline) {
			return err
		}
		time.Sleep(min(d, time.Until(deadline)))
	}
}
