package ota_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	_ "time/tzdata" // Asia/Tokyo without the system's zoneinfo

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

type assignRig struct {
	cloud *protocol.Signer
	gate  *ota.CommandGate
	store *ota.Assignments
	seq   uint64
}

func newAssignRig(t *testing.T) *assignRig {
	dir := t.TempDir()
	cloud := protocoltest.NewSigner(t)
	keys := protocol.NewKeyMap(cloud.Public())
	sp := ota.Spool{Path: filepath.Join(dir, "events.jsonl")}
	st := &ota.Assignments{Dir: dir, Edge: "shop-1", CloudKeys: keys, Spool: sp, Logger: slog.New(slog.DiscardHandler)}
	g := &ota.CommandGate{Path: filepath.Join(dir, "commands.json"), Edge: "shop-1", CloudKeys: keys, Spool: sp, Keep: st.Keep}
	return &assignRig{cloud: cloud, gate: g, store: st}
}

func (r *assignRig) send(t *testing.T, kind string, body []byte) uint64 {
	t.Helper()
	r.seq++
	msg := r.cloud.SignCommand(protocol.Command{Edge: "shop-1", Seq: r.seq, Expires: time.Now().Add(time.Hour).UnixMilli(), Kind: kind, Body: body})
	if _, err := r.gate.Accept(msg); err != nil {
		t.Fatal(err)
	}
	r.store.Notify()
	return r.seq
}

func (r *assignRig) assign(t *testing.T, a protocol.Assignment) uint64 {
	t.Helper()
	if a.Channel == "" {
		a.Channel = "stable"
	}
	if a.NotAfter == 0 {
		a.NotAfter = time.Now().Add(time.Hour).UnixMilli()
	}
	return r.send(t, protocol.CommandAssign, protocol.EncodeAssignment(a))
}

