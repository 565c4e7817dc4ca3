package web

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestSparkline(t *testing.T) {
	t0 := time.Date(2026, 2, 10, 12, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Hour) }
	if got := sparkline(nil); got != "" {
		t.Fatalf("no samples: %q", got)
	}
	if got := sparkline([]lagSample{{At: t0, Lag: 3}}); got != "" {
		t.Fatalf("one sample: %q", got)
	}
	got := string(sparkline([]lagSample{{at(0), 0}, {at(1), 8}, {at(2), 4}}))
	for _, want := range []string{`points="0,150 500,10 1000,80"`, "lag over the last 3 samples, 2026-02-10 12:00 to 2026-02-10 14:00: at most 8"} {
		if !strings.Contains(got, want) {
			t.Errorf("sparkline %s lacks %q", got, want)
		}
	}
	if got := string(sparkline([]lagSample{{at(0), 0}, {at(1), 0}})); !strings.Contains(got, `points="0,150 1000,150"`) {
		t.Errorf("all zero: %s", got)
	}
	if got := string(sparkline([]lagSample{{at(0), math.MaxUint64}, {at(1), math.MaxUint64 / 2}})); !strings.Contains(got, `points="0,10 1000,80"`) {
		t.Errorf("huge lags: %s", got)
	}
}
