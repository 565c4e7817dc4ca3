package outbox_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/edge/outbox"
)

// Sentinels are short, as bbolt's are; the advice for an operator is
// written once, apart; storage refusals say what they are by behaviour, so
// the intake classifies them without an adapter.
func TestSentinels(t *testing.T) {
	type quota interface{ Quota() bool }
	type diskFull interface{ DiskFull() bool }
	for _, c := range []struct {
		err             *outbox.Error
		quota, diskFull bool
	}{
		{outbox.ErrClosed, false, false},
		{outbox.ErrLedgerQuota, true, false},
		{outbox.ErrTelemetryQuota, true, false},
		{outbox.ErrDiskFull, false, true},
		{outbox.ErrCorrupt, false, false},
		{outbox.ErrLocked, false, false},
		{outbox.ErrReceipt, false, false},
		{outbox.ErrTrimmed, false, false},
		{outbox.ErrInvalid, false, false},
	} {
		t.Run(c.err.Error(), func(t *testing.T) {
			if msg := c.err.Error(); len(msg) > 40 || strings.ContainsAny(msg, ";,") {
				t.Errorf("message %q is not short: advice belongs in Advice", msg)
			}
			if c.err.Advice() == "" {
				t.Error("no advice for an operator")
			}
			wrapped := fmt.Errorf("commit: %w", c.err)
			var q quota
			if got := errors.As(wrapped, &q) && q.Quota(); got != c.quota {
				t.Errorf("Quota() through a wrap = %v, want %v", got, c.quota)
			}
			var d diskFull
			if got := errors.As(wrapped, &d) && d.DiskFull(); got != c.diskFull {
				t.Errorf("DiskFull() through a wrap = %v, want %v", got, c.diskFull)
			}
			if !errors.Is(wrapped, c.err) {
				t.Error("errors.Is does not see the sentinel through a wrap")
			}
		})
	}
}
