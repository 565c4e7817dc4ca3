package outbox

import "time"

// SetShrinkThresholds sets the online shrink's thresholds (compact.go) for
// a test, and returns how to put them back.
func SetShrinkThresholds(minFile, maxLive int64) (restore func()) {
	f, l := shrinkMinFile, shrinkMaxLive
	shrinkMinFile, shrinkMaxLive = minFile, maxLive
	return func() { shrinkMinFile, shrinkMaxLive = f, l }
}

// OnCreateSyncDir calls f with the directory Open fsyncs after it creates a
// file, for a test, and returns how to put it back.
func OnCreateSyncDir(f func(dir string)) (restore func()) {
	old := syncDirOnCreate
	syncDirOnCreate = func(dir string) error { f(dir); return old(dir) }
	return func() { syncDirOnCreate = old }
}

// SlowSync makes each of o's group commits take d longer, in the committer
// just before the commit's own syncs, the way a disk whose fsync takes d
// longer would (bbolt syncs twice per commit: pass twice the per-fsync
// cost). It is for benchmarks of a slow disk; call it before appending.
func SlowSync(o *Outbox, d time.Duration) {
	o.commitHook = func() error { time.Sleep(d); return nil }
}
