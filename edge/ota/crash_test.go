//go:build unix

package ota_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/poll"
)

const crashEnv = "OUTPOST_OTA_CRASH_SPEC"

type crashSpec struct {
	Op, Step  string
	Dir       string
	StatePath string
	Src       string
	Target    firmware.Target
	Spool     string
}

// TestCrashChild is the child process of TestCrashInjection: it runs one
// operation and kills itself with SIGKILL right after the named step.
func TestCrashChild(t *testing.T) {
	raw := os.Getenv(crashEnv)
	if raw == "" {
		t.Skip("the child process of TestCrashInjection")
	}
	var c crashSpec
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatal(err)
	}
	l := &ota.Layout{Dir: c.Dir}
	ota.SetCrashHook(l, func(step string) {
		if step == c.Step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never returns
		}
	})
	st, err := ota.OpenState(c.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	switch c.Op {
	case "install":
		err = l.Install(c.Src, c.Target, ota.InstallOptions{Probation: time.Minute})
	case "commit":
		_, err = l.Commit(st)
	case "supervisor-commit":
		// What a supervisor does at the end of a healthy probation, with
		// its events spooled as edge supervise spools them.
		sp := ota.Spool{Path: c.Spool}
		_, err = ota.SupervisorCommit(&ota.Supervisor{Layout: l, State: st, OnEvent: func(e ota.Event) { sp.Add(e) }})
	case "recorded-rollback":
		sp := ota.Spool{Path: c.Spool}
		l.Record = func(e ota.Event) { sp.Add(e) }
		_, err = l.Rollback("health check failed")
	case "rollback":
		_, err = l.Rollback("health check failed")
	}
	t.Fatalf("step %s of %s was never reached (err %v)", c.Step, c.Op, err)
}

// TestCrashInjection kills a real process (kill -9) after every write,
// rename and fsync of Install, Commit and Rollback. Each time, current
// names a complete release (the old one or the new one, never a half
// written one), Recover makes the pending record tell the truth, and the
// operation can be done again to completion.
func TestCrashInjection(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes; run without -short")
	}
	for _, tc := range []struct {
		op, step string
		current  string // after the crash and Recover
		pending  bool
	}{
		{"install", "binary-written", "1.0.0", false},
		{"install", "binary-renamed", "1.0.0", false},
		{"install", "binary-dir-synced", "1.0.0", false},
		{"install", "pending-written", "1.0.0", false},
		{"install", "previous-switched", "1.0.0", false},
		{"install", "current-switched", "1.1.0", true},
		{"commit", "floor-raised", "1.1.0", false},
		{"commit", "committed-linked", "1.1.0", false},
		{"rollback", "bad-pinned", "1.0.0", false},
		{"rollback", "current-reverted", "1.0.0", false},
	} {
		t.Run(tc.op+"/"+tc.step, func(t *testing.T) {
			l, _ := installed(t)
			statePath := filepath.Join(t.TempDir(), "state.json")
			st, _ := ota.OpenState(statePath)
			st.RaiseFloor(1)
			src, tg := release(t, "1.1.0", 2)
			if tc.op != "install" {
				if err := l.Install(src, tg, ota.InstallOptions{Probation: time.Minute}); err != nil {
					t.Fatal(err)
				}
			}
			spec, _ := json.Marshal(crashSpec{Op: tc.op, Step: tc.step, Dir: l.Dir, StatePath: statePath, Src: src, Target: tg})
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashEnv+"="+string(spec))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child was not killed at %s: %v\n%s", tc.step, err, out)
			}

			// Whatever the crash left, current is a whole release.
			cur, err := l.Current()
			if err != nil || (cur != "1.0.0" && cur != "1.1.0") {
				t.Fatalf("current %q (%v) after the crash", cur, err)
			}
			mustCurrent(t, l, cur)

			st, err = ota.OpenState(statePath)
			if err != nil {
				t.Fatal(err)
			}
			p, err := l.Recover(st)
			if err != nil {
				t.Fatal(err)
			}
			mustCurrent(t, l, tc.current)
			if (p != nil) != tc.pending {
				t.Fatalf("pending after Recover: %+v, want pending %v", p, tc.pending)
			}

			// And the operation completes when done again.
			switch tc.op {
			case "install":
				if !tc.pending {
					if err := l.Install(src, tg, ota.InstallOptions{Probation: time.Minute}); err != nil {
						t.Fatalf("install after the crash: %v", err)
					}
				}
				mustCurrent(t, l, "1.1.0")
			case "commit":
				if st.Floor() != 2 {
					t.Fatalf("floor %d", st.Floor())
				}
			case "rollback":
				bad, _ := l.KnownBad()
				if _, ok := bad["1.1.0"]; !ok {
					t.Fatalf("1.1.0 not pinned as known bad: %v", bad)
				}
			}
		})
	}
}

