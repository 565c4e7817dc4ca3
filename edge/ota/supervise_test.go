//go:build unix

package ota_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/poll"
)

const fakeEnv = "OUTPOST_FAKE_EDGE"

// TestFakeEdge is a release under test: the test binary run by a release
// script with a fault switch in OUTPOST_FAKE_EDGE. It serves /healthz on a
// loopback port it writes to OUTPOST_FAKE_ADDR_FILE.
func TestFakeEdge(t *testing.T) {
	mode := os.Getenv(fakeEnv)
	if mode == "" {
		t.Skip("a release run by the supervisor tests")
	}
	if mode == "panic" {
		panic("fault switch: panic at start")
	}
	if mode == "hang" {
		select {} // never ready; SIGTERM ends it
	}
	var probes atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		n := probes.Add(1)
		switch {
		case mode == "late-fail" && n > 5:
			http.Error(w, "outbox write failed", http.StatusServiceUnavailable)
		case mode == "exit-early" && n > 3:
			os.Exit(0)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	file := os.Getenv("OUTPOST_FAKE_ADDR_FILE")
	if f, err := os.OpenFile(file+".starts", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
		fmt.Fprintln(f, os.Getpid()) // one line per start, for the restart tests
		f.Close()
	}
	tmp := file + ".tmp"
	os.WriteFile(tmp, []byte(ln.Addr().String()), 0o644)
	os.Rename(tmp, file)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go http.Serve(ln, nil)
	<-term
	os.Exit(0)
}

// fakeRelease is a verified release script that runs the test binary in
// mode.
func fakeRelease(t *testing.T, dir, version string, counter uint64, mode string) (string, firmware.Target) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(fmt.Sprintf("#!/bin/sh\nOUTPOST_FAKE_EDGE=%s OUTPOST_FAKE_ADDR_FILE=%s exec '%s' -test.run='^TestFakeEdge$' -test.count=1\n",
		mode, filepath.Join(dir, "addr-"+version), exe))
	p := filepath.Join(t.TempDir(), "edge")
	if err := os.WriteFile(p, body, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	return p, firmware.Target{Name: "edge-" + version, Length: int64(len(body)), Hashes: map[string][]byte{"sha256": sum[:]},
		Custom: firmware.Custom{Version: version, Release: counter, Channel: "stable"}}
}

type recorder struct {
	mu     sync.Mutex
	events []ota.Event
}

func (r *recorder) add(e ota.Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }

func (r *recorder) find(kind string) (ota.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind {
			return e, true
		}
	}
	return ota.Event{}, false
}

// supervised is 1.0.0 committed and good, 1.1.0 installed in mode, and a
// supervisor (not yet running) with short probation times.
func supervised(t *testing.T, mode string) (*ota.Supervisor, *recorder) {
	t.Helper()
	dir := t.TempDir()
	l := &ota.Layout{Dir: filepath.Join(dir, "ota")}
	st, err := ota.OpenState(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	src, tg := fakeRelease(t, dir, "1.0.0", 1, "good")
	if err := l.Install(src, tg, ota.InstallOptions{Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Commit(st); err != nil {
		t.Fatal(err)
	}
	src, tg = fakeRelease(t, dir, "1.1.0", 2, mode)
	if err := l.Install(src, tg, ota.InstallOptions{Probation: time.Hour}); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	client := &http.Client{Timeout: time.Second}
	return &ota.Supervisor{
		Layout: l, State: st,
		Health: func(ctx context.Context) error {
			cur, _ := l.Current()
			addr, err := os.ReadFile(filepath.Join(dir, "addr-"+cur))
			if err != nil {
				return fmt.Errorf("not listening yet")
			}
			resp, err := client.Get("http://" + string(addr) + "/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s", resp.Status)
			}
			return nil
		},
		Probation: 300 * time.Millisecond, ProbeEvery: 20 * time.Millisecond,
		// Generous: a good release must never miss it on a loaded machine;
		// the hang case sets its own.
		ReadyTimeout: 30 * time.Second, StopTimeout: 5 * time.Second,
		OnEvent: rec.add,
		Stdout:  io.Discard, Stderr: io.Discard, // a release's own test output is not ours
	}, rec
}

func runSupervisor(t *testing.T, s *ota.Supervisor) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("supervisor: %v", err)
		}
	})
}

func TestSuperviseCommitsHealthyRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes")
	}
	s, rec := supervised(t, "good")
	runSupervisor(t, s)
	poll.Until(t, 30*time.Second, "1.1.0 committed", func() bool {
		_, ok := rec.find("ota.committed")
		return ok
	})
	if cur, _ := s.Layout.Current(); cur != "1.1.0" || s.State.Floor() != 2 {
		t.Fatalf("current %s, floor %d after the commit", cur, s.State.Floor())
	}
	if p, _ := s.Layout.Pending(); p != nil {
		t.Fatalf("still pending: %+v", p)
	}
	// The release it committed is watched like any committed one: the
	// next install is picked up.
	src, tg := fakeRelease(t, filepath.Dir(s.Layout.Dir), "1.2.0", 3, "good")
	if err := s.Layout.Install(src, tg, ota.InstallOptions{Probation: time.Hour}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "1.2.0 committed", func() bool { return s.State.Floor() == 3 })
}

// An install while a committed release runs (edge ota install from a
// shell) is picked up: the old one is stopped and the new one goes on
// probation, and commits.
func TestSuperviseTakesNewInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes")
	}
	s, rec := supervised(t, "good")
	if _, err := s.Layout.Rollback("make room: start from 1.0.0 committed"); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(s.Layout.Dir, "known-bad.json"))
	runSupervisor(t, s)
	poll.Until(t, 30*time.Second, "1.0.0 healthy", func() bool { return s.Health(context.Background()) == nil })
	src, tg := fakeRelease(t, filepath.Dir(s.Layout.Dir), "1.2.0", 3, "good")
	if err := s.Layout.Install(src, tg, ota.InstallOptions{Probation: time.Hour}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "1.2.0 committed", func() bool {
		ev, ok := rec.find("ota.committed")
		return ok && ev.Version == "1.2.0"
	})
	if s.State.Floor() != 3 {
		t.Fatalf("floor %d", s.State.Floor())
	}
}

// The failure matrix: each bad release ends back on 1.0.0, pinned as known
// bad, with a rollback event that says why.
func TestSuperviseRollsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes")
	}
	for mode, reason := range map[string]string{
		"panic":     "exited before ready",
		"hang":      "not ready within",
		"late-fail": "health check failed during probation",
		// It exits as it answers a probe: the supervisor may see the exit
		// or the failed probe first; either way it is "during probation".
		"exit-early": "during probation",
	} {
		t.Run(mode, func(t *testing.T) {
			s, rec := supervised(t, mode)
			// No bad release can pass by a slow clock: the healthy window
			// is longer than the test, and the faults count probes.
			s.Probation = time.Hour
			if mode == "hang" {
				s.ReadyTimeout = time.Second
			}
			runSupervisor(t, s)
			poll.Until(t, 30*time.Second, "a rollback", func() bool {
				_, ok := rec.find("ota.rolled_back")
				return ok
			})
			ev, _ := rec.find("ota.rolled_back")
			if ev.Version != "1.1.0" || !strings.Contains(ev.Reason, reason) {
				t.Fatalf("rollback event %+v, want 1.1.0 for %q", ev, reason)
			}
			if cur, _ := s.Layout.Current(); cur != "1.0.0" {
				t.Fatalf("current %s after rollback", cur)
			}
			bad, _ := s.Layout.KnownBad()
			if _, ok := bad["1.1.0"]; !ok || s.State.Floor() != 1 {
				t.Fatalf("known bad %v, floor %d", bad, s.State.Floor())
			}
			if _, ok := rec.find("ota.committed"); ok {
				t.Fatal("a bad release was committed")
			}
		})
	}
}

// A release still not committed at its pending deadline (here: its healthy
// window is longer than the deadline allows) is rolled back while it runs.
func TestSuperviseDeadlineDuringProbation(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes")
	}
	s, rec := supervised(t, "good")
	p, _ := s.Layout.Pending()
	p.Deadline = time.Now().Add(time.Second)
	if err := s.Layout.WritePending(p); err != nil {
		t.Fatal(err)
	}
	s.Probation = time.Hour
	runSupervisor(t, s)
	poll.Until(t, 30*time.Second, "a rollback", func() bool {
		_, ok := rec.find("ota.rolled_back")
		return ok
	})
	if ev, _ := rec.find("ota.rolled_back"); !strings.Contains(ev.Reason, "deadline") {
		t.Fatalf("rollback %+v, want for the deadline", ev)
	}
	if cur, _ := s.Layout.Current(); cur != "1.0.0" {
		t.Fatalf("current %s", cur)
	}
}

