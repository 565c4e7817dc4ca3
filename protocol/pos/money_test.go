package pos_test

import (
	"math"
	"testing"

	"github.com/outpost-edge/outpost/protocol/pos"
)

func TestFormatMinor(t *testing.T) {
	for _, tc := range []struct {
		minor int64
		cur   string
		want  string
	}{
		{1234, "EUR", "12.34"},
		{-5, "EUR", "-0.05"},
		{0, "USD", "0.00"},
		{100, "USD", "1.00"},
		{1234, "JPY", "1234"},
		{-1234, "JPY", "-1234"},
		{1, "BHD", "0.001"},
		{123456, "KWD", "123.456"},
		{5, "CLF", "0.0005"},
		{math.MinInt64, "EUR", "-92233720368547758.08"},
		{math.MaxInt64, "EUR", "92233720368547758.07"},
	} {
		if got := pos.FormatMinor(tc.minor, tc.cur); got != tc.want {
			t.Errorf("FormatMinor(%d, %s) = %q, want %q", tc.minor, tc.cur, got, tc.want)
		}
	}
}
