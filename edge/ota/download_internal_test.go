package ota

import (
	"bytes"
	"context"
	"io"
	"testing"
	"testing/synctest"
	"time"
)

// The rate cap, in virtual time: 64 KiB at 16 KiB/s with a 4 KiB burst
// takes (64-4)/16 = 3.75 s.
func TestRateReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		rr := newRateReader(context.Background(), bytes.NewReader(make([]byte, 64<<10)), 16<<10)
		n, err := io.Copy(io.Discard, rr)
		if err != nil || n != 64<<10 {
			t.Fatalf("copied %d: %v", n, err)
		}
		if got := time.Since(start); got != 3750*time.Millisecond {
			t.Fatalf("took %s of virtual time, want 3.75s", got)
		}
	})
}