// TestCrashAfterCommitKeepsEvent: a SIGKILL of a real process at every
// step of a supervisor's commit, the instant after the pending record is
// removed (before the supervisor had recorded it) included, loses no
// ota.committed: the next start (Guard) records it if the crash came
// before it was spooled, and never records it twice. The same holds for
// ota.rolled_back and every step of a rollback.
func TestCrashAfterCommitKeepsEvent(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes; run without -short")
	}
	for _, tc := range []struct{ op, step, kind, current string }{
		{"supervisor-commit", "floor-raised", "ota.committed", "1.1.0"},
		{"supervisor-commit", "committed-linked", "ota.committed", "1.1.0"},
		{"supervisor-commit", "commit-recorded", "ota.committed", "1.1.0"},
		{"supervisor-commit", "pending-dropped", "ota.committed", "1.1.0"},
		{"recorded-rollback", "bad-pinned", "ota.rolled_back", "1.0.0"},
		{"recorded-rollback", "current-reverted", "ota.rolled_back", "1.0.0"},
		{"recorded-rollback", "rollback-recorded", "ota.rolled_back", "1.0.0"},
		{"recorded-rollback", "pending-dropped", "ota.rolled_back", "1.0.0"},
	} {
		step := tc.step
		t.Run(tc.op+"/"+step, func(t *testing.T) {
			l, _ := installed(t)
			statePath := filepath.Join(t.TempDir(), "state.json")
			st, _ := ota.OpenState(statePath)
			st.RaiseFloor(1)
			src, tg := release(t, "1.1.0", 2)
			if err := l.Install(src, tg, ota.InstallOptions{Probation: time.Minute}); err != nil {
				t.Fatal(err)
			}
			sp := ota.Spool{Path: filepath.Join(t.TempDir(), "events.jsonl")}
			spec, _ := json.Marshal(crashSpec{Op: tc.op, Step: step, Dir: l.Dir, StatePath: statePath, Spool: sp.Path})
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashEnv+"="+string(spec))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child was not killed at %s: %v\n%s", step, err, out)
			}
			// The next boot, twice (the second is a normal start), with the
			// layout's events spooled as edge supervise and edge ota guard
			// spool them.
			l.Record = func(e ota.Event) { sp.Add(e) }
			for boot := range 2 {
				st, err := ota.OpenState(statePath)
				if err != nil {
					t.Fatal(err)
				}
				d, err := ota.Guard(l, st, time.Now(), 3)
				if err != nil {
					t.Fatalf("boot %d: %v", boot, err)
				}
				wantFloor := uint64(2)
				if tc.kind == "ota.rolled_back" {
					wantFloor = 1
				}
				if d.Version != tc.current || d.Pending != nil || st.Floor() != wantFloor {
					t.Fatalf("boot %d: %+v, floor %d; want %s settled at floor %d", boot, d, st.Floor(), tc.current, wantFloor)
				}
				// The guard's binary is the committed one.
				if c, err := l.Committed(); err != nil || c != tc.current {
					t.Fatalf("boot %d: committed symlink %q (%v), want %s", boot, c, err, tc.current)
				}
			}
			var got []ota.Event
			sp.Drain(func(evs []ota.Event) error {
				got = append(got, evs...)
				return nil
			})
			if len(got) != 1 || got[0].Kind != tc.kind || got[0].Version != "1.1.0" || got[0].Release != 2 {
				t.Fatalf("spooled after a kill at %s and two boots: %+v, want exactly one %s for 1.1.0", step, got, tc.kind)
			}
			if tc.kind == "ota.rolled_back" && got[0].Reason != "health check failed" {
				t.Fatalf("rollback reason %q", got[0].Reason)
			}
		})
	}
}

