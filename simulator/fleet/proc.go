package fleet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a child program the simulator runs: in its own process group,
// with its output appended to a log file, and (on Linux) killed by the
// kernel if the simulator dies without stopping it.
type Proc struct {
	Name string   // for messages: "cloud", "edge shop-1"
	Path string   // the executable
	Args []string // its arguments
	Env  []string // added to the simulator's environment
	Log  string   // the log file

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	starts int
}

// Start starts the program. It is an error to start it while it runs.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !closed(p.done) {
		return fmt.Errorf("%s is running already", p.Name)
	}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(f, "=== %s start %d: %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), p.starts, p.Path, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "=== %s exit: %v\n", time.Now().UTC().Format(time.RFC3339Nano), exitText(err))
		f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Running reports whether the program runs.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !closed(p.done)
}

// Starts returns how often the program was started.
func (p *Proc) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Pid returns the running program's process id (0 when not running).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || closed(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// signal sends sig to the program's process group and returns the channel
// closed when it has exited (nil when it was not running).
func (p *Proc) signal(sig syscall.Signal) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || closed(p.done) {
		return nil
	}
	pid := p.cmd.Process.Pid
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = p.cmd.Process.Signal(sig)
	}
	return p.done
}

// Kill sends SIGKILL (kill -9) and waits until the program is gone.
func (p *Proc) Kill() {
	if done := p.signal(syscall.SIGKILL); done != nil {
		<-done
	}
}

// Stop asks the program to stop (SIGTERM), and kills it if it has not
// stopped within timeout.
func (p *Proc) Stop(timeout time.Duration) {
	done := p.signal(syscall.SIGTERM)
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(timeout):
		p.Kill()
	}
}

// Tail returns the last n bytes of the program's log.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// portTaken reports whether the program's last run ended because an
// address it was to listen on was in use.
func portTaken(p *Proc) bool {
	return !p.Running() && strings.Contains(p.Tail(2000), "address already in use")
}

// PeakRSS returns the running program's peak resident memory in bytes
// (VmHWM in /proc/{pid}/status), or 0 when it is not running or the
// system does not say.
func (p *Proc) PeakRSS() uint64 {
	pid := p.Pid()
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// CPU returns the CPU time (user and system) the running program has used
// (from /proc/{pid}/stat), or 0 when it is not running or the system does
// not say.
func (p *Proc) CPU() time.Duration {
	pid := p.Pid()
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	var ut, st uint64
	_, _ = fmt.Sscan(f[11], &ut)
	_, _ = fmt.Sscan(f[12], &st)
	// Clock ticks of 1/100 s (USER_HZ on Linux).
	return time.Duration(ut+st) * 10 * time.Millisecond
}