func (r *assignRig) state(t *testing.T) *ota.Assigned {
	t.Helper()
	a, err := r.store.Current()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func waitState(t *testing.T, r *assignRig, state string) *ota.Assigned {
	t.Helper()
	var a *ota.Assigned
	// In virtual time (synctest) a step is a minute of the bubble's clock.
	step, deadline := time.Millisecond, time.Now().Add(60*time.Second)
	if virtual {
		step, deadline = time.Minute, time.Now().Add(72*time.Hour)
	}
	for {
		if virtual {
			synctest.Wait()
		}
		if a = r.state(t); a != nil && a.State == state {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("assignment %+v, want state %s", a, state)
		}
		time.Sleep(step)
	}
}

// virtual is set while a test runs in a synctest bubble.
var virtual bool

// TestAssignmentsKeepAndFor: an accepted ota.assign is kept (verified
// again on every read) and is the valid assignment for its target only; a
// malformed one is accepted as a command but refused with an event; a
// newer one replaces it; an ota.cancel for its rollout drops it with
// ota.cancelled, but not once its install has begun; a tampered file is
// no assignment at all.
func TestAssignmentsKeepAndFor(t *testing.T) {
	r := newAssignRig(t)
	if _, err := r.store.For("edge-1.1.0"); !errors.Is(err, ota.ErrNoAssignment) || !strings.Contains(err.Error(), "holds no assignment") {
		t.Fatalf("no assignment yet: %v", err)
	}
	r.send(t, protocol.CommandAssign, []byte(`{"rollout":"r-1","extra":1}`))
	if a := r.state(t); a != nil {
		t.Fatalf("a malformed assignment was kept: %+v", a)
	}
	seq := r.assign(t, protocol.Assignment{Rollout: "r-1", Target: "edge-1.1.0", Version: "1.1.0"})
	a, err := r.store.For("edge-1.1.0")
	if err != nil || a.Seq != seq || a.State != ota.AssignWaiting || a.Version != "1.1.0" {
		t.Fatalf("for edge-1.1.0: %+v %v", a, err)
	}
	if _, err := r.store.For("edge-6.6.6"); !errors.Is(err, ota.ErrNoAssignment) || !strings.Contains(err.Error(), "is for edge-1.1.0") {
		t.Fatalf("another target: %v", err)
	}
	// A cancel of another rollout changes nothing; of this one, drops it.
	r.send(t, protocol.CommandCancel, protocol.EncodeCancel(protocol.Cancel{Rollout: "r-9"}))
	if a := r.state(t); a.State != ota.AssignWaiting {
		t.Fatalf("after a foreign cancel: %+v", a)
	}
	r.send(t, protocol.CommandCancel, protocol.EncodeCancel(protocol.Cancel{Rollout: "r-1", Reason: "paused: 2 failures"}))
	if a := r.state(t); a.State != ota.AssignCancelled || !strings.Contains(a.Reason, "paused: 2 failures") {
		t.Fatalf("after the cancel: %+v", a)
	}
	if _, err := r.store.For("edge-1.1.0"); !errors.Is(err, ota.ErrNoAssignment) || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("cancelled: %v", err)
	}
	// A newer assignment replaces it; once installing, a cancel is too late.
	seq = r.assign(t, protocol.Assignment{Rollout: "r-2", Target: "edge-1.2.0", Version: "1.2.0"})
	if err := r.store.Set(seq-1, ota.AssignInstalling, ""); !errors.Is(err, ota.ErrSuperseded) {
		t.Fatalf("set on a replaced assignment: %v", err)
	}
	if err := r.store.Set(seq, ota.AssignInstalling, ""); err != nil {
		t.Fatal(err)
	}
	r.send(t, protocol.CommandCancel, protocol.EncodeCancel(protocol.Cancel{Rollout: "r-2"}))
	if a := r.state(t); a.State != ota.AssignInstalling || a.Target != "edge-1.2.0" {
		t.Fatalf("a cancel during the install: %+v", a)
	}
	// An assignment past its not_after is no longer valid.
	r.assign(t, protocol.Assignment{Rollout: "r-3", Target: "edge-1.3.0", Version: "1.3.0", NotAfter: time.Now().Add(-time.Minute).UnixMilli()})
	if _, err := r.store.For("edge-1.3.0"); !errors.Is(err, ota.ErrNoAssignment) || !strings.Contains(err.Error(), "ended at") {
		t.Fatalf("past not_after: %v", err)
	}

	var kinds []string
	for _, e := range spooled(t, r.gate.Spool) {
		kinds = append(kinds, e.Kind)
		if e.Kind == "ota.refused" && !strings.Contains(e.Reason, "unknown field") {
			t.Errorf("refusal of the malformed assignment: %q", e.Reason)
		}
	}
	// Keep's events come before the command's acknowledgement.
	want := "ota.refused,ota.command_accepted,ota.command_accepted,ota.command_accepted,ota.cancelled,ota.command_accepted,ota.command_accepted,ota.command_accepted,ota.command_accepted"
	if strings.Join(kinds, ",") != want {
		t.Fatalf("events %v\nwant %s", kinds, want)
	}

	// The file is verified on every read: a rewritten target is refused.
	path := filepath.Join(r.store.Dir, ota.AssignmentFile)
	b, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(b), `"command": "`, `"command": "AAAA`, 1)), 0o600)
	if _, err := r.store.For("edge-1.3.0"); !errors.Is(err, ota.ErrNoAssignment) {
		t.Fatalf("tampered file: %v", err)
	}
}

// fakeInstall scripts Assigner.Install: logic only (the real one is
// cmd/edge's, tested end to end there).
type fakeInstall struct {
	mu    sync.Mutex
	calls []string
	errs  []error // returned in turn; nil after
}

