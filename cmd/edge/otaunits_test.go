//go:build linux

package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// otaUnits are the two OTA units (deploy/systemd), each with directives
// that OTA relies on: a release that hangs must be killed, one that panics
// restarted forever (so the guard can count and roll back), and the guard
// must be the last committed release's binary, never the one on probation.
var otaUnits = map[string][]string{
	"outpost-edge-ota.service": {
		"Type=notify",
		"NotifyAccess=main",
		"WatchdogSec=",
		"TimeoutStartSec=",
		"Restart=always",
		"StartLimitIntervalSec=0",
		"ExecStartPre=/var/lib/outpost-edge/ota/committed/edge ota guard",
		"ExecStart=/var/lib/outpost-edge/ota/current/edge run",
		"Environment=OUTPOST_OTA_PROBATION=",
		"Conflicts=outpost-edge.service outpost-edge-supervised.service",
	},
	"outpost-edge-supervised.service": {
		"ExecStart=/usr/local/bin/edge supervise",
		"KillMode=mixed",
		"Restart=always",
		"Conflicts=outpost-edge.service outpost-edge-ota.service",
	},
}

// TestOTASystemdUnitsVerify checks the two OTA units with
// `systemd-analyze verify` (skipped, saying so, when it is not installed).
// verify refuses a unit whose Exec paths do not exist, and the packaged
// paths (/usr/local/bin/edge, /var/lib/outpost-edge/ota/current/edge and
// .../committed/edge) do not exist on a build machine, so each unit is copied into a temp dir
// with those paths rewritten to a real executable file there; nothing
// else is changed. verify exits 0 on an unknown key or a bad value (it
// only warns), so any line it prints about the unit fails the test too.
func TestOTASystemdUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the OTA units are not verified")
	}
	for name, want := range otaUnits {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "systemd", name))
			if err != nil {
				t.Fatal(err)
			}
			unit := string(b)
			for _, d := range want {
				if !hasDirective(unit, d) {
					t.Errorf("%s has no line starting %q", name, d)
				}
			}
			if out, ok := verifyUnit(t, sa, name, unit); !ok {
				t.Fatalf("systemd-analyze verify %s:\n%s", name, out)
			}
		})
	}
	// The check can fail: a misspelled key and a bad value are caught.
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "systemd", "outpost-edge-ota.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ from, to string }{{"\nWatchdogSec=", "\nWatchdogSek="}, {"\nType=notify", "\nType=notifyy"}} {
		unit := strings.Replace(string(b), bad.from, bad.to, 1)
		if out, ok := verifyUnit(t, sa, "outpost-edge-ota.service", unit); ok {
			t.Errorf("a unit with %q passed verify:\n%s", bad.to, out)
		}
	}
}

func hasDirective(unit, prefix string) bool {
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		if strings.HasPrefix(strings.TrimSpace(sc.Text()), prefix) {
			return true
		}
	}
	return false
}

// verifyUnit writes unit into a temp dir as name, with the packaged edge
// paths rewritten to an executable file there, and runs systemd-analyze
// verify on it: ok when it exits 0 and says nothing about the unit.
func verifyUnit(t *testing.T, sa, name, unit string) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	edge := filepath.Join(dir, "edge")
	if err := os.WriteFile(edge, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit = strings.NewReplacer(
		"/var/lib/outpost-edge/ota/current/edge", edge,
		"/var/lib/outpost-edge/ota/committed/edge", edge,
		"/usr/local/bin/edge", edge,
	).Replace(unit)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, "verify", path)
	// Plain lines, no colour codes.
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	var about []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, name) {
			about = append(about, line)
		}
	}
	return string(out), err == nil && len(about) == 0
}
