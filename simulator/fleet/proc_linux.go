package fleet

import "syscall"

// sysProcAttr puts a child in its own process group (a Ctrl-C in the
// terminal reaches only the simulator, which stops its children in order)
// and has the kernel kill it when the simulator dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
