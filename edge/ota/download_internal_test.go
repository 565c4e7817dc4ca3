package ota

import (
	"bytes"
	"cmp"
	"context"
	"io"
	"strconv"
	"strings"
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

// Content-Range comes from the server: any bytes parse or fail, never
// panic, and a parsed start is what the header says.
func FuzzContentRangeStart(f *testing.F) {
	for _, s := range []string{"bytes 100-199/200", "bytes */200", "bytes -1-5/6", "items 0-1/2", "bytes 9223372036854775808-1/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, err := contentRangeStart(v)
		if err != nil {
			return
		}
		digits := strings.TrimLeft(strings.SplitN(strings.TrimPrefix(v, "bytes "), "-", 2)[0], "0")
		if n < 0 || strconv.FormatInt(n, 10) != cmp.Or(digits, "0") {
			t.Fatalf("%q parsed as %d", v, n)
		}
	})
}
