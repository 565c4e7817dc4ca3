package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunFlagValues: bad numbers stop `edge run` with exit status 2,
// naming the flag, the value and the accepted range; sizes take units.
func TestRunFlagValues(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--ledger-quota", "-5"}, []string{"-ledger-quota", `"-5"`, "at least 1B"}},
		{[]string{"--telemetry-quota", "0"}, []string{"-telemetry-quota", `"0"`, "at least 1B"}},
		{[]string{"--ledger-quota", "1 gigabyte"}, []string{"-ledger-quota", "256MiB"}},
		{[]string{"--dedup-window", "0s"}, []string{"-dedup-window", "at least 1s"}},
		{[]string{"--dedup-window", "-24h"}, []string{"-dedup-window", "at least 1s"}},
		{[]string{"--retain", "-1h"}, []string{"-retain", "at least 0s"}},
		{[]string{"--window", "0"}, []string{"-window", "from 1 to 1024"}},
		{[]string{"--window", "eight"}, []string{"-window", `"eight"`, "whole number"}},
		{[]string{"--segment-bytes", "4MiB"}, []string{"-segment-bytes", "from 4KiB to 1MiB"}},
		{[]string{"--max-file-bytes", "-1"}, []string{"-max-file-bytes", "or 0 for no cap"}},
		{[]string{"--ack-timeout", "0"}, []string{"-ack-timeout", "at least 100ms"}},
		{[]string{"--reconnect-max", "soon"}, []string{"-reconnect-max", `"soon"`, "duration"}},
		{[]string{"--data-dir", "x", "extra"}, []string{`unexpected argument "extra"`}},
	} {
		var out, errb bytes.Buffer
		code := Run(append([]string{"run"}, c.args...), &out, &errb)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s", c.args, code, errb.String())
			continue
		}
		msg := errb.String()
		msg = msg[strings.LastIndex(msg, "edge: "):] // the summary after the usage text
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%q: %q does not say %q", c.args, msg, w)
			}
		}
	}
	m := NewMain(&bytes.Buffer{}, &bytes.Buffer{})
	if err := m.ParseFlags([]string{"--ledger-quota", "1GiB", "--telemetry-quota", "256MiB", "--segment-bytes", "128KiB",
		"--max-file-bytes", "4GiB", "--rate-bytes", "64KiB"}); err != nil {
		t.Fatal(err)
	}
	if c := m.Config; c.LedgerQuota != 1<<30 || c.TelemetryQuota != 256<<20 || c.SegmentBytes != 128<<10 || c.MaxFileBytes != 4<<30 || c.RateBytes != 64<<10 {
		t.Fatalf("sizes with units: %+v", c)
	}
}

// TestToolFlags: each tool's --help lists only its own flags, and a stray
// argument is an error.
func TestToolFlags(t *testing.T) {
	for _, c := range []struct {
		cmd      []string
		has, not []string
	}{
		{[]string{"devices", "add"}, []string{"--id", "--secret", "--devices", "--data-dir"}, []string{"--from", "--token", "--status-listen", "--json"}},
		{[]string{"devices", "list"}, []string{"--devices", "--json"}, []string{"--id", "--secret", "--from"}},
		{[]string{"outbox", "export"}, []string{"--from", "--to", "--data-dir"}, []string{"--id", "--cloud", "--json"}},
		{[]string{"enroll"}, []string{"--cloud", "--token"}, []string{"--id", "--from", "--status-listen"}},
		{[]string{"status"}, []string{"--status-listen", "--json"}, []string{"--data-dir", "--id", "--from"}},
	} {
		var out, errb bytes.Buffer
		if code := Run(append(c.cmd, "--help"), &out, &errb); code != 0 {
			t.Errorf("%v --help: exit %d", c.cmd, code)
		}
		help := errb.String()
		for _, f := range c.has {
			if !strings.Contains(help, "  "+f+" ") {
				t.Errorf("%v --help lacks %s:\n%s", c.cmd, f, help)
			}
		}
		for _, f := range c.not {
			if strings.Contains(help, "  "+f+" ") {
				t.Errorf("%v --help lists %s, which is not its flag", c.cmd, f)
			}
		}
	}
	var out, errb bytes.Buffer
	if code := Run([]string{"devices", "list", "--data-dir", t.TempDir(), "till-1"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unexpected argument "till-1"`) {
		t.Fatalf("stray argument: exit %d: %s", code, errb.String())
	}
}

// TestOutboxToolsWithoutOutbox: with no outbox the tools say so (not
// "first bad seq 0", which reads like corruption), and create nothing.
func TestOutboxToolsWithoutOutbox(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "edge")
	for _, tool := range []string{"verify", "inspect", "export"} {
		var out, errb bytes.Buffer
		code := Run([]string{"outbox", tool, "--data-dir", dir}, &out, &errb)
		if code != 1 || !strings.Contains(errb.String(), "no outbox at") || strings.Contains(errb.String()+out.String(), "bad seq") {
			t.Errorf("outbox %s with no outbox: exit %d: %s%s", tool, code, out.String(), errb.String())
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the tools created %s: %v", dir, err)
	}
}

// TestOutboxCompactCommand: `edge outbox compact` on a stopped edge's
// outbox reports the sizes and leaves an outbox that verifies.
func TestOutboxCompactCommand(t *testing.T) {
	dir := t.TempDir()
	m := NewMain(&bytes.Buffer{}, &bytes.Buffer{})
	if err := m.ParseFlags([]string{"--data-dir", dir, "--edge-id", "shop-1", "--mqtt-listen", "127.0.0.1:0",
		"--http-listen", "", "--status-listen", "127.0.0.1:0", "--log-level", "error"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	<-m.Ready
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := Run([]string{"outbox", "compact", "--data-dir", dir}, &out, &errb); code != 0 || !strings.Contains(out.String(), "bytes before") {
		t.Fatalf("outbox compact: exit %d: %s%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := Run([]string{"outbox", "verify", "--data-dir", dir}, &out, &errb); code != 0 {
		t.Fatalf("verify after compact: exit %d: %s%s", code, out.String(), errb.String())
	}
}
