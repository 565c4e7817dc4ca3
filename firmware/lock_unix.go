//go:build unix

package firmware

import (
	"os"
	"syscall"
)

// LockFile takes an exclusive advisory lock (flock) on path, made if
// missing, blocking until it is free; the returned func releases it. The
// edge's processes (supervise, run, the ota commands) share files through
// it.
func LockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}