const downloadCrashEnv = "OUTPOST_OTA_DOWNLOAD_CRASH_SPEC"

type downloadCrashSpec struct {
	Step, Dir, URL string
	Target         firmware.Target
}

// TestDownloadCrashChild is the child process of TestDownloadCrash: it
// downloads and kills itself with SIGKILL right after the named step
// (for "mid-copy", the parent kills it while bytes are arriving).
func TestDownloadCrashChild(t *testing.T) {
	raw := os.Getenv(downloadCrashEnv)
	if raw == "" {
		t.Skip("the child process of TestDownloadCrash")
	}
	var c downloadCrashSpec
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatal(err)
	}
	d := &ota.Downloader{Dir: c.Dir, MaxAttempts: 1}
	ota.SetDownloadCrashHook(d, func(step string) {
		if step == c.Step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	})
	_, err := d.Fetch(t.Context(), c.URL, c.Target)
	t.Fatalf("step %s was never reached (err %v)", c.Step, err)
}

// TestDownloadCrash kills a real downloading process (kill -9) while
// bytes arrive and after every write, fsync and rename of a download. The
// next process's download completes, verified, and fetches only what the
// killed one had not stored: a Range request from the partial file's
// length, or no request at all once the verified file was in place.
// Nothing here touches current: the running release never changes.
func TestDownloadCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes; run without -short")
	}
	for _, tc := range []struct {
		step     string
		complete bool // the first process had the whole artifact
	}{
		{"mid-copy", false},
		{"part-copied", false},
		{"part-synced", false},
		{"verified-renamed", true},
		{"verified-synced", true},
	} {
		t.Run(tc.step, func(t *testing.T) {
			body, tg := artifact(t, 256<<10)
			half := 100 << 10
			s := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n > 0 || tc.complete {
					serve(body)(n, w, r)
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.WriteHeader(http.StatusOK)
				w.Write(body[:half])
				w.(http.Flusher).Flush()
				if tc.step == "mid-copy" {
					<-r.Context().Done() // until the child is killed
					return
				}
				panic(http.ErrAbortHandler) // the link drops
			})
			dir := t.TempDir()
			spec, _ := json.Marshal(downloadCrashSpec{Step: tc.step, Dir: dir, URL: s.URL + "/edge", Target: tg})
			cmd := exec.Command(os.Args[0], "-test.run=^TestDownloadCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), downloadCrashEnv+"="+string(spec))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			d, _ := downloader(t, dir)
			part, verified, _ := d.Paths(tg)
			if tc.step == "mid-copy" {
				poll.Until(t, 30*time.Second, "the child storing the first bytes", func() bool {
					fi, err := os.Stat(part)
					return err == nil && fi.Size() > 0
				})
				cmd.Process.Kill()
			}
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child was not killed at %s: %v\n%s", tc.step, err, out.String())
			}
			var have int64
			if fi, err := os.Stat(part); err == nil {
				have = fi.Size()
			}
			if !tc.complete && (have == 0 || have > int64(half)) {
				t.Fatalf("partial file of %d bytes after a kill at %s, want 1..%d", have, tc.step, half)
			}

			// The restart.
			p, err := d.Fetch(context.Background(), s.URL+"/edge", tg)
			if err != nil {
				t.Fatalf("download after a kill at %s: %v", tc.step, err)
			}
			if got, _ := os.ReadFile(p); p != verified || !bytes.Equal(got, body) {
				t.Fatalf("download after a kill at %s is not the artifact (%s)", tc.step, p)
			}
			ranges, sent := s.requests()
			switch {
			case tc.complete && len(ranges) != 1:
				t.Fatalf("requests %q after a kill at %s with the verified file in place, want none more", ranges, tc.step)
			case !tc.complete && (len(ranges) != 2 || ranges[1] != "bytes="+strconv.FormatInt(have, 10)+"-" || sent[1] != tg.Length-have):
				t.Fatalf("requests %q sent %v after a kill at %s with %d bytes stored, want one more from %d sending %d",
					ranges, sent, tc.step, have, have, tg.Length-have)
			}
		})
	}
}
