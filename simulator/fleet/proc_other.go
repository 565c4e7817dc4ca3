//go:build unix && !linux

package fleet

import "syscall"

// sysProcAttr puts a child in its own process group. Without Linux's
// parent-death signal, children of a simulator killed with SIGKILL are
// left running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
