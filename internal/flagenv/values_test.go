package flagenv_test

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/flagenv"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"1GiB": 1 << 30, "256MiB": 256 << 20, "64KiB": 64 << 10, "1048576": 1 << 20, "12B": 12,
		"1gib": 1 << 30, "2 MiB": 2 << 20, "5KB": 5000, "3MB": 3e6, "0": 0, "1TiB": 1 << 40,
	} {
		got, err := flagenv.ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "1.5GiB", "ten", "1GB2", "1 iB", "99999999999TiB"} {
		if n, err := flagenv.ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", in, n)
		}
	}
	for n, want := range map[int64]string{1 << 30: "1GiB", 256 << 20: "256MiB", 1000: "1000B", 0: "0", 3 << 10: "3KiB"} {
		if got := flagenv.FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func newSet() (*flag.FlagSet, *int64, *int, *time.Duration, *int64) {
	fs := flag.NewFlagSet("edge run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var q, cap int64
	var w int
	var d time.Duration
	flagenv.BytesVar(fs, &q, "ledger-quota", 1<<30, flagenv.Range{Min: 1}, "")
	flagenv.BytesVar(fs, &cap, "max-file-bytes", 0, flagenv.Range{Min: 1 << 20, Zero: "no cap"}, "")
	flagenv.IntVar(fs, &w, "window", 8, flagenv.Range{Min: 1, Max: 1024}, "")
	flagenv.DurationVar(fs, &d, "dedup-window", time.Hour, flagenv.Durations(time.Second, 0, ""), "")
	fs.String("config", "", "")
	return fs, &q, &w, &d, &cap
}

// TestRangeFlags: bad values fail naming the flag, the value and the
// accepted range, as usage errors; good ones parse, units included.
func TestRangeFlags(t *testing.T) {
	fs, q, w, d, cp := newSet()
	if err := flagenv.Parse(fs, []string{"--ledger-quota", "2GiB", "--window", "16", "--dedup-window", "48h", "--max-file-bytes", "0"}, "OUTPOST_", "config"); err != nil {
		t.Fatal(err)
	}
	if *q != 2<<30 || *w != 16 || *d != 48*time.Hour || *cp != 0 {
		t.Fatalf("got %d %d %v %d", *q, *w, *d, *cp)
	}
	if f := fs.Lookup("ledger-quota"); f.DefValue != "1GiB" {
		t.Fatalf("default shown as %q, want 1GiB", f.DefValue)
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--ledger-quota", "-5"}, []string{"ledger-quota", "-5", "at least 1B"}},
		{[]string{"--ledger-quota", "0"}, []string{"ledger-quota", "0", "at least 1B"}},
		{[]string{"--ledger-quota", "lots"}, []string{"ledger-quota", `"lots"`, "256MiB"}},
		{[]string{"--window", "0"}, []string{"window", "from 1 to 1024"}},
		{[]string{"--window", "x"}, []string{"window", `"x"`, "whole number"}},
		{[]string{"--dedup-window", "-1h"}, []string{"dedup-window", "-1h", "at least 1s"}},
		{[]string{"--dedup-window", "0"}, []string{"dedup-window", "at least 1s"}},
		{[]string{"--max-file-bytes", "4KiB"}, []string{"max-file-bytes", "4KiB", "at least 1MiB, or 0 for no cap"}},
		{[]string{"stray"}, []string{`unexpected argument "stray"`, "edge run"}},
		{[]string{"--window", "4", "stray"}, []string{`unexpected argument "stray"`}},
	} {
		fs, _, _, _, _ := newSet()
		err := flagenv.Parse(fs, c.args, "OUTPOST_", "config")
		if err == nil {
			t.Errorf("%q: accepted", c.args)
			continue
		}
		if !cli.IsUsage(err) {
			t.Errorf("%q: %v is not a usage error", c.args, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %q does not say %q", c.args, err, w)
			}
		}
	}
	// The environment and the config file are checked the same way.
	t.Setenv("OUTPOST_WINDOW", "-3")
	fs, _, _, _, _ = newSet()
	if err := flagenv.Parse(fs, nil, "OUTPOST_", "config"); err == nil || !strings.Contains(err.Error(), "OUTPOST_WINDOW") || !strings.Contains(err.Error(), "from 1 to 1024") {
		t.Errorf("environment: %v", err)
	}
	os.Unsetenv("OUTPOST_WINDOW")
	cfg := filepath.Join(t.TempDir(), "edge.conf")
	_ = os.WriteFile(cfg, []byte("ledger-quota = -1GiB\n"), 0o600)
	fs, _, _, _, _ = newSet()
	if err := flagenv.Parse(fs, []string{"--config", cfg}, "OUTPOST_", "config"); err == nil || !strings.Contains(err.Error(), `ledger-quota = "-1GiB"`) || !strings.Contains(err.Error(), "at least 1B") {
		t.Errorf("config file: %v", err)
	}
}
