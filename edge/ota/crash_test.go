//go:build unix

package ota_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/firmware"
)

const crashEnv = "OUTPOST_OTA_CRASH_SPEC"

type crashSpec struct {
	Op, Step  string
	Dir       string
	StatePath string
	Src       string
	Target    firmware.Target
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
	st, err := firmware.OpenState(c.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	switch c.Op {
	case "install":
		err = l.Install(c.Src, c.Target, ota.InstallOptions{Probation: time.Minute})
	case "commit":
		_, err = l.Commit(st)
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
		{"rollback", "bad-pinned", "1.0.0", false},
		{"rollback", "current-reverted", "1.0.0", false},
	} {
		t.Run(tc.op+"/"+tc.step, func(t *testing.T) {
			l, _ := installed(t)
			statePath := filepath.Join(t.TempDir(), "state.json")
			st, _ := firmware.OpenState(statePath)
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

			st, err = firmware.OpenState(statePath)
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
