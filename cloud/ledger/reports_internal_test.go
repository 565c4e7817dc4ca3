package ledger

import (
	"slices"
	"testing"
)

// FuzzReportCursor feeds the decoder of the reports' cursor (parameter
// after, outside bytes) anything: it never panics, refuses what is not a
// cursor of the right length, and what it accepts encodes back to a
// cursor that decodes to the same values.
func FuzzReportCursor(f *testing.F) {
	f.Add(encodeCursor([]string{"t1", "s1", "2026-02-10", "USD"}), 4)
	f.Add(encodeCursor([]string{"1", "0"}), 2)
	f.Add("", 1)
	f.Add("W10", 0)
	f.Add("bm90IGpzb24", 3)
	f.Add("WyJhIiwgMV0", 2)
	f.Fuzz(func(t *testing.T, s string, n int) {
		vals, err := decodeCursor(s, n)
		if err != nil {
			return
		}
		if len(vals) != n {
			t.Fatalf("decoded %d values, want %d", len(vals), n)
		}
		again, err := decodeCursor(encodeCursor(vals), n)
		if err != nil || !slices.Equal(again, vals) {
			t.Fatalf("round trip: %q, %v; want %q", again, err, vals)
		}
	})
}