func (f *fakeInstall) install(ctx context.Context, a *ota.Assigned, set func(state, reason string) error) error {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%s@%s", a.Target, time.Now().UTC().Format("15:04")))
	var err error
	if len(f.errs) > 0 {
		err, f.errs = f.errs[0], f.errs[1:]
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if err := set(ota.AssignInstalling, ""); err != nil {
		return err
	}
	return set(ota.AssignInstalled, "on probation")
}

func (f *fakeInstall) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// TestAssignerWindowRetryAndResume (virtual time): an assignment waits for
// its window in its zone, an install that says ErrRetry is tried again,
// one that refuses is refused with ota.refused, one past not_after is
// refused without an install, a cancel stops the wait, and a new Assigner
// (a restart) takes up what was persisted.
func TestAssignerWindowRetryAndResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		virtual = true
		defer func() { virtual = false }()
		r := newAssignRig(t)
		// The bubble's clock starts at midnight UTC, 2000-01-01: the
		// window 02:00-03:00 in Asia/Tokyo (UTC+9) opens at 17:00 UTC.
		fi := &fakeInstall{errs: []error{fmt.Errorf("repository: connection refused: %w", ota.ErrRetry)}}
		ctx, cancel := context.WithCancel(context.Background())
		w := &ota.Assigner{Store: r.store, Install: fi.install, RetryMin: time.Minute, Logger: slog.New(slog.DiscardHandler)}
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		r.assign(t, protocol.Assignment{Rollout: "r-1", Target: "edge-1.1.0", Version: "1.1.0", Window: "02:00-03:00", Zone: "Asia/Tokyo",
			NotAfter: time.Now().Add(48 * time.Hour).UnixMilli()})
		a := waitState(t, r, ota.AssignWaiting)
		if !strings.Contains(a.Reason, "waiting for the window 02:00-03:00 (Asia/Tokyo)") || len(fi.list()) != 0 {
			t.Fatalf("before the window: %+v, installs %v", a, fi.list())
		}
		a = waitState(t, r, ota.AssignInstalled)
		if got := fi.list(); len(got) != 2 || got[0] != "edge-1.1.0@17:00" || !strings.HasPrefix(got[1], "edge-1.1.0@17:0") {
			t.Fatalf("installs %v, want one at the window's opening and one retry after it", got)
		}

		// Refused by the install; past not_after without one.
		fi.errs = []error{errors.New("target edge-1.2.0 is not in the signed targets")}
		r.assign(t, protocol.Assignment{Rollout: "r-2", Target: "edge-1.2.0", Version: "1.2.0"})
		if a := waitState(t, r, ota.AssignRefused); !strings.Contains(a.Reason, "not in the signed targets") {
			t.Fatalf("refused: %+v", a)
		}
		r.assign(t, protocol.Assignment{Rollout: "r-3", Target: "edge-1.3.0", Version: "1.3.0", Window: "23:00-23:30",
			NotAfter: time.Now().Add(2 * time.Hour).UnixMilli()})
		if a := waitState(t, r, ota.AssignRefused); !strings.Contains(a.Reason, "not started by its not_after") {
			t.Fatalf("past not_after: %+v", a)
		}
		if n := len(fi.list()); n != 3 {
			t.Fatalf("%d installs, want 3: %v", n, fi.list())
		}

		// Waiting, then stopped (a restart), then a new Assigner resumes it.
		r.assign(t, protocol.Assignment{Rollout: "r-4", Target: "edge-1.4.0", Version: "1.4.0", Window: "12:00-13:00", Zone: "UTC",
			NotAfter: time.Now().Add(48 * time.Hour).UnixMilli()})
		waitState(t, r, ota.AssignWaiting)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		ctx, cancel = context.WithCancel(context.Background())
		defer cancel()
		w = &ota.Assigner{Store: r.store, Install: fi.install}
		go func() { done <- w.Run(ctx) }()
		waitState(t, r, ota.AssignInstalled)
		if got := fi.list(); got[len(got)-1] != "edge-1.4.0@12:00" {
			t.Fatalf("installs %v, want the resumed one at 12:00", got)
		}

		// A cancel while it waits: no install, ota.cancelled.
		r.assign(t, protocol.Assignment{Rollout: "r-5", Target: "edge-1.5.0", Version: "1.5.0", Window: "11:00-11:30", Zone: "UTC"})
		waitState(t, r, ota.AssignWaiting)
		r.send(t, protocol.CommandCancel, protocol.EncodeCancel(protocol.Cancel{Rollout: "r-5"}))
		waitState(t, r, ota.AssignCancelled)
		synctest.Wait()
		if got := fi.list(); len(got) != 4 {
			t.Fatalf("installs %v after the cancel", got)
		}
		var refused, cancelled int
		for _, e := range spooled(t, r.gate.Spool) {
			switch e.Kind {
			case "ota.refused":
				refused++
			case "ota.cancelled":
				cancelled++
			}
		}
		if refused != 2 || cancelled != 1 {
			t.Fatalf("%d ota.refused and %d ota.cancelled, want 2 and 1", refused, cancelled)
		}
		cancel()
		<-done
	})
}

