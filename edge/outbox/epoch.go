package outbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpost-edge/outpost/protocol"
	bolt "go.etcd.io/bbolt"
)

// A rolled-back outbox. When a VM snapshot or a backup restore puts an
// older outbox file back, the edge carries on from the older head with the
// same epoch. The cloud has moved on: its watermark is beyond the restored
// head, or the record it holds at its watermark is not the one the file
// has there. Every record appended after the restore gets a seq the cloud
// already has (another record's), so it is acknowledged to the device and
// can never be delivered.
//
// Diverges recognises it from the cloud's signed receipt at hello, and
// NewEpoch gets out of it: the file is kept, renamed to
// outbox.stuck-<epoch>.db beside it (readable with the outbox tools, for an
// operator to reconcile), and a new file with a new epoch takes its place,
// in the running outbox, so that new events flow at once under a stream
// the cloud has never seen. StuckFiles lists the kept files (State.Stuck
// counts them), also after a restart, until an operator removes them.

// StuckPrefix and StuckSuffix frame the name of a kept file:
// outbox.stuck-<epoch hex>.db in the outbox's directory.
const (
	StuckPrefix = "outbox.stuck-"
	StuckSuffix = ".db"
)

// EpochChange is what NewEpoch did.
type EpochChange struct {
	Old, New protocol.Stream
	// Stuck is the file the old stream's records were kept in; Head, HWM
	// its head and acknowledged watermark there.
	Stuck     string
	Head, HWM uint64
}

type epochOp struct {
	reason string
	done   chan epochResult
}

type epochResult struct {
	ch  EpochChange
	err error
}

// Diverges reports whether r, a receipt for this stream that verified
// against the pinned cloud key, shows that the cloud's stream is not this
// file's: r's watermark is beyond the head, or the record stored at it
// (or the trimmed base, or the stored watermark, when r names those) has
// another hash. A receipt for another stream, or at a watermark below the
// base that cannot be checked, does not.
func (o *Outbox) Diverges(r protocol.Receipt) (bool, error) {
	if r.Stream() != o.Stream() || r.HWM == 0 {
		return false, nil
	}
	o.mu.Lock()
	w := o.pub
	o.mu.Unlock()
	switch {
	case r.HWM > w.head:
		return true, nil
	case r.HWM == w.hwm:
		return r.Head != w.hwmHead, nil
	case r.HWM == w.base:
		return r.Head != w.baseHash, nil
	case r.HWM < w.base:
		return false, nil
	}
	var h protocol.Hash
	found := false
	o.dbmu.RLock()
	defer o.dbmu.RUnlock()
	err := o.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketRecords).Get(seqKey(r.HWM))
		if raw == nil {
			return nil // trimmed meanwhile
		}
		var err error
		h, err = linkHash(raw)
		found = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("check receipt at %d: %w", r.HWM, err)
	}
	return found && h != r.Head, nil
}

// NewEpoch keeps the outbox file under its stuck name and starts a new,
// empty one with a new epoch in its place, without closing the outbox:
// appends not yet committed go into the new stream, reads and trims of the
// old one end (ErrReceipt, nil segments). The dedup table starts empty, so
// a device's resend of an event stuck in the old file is stored, and
// delivered, in the new stream. reason is logged.
func (o *Outbox) NewEpoch(reason string) (EpochChange, error) {
	op := &epochOp{reason: reason, done: make(chan epochResult, 1)}
	o.qmu.Lock()
	if o.closing {
		o.qmu.Unlock()
		return EpochChange{}, ErrClosed
	}
	o.epochs = append(o.epochs, op)
	o.qmu.Unlock()
	o.poke()
	res := <-op.done
	return res.ch, res.err
}

// newEpoch runs NewEpoch in the builder, with nothing in flight.
func (o *Outbox) newEpoch(op *epochOp) (EpochChange, error) {
	old, st := o.Stream(), o.w
	ch := EpochChange{Old: old, Head: st.head, HWM: st.hwm, Stuck: StuckPath(o.path, old.Epoch)}
	o.dbmu.Lock()
	defer o.dbmu.Unlock()
	if err := os.Rename(o.path, ch.Stuck); err != nil {
		return ch, fmt.Errorf("keep the old outbox as %s: %w", ch.Stuck, err)
	}
	if err := syncDir(filepath.Dir(o.path)); err != nil {
		o.log.Warn("fsync the outbox directory after keeping the old file", "err", err)
	}
	oldDB, oldDedup := o.db, o.dedup
	db, err := openBolt(o.path, &o.opts)
	if err == nil {
		o.db, o.dedup = db, dedupTable{}
		if err = o.load(); err == nil && !o.opts.NoSync {
			err = syncDir(filepath.Dir(o.path))
		}
		if err != nil {
			db.Close()
			o.dedup.free()
			os.Remove(o.path)
		}
	}
	if err != nil {
		// Put the old file back as it was: the outbox goes on in the old
		// stream, and the next hello tries again.
		o.db, o.dedup = oldDB, oldDedup
		o.streamp.Store(&old)
		if rerr := os.Rename(ch.Stuck, o.path); rerr != nil {
			err = fmt.Errorf("%w; and putting the old file back failed: %w", err, rerr)
		}
		return ch, fmt.Errorf("start a new epoch: %w", err)
	}
	oldDedup.free()
	if err := oldDB.Close(); err != nil {
		o.log.Warn("close the old outbox file", "err", err)
	}
	o.mapped.Store(0)
	o.codec = newCodec(o.Stream())
	o.committed = o.w
	o.gen++
	ch.New = o.Stream()
	o.mu.Lock()
	o.stuck = append(slicesClone(o.stuck), ch.Stuck)
	o.epochRestarts++
	o.mu.Unlock()
	o.publish(o.w, true)
	o.log.Error("the cloud's stream is beyond or differs from this outbox (a restored or rolled-back file): started a new epoch; the old records are kept for an operator",
		"why", op.reason, "old_stream", old.String(), "new_stream", ch.New.String(), "kept_as", ch.Stuck,
		"old_head", ch.Head, "old_hwm", ch.HWM)
	return ch, nil
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// StuckPath is the name NewEpoch keeps the file of epoch under, beside the
// outbox file at path.
func StuckPath(path string, epoch protocol.Epoch) string {
	return filepath.Join(filepath.Dir(path), StuckPrefix+epoch.String()+StuckSuffix)
}

// StuckFiles lists the kept files of earlier streams (see NewEpoch), as of
// Open and the new epochs since.
func (o *Outbox) StuckFiles() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slicesClone(o.stuck)
}

// findStuck lists the kept files in dir.
func findStuck(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, StuckPrefix) && strings.HasSuffix(n, StuckSuffix) {
			out = append(out, filepath.Join(dir, n))
		}
	}
	return out
}
