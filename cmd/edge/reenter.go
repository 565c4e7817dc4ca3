package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
)

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
