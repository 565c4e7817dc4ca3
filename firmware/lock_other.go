//go:build !unix

package firmware

// LockFile is a no-op where flock is not available; the edge runs on
// Linux, and the merge in State.update still keeps each field monotonic
// within a process.
func LockFile(string) (func(), error) { return func() {}, nil }

// TryLockFile is a no-op where flock is not available (see LockFile).
func TryLockFile(string) (func(), bool, error) { return func() {}, true, nil }
