package poll_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/poll"
)

// fakeTB records a Fatalf instead of ending the test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f) // Fatalf does not return
}

func run(f func(tb testing.TB)) (failed string) {
	tb := &fakeTB{}
	defer func() {
		if r := recover(); r != nil && r != any(tb) {
			panic(r)
		}
		failed = tb.failed
	}()
	f(tb)
	return ""
}

func TestFor(t *testing.T) {
	n := 0
	if msg := run(func(tb testing.TB) {
		poll.For(tb, time.Minute, func() error {
			if n++; n < 3 {
				return fmt.Errorf("seen %d", n)
			}
			return nil
		})
	}); msg != "" || n != 3 {
		t.Fatalf("For failed %q after %d checks; want it to pass on the third", msg, n)
	}
	// A timeout says what the check saw last.
	msg := run(func(tb testing.TB) {
		poll.For(tb, 0, func() error { return errors.New("hwm is 4, want 5") })
	})
	if !strings.Contains(msg, "hwm is 4, want 5") || !strings.Contains(msg, "timed out") {
		t.Fatalf("timeout message %q", msg)
	}
	msg = run(func(tb testing.TB) { poll.Until(tb, 0, "the receipt", func() bool { return false }) })
	if !strings.Contains(msg, "waiting for the receipt") {
		t.Fatalf("Until's timeout message %q", msg)
	}
}
