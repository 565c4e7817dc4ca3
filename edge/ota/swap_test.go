package ota_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
)

// release is a verified download of a fake edge binary for version v.
func release(t *testing.T, v string, counter uint64) (string, firmware.Target) {
	t.Helper()
	body := []byte("#!/bin/sh\necho edge " + v + "\n")
	sum := sha256.Sum256(body)
	p := filepath.Join(t.TempDir(), "edge-"+v)
	if err := os.WriteFile(p, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, firmware.Target{Name: "edge-" + v, Length: int64(len(body)), Hashes: map[string][]byte{"sha256": sum[:]},
		Custom: firmware.Custom{Version: v, Release: counter, Channel: "stable"}}
}

func openState(t *testing.T) *firmware.State {
	t.Helper()
	st, err := ota.OpenState(filepath.Join(t.TempDir(), "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// installed is a layout with 1.0.0 installed and committed.
func installed(t *testing.T) (*ota.Layout, *firmware.State) {
	t.Helper()
	l := &ota.Layout{Dir: filepath.Join(t.TempDir(), "ota")}
	src, tg := release(t, "1.0.0", 1)
	if err := l.Install(src, tg, ota.InstallOptions{Mode: 0o750}); err != nil {
		t.Fatal(err)
	}
	st := openState(t)
	if _, err := l.Commit(st); err != nil {
		t.Fatal(err)
	}
	return l, st
}

func mustCurrent(t *testing.T, l *ota.Layout, want string) {
	t.Helper()
	cur, err := l.Current()
	if err != nil || cur != want {
		t.Fatalf("current %q (%v), want %q", cur, err, want)
	}
	b, err := os.ReadFile(l.CurrentBinary())
	if err != nil || !bytes.Contains(b, []byte("echo edge "+want+"\n")) {
		t.Fatalf("current binary %q (%v), want release %s", b, err, want)
	}
}

func TestInstallSwitches(t *testing.T) {
	l, st := installed(t)
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	l.Now = func() time.Time { return now }
	src, tg := release(t, "1.1.0", 2)
	if err := l.Install(src, tg, ota.InstallOptions{Probation: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	mustCurrent(t, l, "1.1.0")
	if prev, _ := l.Previous(); prev != "1.0.0" {
		t.Fatalf("previous %q", prev)
	}
	fi, err := os.Stat(l.Binary("1.1.0"))
	if err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("new binary mode %v (%v), want the current one's 0750", fi.Mode(), err)
	}
	p, err := l.Pending()
	if err != nil || p == nil {
		t.Fatalf("pending %v %v", p, err)
	}
	want := ota.Pending{Target: "edge-1.1.0", Version: "1.1.0", Release: 2, Previous: "1.0.0", Deadline: now.Add(10 * time.Minute)}
	if *p != want {
		t.Fatalf("pending %+v, want %+v", *p, want)
	}
	// Nothing else installs during probation.
	src3, tg3 := release(t, "1.2.0", 3)
	if err := l.Install(src3, tg3, ota.InstallOptions{}); !errors.Is(err, ota.ErrBusy) {
		t.Fatalf("install during probation: %v", err)
	}
	if _, err := l.Commit(st); err != nil {
		t.Fatal(err)
	}
	if st.Floor() != 2 {
		t.Fatalf("floor %d after committing release 2", st.Floor())
	}
	if p, _ := l.Pending(); p != nil {
		t.Fatalf("pending after commit: %+v", p)
	}
}

func TestInstallRefusesTamperedSource(t *testing.T) {
	l, _ := installed(t)
	src, tg := release(t, "1.1.0", 2)
	os.WriteFile(src, []byte("#!/bin/sh\nrm -rf /\n"), 0o600) // changed after its download verified
	if err := l.Install(src, tg, ota.InstallOptions{}); !errors.Is(err, firmware.ErrArtifact) {
		t.Fatalf("got %v, want ErrArtifact", err)
	}
	mustCurrent(t, l, "1.0.0")
	if _, err := os.Stat(l.Binary("1.1.0")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a tampered binary was put in place: %v", err)
	}
	if p, _ := l.Pending(); p != nil {
		t.Fatalf("pending after a refused install: %+v", p)
	}
}

func TestRollbackPinsKnownBad(t *testing.T) {
	l, st := installed(t)
	src, tg := release(t, "1.1.0", 2)
	if err := l.Install(src, tg, ota.InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Rollback("panic at start"); err != nil {
		t.Fatal(err)
	}
	mustCurrent(t, l, "1.0.0")
	if st.Floor() != 1 {
		t.Fatalf("floor %d after a rollback", st.Floor())
	}
	if err := l.Install(src, tg, ota.InstallOptions{}); !errors.Is(err, ota.ErrKnownBad) {
		t.Fatalf("reinstalling a rolled-back version: %v", err)
	}
	if _, err := l.Rollback("again"); !errors.Is(err, ota.ErrNothingPending) {
		t.Fatalf("rollback with nothing pending: %v", err)
	}
}

func TestInstallSameVersionRefused(t *testing.T) {
	l, _ := installed(t)
	src, tg := release(t, "1.0.0", 1)
	if err := l.Install(src, tg, ota.InstallOptions{}); err == nil {
		t.Fatal("reinstalling the current version was accepted")
	}
}

// TestConcurrentInstallRefused: two installers on one updater directory at
// once (edge run's assigner, and `edge ota install` by hand, or two of
// them) must not both swap: the second, started while the first is between
// writing its binary and its pending record, is refused with ErrBusy.
// Without a lock both passed the "nothing on probation" check, and the
// first's pending record and previous link overwrote the second's install.
func TestConcurrentInstallRefused(t *testing.T) {
	l, _ := installed(t)
	srcA, tgA := release(t, "1.1.0", 2)
	srcB, tgB := release(t, "1.2.0", 3)
	other := &ota.Layout{Dir: l.Dir} // another process's view of the same directory
	var errB error
	ran := false
	ota.SetCrashHook(l, func(step string) {
		if step == "binary-written" && !ran {
			ran = true
			errB = other.Install(srcB, tgB, ota.InstallOptions{Probation: time.Hour})
		}
	})
	if err := l.Install(srcA, tgA, ota.InstallOptions{Probation: time.Hour}); err != nil {
		t.Fatalf("the first install: %v", err)
	}
	if !ran {
		t.Fatal("the hook did not run")
	}
	if !errors.Is(errB, ota.ErrBusy) {
		t.Fatalf("the install started during another: %v, want ErrBusy", errB)
	}
	mustCurrent(t, l, "1.1.0")
	if p, err := l.Pending(); err != nil || p == nil || p.Version != "1.1.0" || p.Previous != "1.0.0" {
		t.Fatalf("pending %+v (%v), want 1.1.0 over 1.0.0", p, err)
	}
}