func TestGuard(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	setup := func(t *testing.T) (*ota.Layout, *firmware.State) {
		l, st := installed(t)
		l.Now = func() time.Time { return now }
		src, tg := release(t, "1.1.0", 2)
		if err := l.Install(src, tg, ota.InstallOptions{Probation: 10 * time.Minute}); err != nil {
			t.Fatal(err)
		}
		return l, st
	}
	t.Run("counts starts durably", func(t *testing.T) {
		l, st := setup(t)
		for i := 1; i <= 3; i++ {
			s, err := ota.Guard(l, st, now, 3)
			if err != nil || s.Version != "1.1.0" || s.Pending == nil {
				t.Fatalf("start %d: %+v %v", i, s, err)
			}
			if p, _ := l.Pending(); p.Attempts != i {
				t.Fatalf("attempts %d after start %d", p.Attempts, i)
			}
		}
		// A fourth start (three reboots during probation): rolled back.
		s, err := ota.Guard(l, st, now, 3)
		if err != nil || s.Version != "1.0.0" || s.RolledBack == nil || !strings.Contains(s.Reason, "3 starts") {
			t.Fatalf("after 3 starts: %+v %v", s, err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		l, st := setup(t)
		s, err := ota.Guard(l, st, now.Add(11*time.Minute), 3)
		if err != nil || s.Version != "1.0.0" || !strings.Contains(s.Reason, "deadline") {
			t.Fatalf("%+v %v", s, err)
		}
	})
	t.Run("committed is never rolled back", func(t *testing.T) {
		l, st := setup(t)
		if _, err := l.Commit(st); err != nil {
			t.Fatal(err)
		}
		for range 5 { // reboots and power cuts
			s, err := ota.Guard(l, st, now.Add(24*time.Hour), 3)
			if err != nil || s.Version != "1.1.0" || s.Pending != nil || s.RolledBack != nil {
				t.Fatalf("%+v %v", s, err)
			}
		}
	})
}

// TestSuperviseWatchdogRestartsCommitted: a committed release that turns
// unhealthy for good (late-fail: healthy 5 probes, then 503 at every
// probe, as a hung outbox would be) is stopped by the supervisor's
// watchdog and restarted, over and over, and never rolled back: the
// committed release stays current, the floor where it was, nothing known
// bad, no rollback event.
func TestSuperviseWatchdogRestartsCommitted(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes")
	}
	dir := t.TempDir()
	l := &ota.Layout{Dir: filepath.Join(dir, "ota")}
	st, err := ota.OpenState(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	src, tg := fakeRelease(t, dir, "1.0.0", 1, "late-fail")
	if err := l.Install(src, tg, ota.InstallOptions{Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Commit(st); err != nil {
		t.Fatal(err)
	}
	s, rec := supervised(t, "good") // for its Health and timings
	addrs := filepath.Join(dir, "addr-1.0.0")
	client := &http.Client{Timeout: time.Second}
	s.Layout, s.State = l, st
	s.Health = func(ctx context.Context) error {
		addr, err := os.ReadFile(addrs)
		if err != nil {
			return fmt.Errorf("not listening yet")
		}
		resp, err := client.Get("http://" + string(addr) + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	}
	s.WatchdogTimeout, s.RestartBackoff = 200*time.Millisecond, 10*time.Millisecond
	runSupervisor(t, s)
	poll.Until(t, 60*time.Second, "the watchdog restarting 1.0.0 twice", func() bool {
		b, _ := os.ReadFile(addrs + ".starts")
		return strings.Count(string(b), "\n") >= 3
	})
	if cur, _ := l.Current(); cur != "1.0.0" || st.Floor() != 1 {
		t.Fatalf("current %s, floor %d after watchdog restarts", cur, st.Floor())
	}
	if bad, _ := l.KnownBad(); len(bad) != 0 {
		t.Fatalf("known bad %v: a committed release was pinned", bad)
	}
	if ev, ok := rec.find("ota.rolled_back"); ok {
		t.Fatalf("a committed release was rolled back: %+v", ev)
	}
}
