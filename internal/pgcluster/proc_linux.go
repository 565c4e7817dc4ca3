package pgcluster

import "syscall"

// setPdeathsig makes the kernel kill the server when its owner dies
// without calling Stop. Go sets it after switching credentials, which
// would otherwise clear it.
func setPdeathsig(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
