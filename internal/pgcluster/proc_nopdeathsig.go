//go:build unix && !linux

package pgcluster

import "syscall"

// setPdeathsig does nothing: only Linux has a parent-death signal. Call
// Stop (or pgtest.Main) to end the server.
func setPdeathsig(*syscall.SysProcAttr) {}
