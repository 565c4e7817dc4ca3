package outbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Compaction gives space back to the volume. bbolt never shrinks its file:
// pages freed by trims are reused for new records, but a file that grew
// while the uplink was down (up to a full disk) stays that size. Compacting
// copies the live data into a new file (bolt.Compact), fsyncs it, renames
// it over the old one and fsyncs the directory, so that a crash at any
// point leaves the old file or the new one, whole. It needs free space for
// the live data, not for the whole file.
//
// Offline, Compact does it for `edge outbox compact`. Online, the builder
// does it after a trim or at maintenance when the backlog allows
// (shouldShrink): the file is large, mostly free, and what is live small
// enough to copy without holding appends up for long.

// Thresholds of the online shrink (variables for tests).
var (
	shrinkMinFile = int64(64 << 20) // files smaller than this are left alone
	shrinkMaxLive = int64(64 << 20) // live data larger than this waits for an offline compact (appends wait for the copy)
)

// shrinkRetry is how long the online shrink waits after a failed attempt
// (no room on the volume for the copy, most likely).
const shrinkRetry = 10 * time.Minute

// CompactReport says what Compact did.
type CompactReport struct {
	Path                    string
	BytesBefore, BytesAfter int64
}

// Compact rewrites the outbox file at path with only its live data, and
// returns the sizes before and after. The edge must not be running (the
// file is locked while it is: ErrLocked). The stream, records, checkpoints
// and watermark are unchanged; Verify passes before and after.
func Compact(path string) (CompactReport, error) {
	rep := CompactReport{Path: path, BytesBefore: fileSize(path)}
	if _, err := os.Stat(path); err != nil {
		return rep, fmt.Errorf("compact outbox %s: %w", path, err)
	}
	// An exclusive lock (not read-only), held until the new file is in
	// place, so that an edge starting meanwhile waits and fails (ErrLocked).
	// No freelist is written at open, so this works on a full volume too.
	src, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: toolTimeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			err = ErrLocked
		}
		return rep, fmt.Errorf("compact outbox %s: %w", path, err)
	}
	defer src.Close()
	if err := src.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketRecords, bucketCheckpoints, bucketIndex} {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("no %s bucket; not an outbox file: %w", name, ErrCorrupt)
			}
		}
		return nil
	}); err != nil {
		return rep, fmt.Errorf("compact outbox %s: %w", path, err)
	}
	dst, err := compactCopy(src, path)
	if err != nil {
		return rep, fmt.Errorf("compact outbox %s: %w", path, err)
	}
	if err := dst.Close(); err != nil {
		return rep, fmt.Errorf("compact outbox %s: %w", path, err)
	}
	rep.BytesAfter = fileSize(path)
	return rep, nil
}

// compactCopy copies src's live data into a new file beside path, makes it
// durable and renames it over path. It returns the new file open (under
// its lock), so that the caller can switch to it before closing src. On an
// error the old file is untouched and the copy removed.
func compactCopy(src *bolt.DB, path string) (*bolt.DB, error) {
	tmp := path + ".compact"
	_ = os.Remove(tmp) // a leftover of an earlier, interrupted compaction
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: toolTimeout, NoSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*bolt.DB, error) {
		dst.Close()
		os.Remove(tmp)
		if isDiskFull(err) {
			err = fmt.Errorf("not enough free space on the volume for a copy of the live data (%w); free some space and retry", err)
		}
		return nil, err
	}
	if err := bolt.Compact(dst, src, 16<<20); err != nil {
		return fail(err)
	}
	dst.NoSync = false
	if err := dst.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		// The rename is done; the new file is complete either way.
		return dst, fmt.Errorf("fsync directory: %w", err)
	}
	return dst, nil
}

// shouldShrink reports whether the file is worth compacting online: at
// least shrinkMinFile, at most a quarter of it live (the rest free pages,
// and the tail bbolt grew the file by and has not used yet; a quarter, not
// a half, so that a steady backlog does not compact at every doubling of
// the file), and no more than shrinkMaxLive live.
func (o *Outbox) shouldShrink() (file, live int64, ok bool) {
	file = fileSize(o.path)
	if file < shrinkMinFile {
		return file, 0, false
	}
	// Pages freed by the last commit are pending until the next one; they
	// are not live data either.
	st := o.db.Stats()
	free := int64(st.FreePageN+st.PendingPageN) * int64(o.db.Info().PageSize)
	var used int64 // the pages up to the high-water mark
	if err := o.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		return file, 0, false
	}
	live = used - free
	return file, live, 4*live <= file && live <= shrinkMaxLive
}

// maybeShrink compacts the file online when shouldShrink says so. It runs
// in the builder with nothing in flight; Segment waits meanwhile (dbmu).
func (o *Outbox) maybeShrink() {
	if o.opts.NoShrink {
		return
	}
	if o.opts.Now().Before(o.shrinkRetryAt) {
		return
	}
	file, live, ok := o.shouldShrink()
	if !ok {
		return
	}
	o.dbmu.Lock()
	defer o.dbmu.Unlock()
	dst, err := compactCopy(o.db, o.path)
	if err != nil && dst == nil {
		o.shrinkRetryAt = o.opts.Now().Add(shrinkRetry)
		o.log.Warn("shrink the outbox file: not now", "err", err, "file_bytes", file, "live_bytes", live,
			"retry_at", o.shrinkRetryAt.Format(time.RFC3339))
		return
	}
	if err != nil {
		o.log.Warn("shrink the outbox file", "err", err)
	}
	dst.NoSync, dst.MaxSize = o.opts.NoSync, int(o.opts.MaxFileBytes)
	old := o.db
	o.db = dst
	o.mapped.Store(0)
	if err := old.Close(); err != nil {
		o.log.Warn("close the outbox file before its compaction", "err", err)
	}
	o.log.Info("shrank the outbox file: its free pages went back to the volume",
		"bytes_before", file, "bytes_after", fileSize(o.path))
}