// TestCheckAssigned: the target must be the assigned name, version and
// channel; each difference is named.
func TestCheckAssigned(t *testing.T) {
	a := &ota.Assigned{Seq: 3, Assignment: protocol.Assignment{Rollout: "r-1", Channel: "stable", Target: "edge-1.1.0", Version: "1.1.0"}}
	tg := func(name, version, channel string) firmware.Target {
		return firmware.Target{Name: name, Custom: firmware.Custom{Version: version, Channel: channel}}
	}
	cases := map[string]struct {
		tg   firmware.Target
		want string
	}{
		"matches":       {tg("edge-1.1.0", "1.1.0", "stable"), ""},
		"other name":    {tg("edge-1.1.1", "1.1.0", "stable"), "is not the assigned edge-1.1.0"},
		"other version": {tg("edge-1.1.0", "1.1.1", "stable"), "is version 1.1.1 in the signed targets, the assignment says 1.1.0"},
		"other channel": {tg("edge-1.1.0", "1.1.0", "beta"), `signed for channel "beta"`},
	}
	for name, c := range cases {
		err := ota.CheckAssigned(c.tg, a)
		if (err == nil) != (c.want == "") || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// TestAssignmentKeptBeforeAcceptance: a crash after the assignment was kept
// and before the gate persisted its seq (here Keep fails after keeping it)
// leaves the command unaccepted, so the cloud delivers it again; the
// redelivery is accepted and keeps the same assignment once more.
func TestAssignmentKeptBeforeAcceptance(t *testing.T) {
	r := newAssignRig(t)
	keep := r.gate.Keep
	r.gate.Keep = func(c protocol.Command, msg []byte) error {
		if err := keep(c, msg); err != nil {
			return err
		}
		return errors.New("power cut")
	}
	msg := r.cloud.SignCommand(protocol.Command{Edge: "shop-1", Seq: 1, Expires: time.Now().Add(time.Hour).UnixMilli(), Kind: protocol.CommandAssign,
		Body: protocol.EncodeAssignment(protocol.Assignment{Rollout: "r-1", Channel: "stable", Target: "edge-1.1.0", Version: "1.1.0", NotAfter: time.Now().Add(time.Hour).UnixMilli()})})
	if _, err := r.gate.Accept(msg); err == nil || errors.Is(err, ota.ErrCommandRefused) {
		t.Fatalf("accept with a crash in Keep: %v", err)
	}
	if n, _ := r.gate.Last(); n != 0 {
		t.Fatalf("seq %d persisted although Keep failed", n)
	}
	if a := r.state(t); a == nil || a.Seq != 1 || a.State != ota.AssignWaiting {
		t.Fatalf("kept %+v", a)
	}
	r.gate.Keep = keep
	if _, err := r.gate.Accept(msg); err != nil {
		t.Fatalf("the redelivery: %v", err)
	}
	if a := r.state(t); a == nil || a.Seq != 1 || a.State != ota.AssignWaiting {
		t.Fatalf("kept %+v after the redelivery", a)
	}
	if n, _ := r.gate.Last(); n != 1 {
		t.Fatalf("seq %d after the redelivery", n)
	}
}

// TestRedeliveryKeepsAssignmentProgress: a crash after Keep kept an
// assignment and before the gate persisted its seq leaves the assignment
// on disk, and the next start works on it (here: installs it, then the
// release is rolled back, so nothing pending or current says it was
// installed). The cloud's redelivery of that same command must not reset
// it to waiting: that would install the rolled-back release a second time.
func TestRedeliveryKeepsAssignmentProgress(t *testing.T) {
	for _, state := range []string{ota.AssignInstalled, ota.AssignRefused, ota.AssignInstalling, ota.AssignCancelled} {
		t.Run(state, func(t *testing.T) {
			r := newAssignRig(t)
			keep := r.gate.Keep
			r.gate.Keep = func(c protocol.Command, msg []byte) error {
				if err := keep(c, msg); err != nil {
					return err
				}
				return errors.New("power cut")
			}
			msg := r.cloud.SignCommand(protocol.Command{Edge: "shop-1", Seq: 1, Expires: time.Now().Add(time.Hour).UnixMilli(), Kind: protocol.CommandAssign,
				Body: protocol.EncodeAssignment(protocol.Assignment{Rollout: "r-1", Channel: "stable", Target: "edge-1.1.0", Version: "1.1.0", NotAfter: time.Now().Add(time.Hour).UnixMilli()})})
			if _, err := r.gate.Accept(msg); err == nil {
				t.Fatal("accept with a crash in Keep succeeded")
			}
			// After the restart the assigner worked on the kept assignment.
			if err := r.store.Set(1, state, "worked on after the restart"); err != nil {
				t.Fatal(err)
			}
			r.gate.Keep = keep
			if _, err := r.gate.Accept(msg); err != nil {
				t.Fatalf("the redelivery: %v", err)
			}
			if a := r.state(t); a == nil || a.Seq != 1 || a.State != state {
				t.Fatalf("after the redelivery the assignment is %+v, want still %s", a, state)
			}
		})
	}
}

// TestCancelEventNotLost: a cancel whose ota.cancelled cannot be recorded
// (the spool cannot be written; a crash after the state was written is the
// same) is not accepted, and its redelivery records the event: the
// assignment already says cancelled, and that must not make the
// redelivery a no-op, or the rollout never learns of the cancel.
func TestCancelEventNotLost(t *testing.T) {
	r := newAssignRig(t)
	seq := r.assign(t, protocol.Assignment{Rollout: "r-1", Target: "edge-1.1.0", Version: "1.1.0"})
	good := r.store.Spool
	blocker := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r.store.Spool = ota.Spool{Path: filepath.Join(blocker, "events.jsonl")}
	msg := r.cloud.SignCommand(protocol.Command{Edge: "shop-1", Seq: seq + 1, Expires: time.Now().Add(time.Hour).UnixMilli(), Kind: protocol.CommandCancel,
		Body: protocol.EncodeCancel(protocol.Cancel{Rollout: "r-1", Reason: "paused"})})
	if _, err := r.gate.Accept(msg); err == nil || errors.Is(err, ota.ErrCommandRefused) {
		t.Fatalf("a cancel whose event cannot be recorded: %v", err)
	}
	if a := r.state(t); a.State != ota.AssignCancelled {
		t.Fatalf("assignment %+v, want cancelled", a)
	}
	r.store.Spool = good
	if _, err := r.gate.Accept(msg); err != nil {
		t.Fatalf("the redelivery: %v", err)
	}
	n := 0
	for _, e := range spooled(t, good) {
		if e.Kind == "ota.cancelled" {
			n++
			if !strings.Contains(e.Reason, "paused") {
				t.Errorf("ota.cancelled reason %q", e.Reason)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d ota.cancelled, want 1", n)
	}
}

// TestRefusalEventNotLost (virtual time): the Assigner's ota.refused is
// the rollout's only word of a refusal. When it cannot be recorded (the
// spool cannot be written; a crash between the state and the event is the
// same), the assignment must not be left refused without it: it is tried
// again later, and refused with its event once the spool works.
func TestRefusalEventNotLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		virtual = true
		defer func() { virtual = false }()
		r := newAssignRig(t)
		blocker := filepath.Join(t.TempDir(), "spool")
		if err := os.WriteFile(blocker, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		sp := ota.Spool{Path: filepath.Join(blocker, "events.jsonl")}
		r.store.Spool = sp
		refusal := errors.New("target edge-1.2.0 is not in the signed targets")
		fi := &fakeInstall{errs: []error{refusal, refusal, refusal}}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w := &ota.Assigner{Store: r.store, Install: fi.install, RetryMin: time.Minute, Logger: slog.New(slog.DiscardHandler)}
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		r.assign(t, protocol.Assignment{Rollout: "r-1", Target: "edge-1.2.0", Version: "1.2.0"})
		synctest.Wait()
		if n := len(fi.list()); n != 1 {
			t.Fatalf("%d installs, want 1", n)
		}
		if err := os.Remove(blocker); err != nil { // the spool works again
			t.Fatal(err)
		}
		waitState(t, r, ota.AssignRefused)
		n := 0
		for _, e := range spooled(t, sp) {
			if e.Kind == "ota.refused" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d ota.refused spooled, want 1", n)
		}
		cancel()
		<-done
	})
}
