package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/protocol"
)

// reenterMarkerName is the file, beside the outbox, that says a re-entry
// (reenter) has begun and not finished: it names the kept file. It is
// written, fsynced, before the new epoch starts and removed once every
// record is entered again, so a crash (kill -9, power) in between leaves it,
// and the next start (resumeReenter) enters the rest. Entering a record
// twice is harmless: the new stream's dedup drops the second copy.
const reenterMarkerName = "reenter-pending.json"

type reenterMarker struct {
	Stuck string `json:"stuck"` // the kept file's name, in the outbox's directory
}

func reenterMarkerPath(outboxFile string) string {
	return filepath.Join(filepath.Dir(outboxFile), reenterMarkerName)
}

// markReenter records that the records of stuck are about to be entered
// again.
func markReenter(outboxFile, stuck string) error {
	b, _ := json.Marshal(reenterMarker{Stuck: filepath.Base(stuck)})
	return durable.WriteFile(reenterMarkerPath(outboxFile), b, 0o600)
}

func unmarkReenter(outboxFile string) error {
	err := os.Remove(reenterMarkerPath(outboxFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// resumeReenter finishes, at start, a re-entry a crash interrupted: when
// the marker names a kept file that exists and is not the outbox's current
// stream, its records are entered again (those already entered are
// duplicates and dropped). A marker without its kept file is left over from
// a crash before the new epoch began: there is nothing to resume.
func resumeReenter(ob *outbox.Outbox, outboxFile string, log *slog.Logger) error {
	b, err := os.ReadFile(reenterMarkerPath(outboxFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the re-entry marker: %w", err)
	}
	var m reenterMarker
	if err := json.Unmarshal(b, &m); err != nil || m.Stuck == "" || filepath.Base(m.Stuck) != m.Stuck {
		return fmt.Errorf("the re-entry marker %s is not valid (%q): remove it after checking the kept files with 'edge outbox export --file'", reenterMarkerPath(outboxFile), b)
	}
	stuck := filepath.Join(filepath.Dir(outboxFile), m.Stuck)
	if _, err := os.Stat(stuck); errors.Is(err, fs.ErrNotExist) || stuck == outbox.StuckPath(outboxFile, ob.Stream().Epoch) {
		return unmarkReenter(outboxFile)
	}
	log.Warn("a crash interrupted entering the lost stream's records again; entering the rest now", "kept_as", stuck)
	if err := reenter(ob, outbox.EpochChange{Stuck: stuck}); err != nil {
		return err
	}
	return unmarkReenter(outboxFile)
}

// reenter appends, in the new epoch, the events of every record the old
// stream's file (ch.Stuck) still holds: the cloud was restored to an older
// point and lost them along with records this edge no longer holds, so the
// old stream cannot carry them any more (uplink's cloudBehind), and none of
// them is in the cloud's ledger now. They keep their device, id, type,
// device time and body; they get new seqs, a new chain and the edge time of
// now. Tombstones (shed telemetry) have no event left to enter. The file
// stays, with the alarm, for the operator to reconcile the lost range and
// remove.
func reenter(ob *outbox.Outbox, ch outbox.EpochChange) error {
	const batch = 1000
	var entries []outbox.Entry
	var failed error
	flush := func() {
		if len(entries) == 0 {
			return
		}
		done := make(chan error, 1)
		ob.AppendFunc(entries, func(rs []outbox.Result, err error) {
			for _, r := range rs {
				err = errors.Join(err, r.Err)
			}
			done <- err
		})
		if err := <-done; err != nil && failed == nil {
			failed = err
		}
		entries = entries[:0]
	}
	err := outbox.Records(ch.Stuck, func(seq uint64, r protocol.Record) error {
		if r.IsTombstone() {
			return nil
		}
		entries = append(entries, outbox.Entry{Device: r.Device, Event: protocol.Event{
			ID: r.ID, Type: r.Type, TS: time.UnixMilli(r.TS).UTC(), Body: protocol.Body(r.Body)}})
		if len(entries) == batch {
			flush()
		}
		return nil
	})
	flush()
	if err = errors.Join(err, failed); err != nil {
		return fmt.Errorf("enter the records of %s again in the new epoch: %w", ch.Stuck, err)
	}
	return nil
}
