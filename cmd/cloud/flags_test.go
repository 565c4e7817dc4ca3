package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestServeFlagValues: bad numbers stop `cloud serve` and the admin
// commands with exit status 2, naming the flag, the value and the range;
// a stray argument is an error.
func TestServeFlagValues(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"serve", "--workers", "0"}, []string{"-workers", `"0"`, "from 1 to 256"}},
		{[]string{"serve", "--max-batch", "-1"}, []string{"-max-batch", "from 1 to 4096"}},
		{[]string{"serve", "--gap-wait", "0"}, []string{"-gap-wait", "at least 1ms"}},
		{[]string{"serve", "--drain-timeout", "-1s"}, []string{"-drain-timeout", "at least 1ms"}},
		{[]string{"serve", "--nats-replicas", "7"}, []string{"-nats-replicas", "from 1 to 5"}},
		{[]string{"serve", "--nats-ack-wait", "fast"}, []string{"-nats-ack-wait", `"fast"`, "duration"}},
		{[]string{"serve", "--audit-every", "1s"}, []string{"-audit-every", "at least 1m0s", "0 for no scheduled audit"}},
		{[]string{"serve", "--dev-pg-port", "70000"}, []string{"-dev-pg-port", "from 1 to 65535"}},
		{[]string{"serve", "now"}, []string{`unexpected argument "now"`}},
		{[]string{"tokens", "create", "--ttl", "0"}, []string{"-ttl", "at least 1m"}},
	} {
		var out, errb bytes.Buffer
		if code := Run(c.args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s", c.args, code, errb.String())
			continue
		}
		msg := errb.String()
		msg = msg[strings.LastIndex(msg, "cloud: "):]
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%q: %q does not say %q", c.args, msg, w)
			}
		}
	}
}

// TestNATSStreamFlags: the stream's byte cap takes units, and neither cap
// takes zero.
func TestNATSStreamFlags(t *testing.T) {
	m := NewMain(&bytes.Buffer{}, &bytes.Buffer{})
	if err := m.ParseFlags([]string{"--nats-max-bytes", "2GiB", "--nats-max-per-edge", "32"}); err != nil {
		t.Fatal(err)
	}
	if c := m.Config.NATS; c.MaxBytes != 2<<30 || c.MaxPerEdge != 32 {
		t.Fatalf("got %d, %d", c.MaxBytes, c.MaxPerEdge)
	}
	for _, args := range [][]string{{"--nats-max-bytes", "0"}, {"--nats-max-per-edge", "0"}, {"--nats-max-bytes", "-1GiB"}} {
		m := NewMain(&bytes.Buffer{}, &bytes.Buffer{})
		if err := m.ParseFlags(args); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%q: %v", args, err)
		}
	}
}

// TestAdminFlags: each admin command's --help lists only its own flags.
func TestAdminFlags(t *testing.T) {
	for _, c := range []struct {
		cmd      []string
		has, not []string
	}{
		{[]string{"tokens", "create"}, []string{"--edge", "--ttl", "--admin", "--name", "--role"}, []string{"--id", "--public-key", "--json"}},
		{[]string{"edges", "add"}, []string{"--id", "--public-key", "--database-url"}, []string{"--ttl", "--admin", "--json"}},
		{[]string{"edges", "revoke"}, []string{"--id"}, []string{"--public-key", "--ttl"}},
		{[]string{"edges", "revoke-key"}, []string{"--id", "--kid"}, []string{"--public-key", "--ttl"}},
		{[]string{"edges", "list"}, []string{"--json"}, []string{"--id", "--ttl"}},
		{[]string{"migrate"}, []string{"--database-url"}, []string{"--id", "--json", "--ttl"}},
	} {
		var out, errb bytes.Buffer
		if code := Run(append(c.cmd, "--help"), &out, &errb); code != 0 {
			t.Errorf("%v --help: exit %d: %s", c.cmd, code, errb.String())
		}
		help := errb.String()
		for _, f := range c.has {
			if !strings.Contains(help, "  "+f+" ") {
				t.Errorf("%v --help lacks %s", c.cmd, f)
			}
		}
		for _, f := range c.not {
			if strings.Contains(help, "  "+f+" ") {
				t.Errorf("%v --help lists %s, which is not its flag", c.cmd, f)
			}
		}
	}
}
