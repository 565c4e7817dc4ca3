package outbox

import (
	"errors"
	"strings"
	"syscall"

	berrors "go.etcd.io/bbolt/errors"
)

// Sentinel errors. Callers branch on them with errors.Is; the text of each
// says what is wrong and what to do, so it can be shown to an operator as is.
var (
	// ErrClosed: the outbox has been closed; nothing more is accepted.
	ErrClosed = errors.New("outbox is closed: the edge is shutting down; retry against the restarted daemon")

	// ErrLedgerQuota: storing a ledger record would exceed Options.LedgerQuota.
	// Ledger records are never dropped, so new ones are refused instead.
	ErrLedgerQuota = errors.New("ledger quota full: ledger events are never dropped, so new ones are refused; " +
		"free space by restoring the uplink so the cloud can acknowledge, or raise --ledger-quota")

	// ErrTelemetryQuota: the telemetry quota is full even after every stored
	// telemetry record has been shed to a tombstone. Tombstones keep the
	// chain whole and go only when the cloud acknowledges them.
	ErrTelemetryQuota = errors.New("telemetry quota full of tombstones of shed readings: " +
		"restore the uplink so the cloud can acknowledge them, or raise --telemetry-quota")

	// ErrDiskFull: a commit failed because the volume is full (ENOSPC) or
	// the file reached Options.MaxFileBytes. The outbox is in drain-only mode:
	// appends are refused, segments and trims keep working, and appends are
	// accepted again after a trim frees space or a periodic retry succeeds.
	ErrDiskFull = errors.New("disk full: the outbox is drain-only and refuses new events until a receipt " +
		"trims acknowledged records or space is freed on the volume; sending to the cloud continues")

	// ErrCorrupt: the stored data breaks an invariant (a chain break, a bad
	// checkpoint, inconsistent metadata). Nothing is repaired automatically.
	ErrCorrupt = errors.New("outbox corrupt: stop the edge, keep the file for analysis, " +
		"and run the outbox verify tool to see the first bad seq")

	// ErrLocked: another process (normally the edge daemon) holds the file.
	ErrLocked = errors.New("outbox file is locked by another process: " +
		"stop the edge daemon (or the other tool) that has it open and retry")

	// ErrReceipt: a receipt that does not fit this outbox: another stream,
	// a watermark beyond the head, or a head hash that differs from the
	// stored record. Nothing is trimmed.
	ErrReceipt = errors.New("receipt does not match this outbox: nothing was trimmed; " +
		"check that the cloud and the edge agree on the stream (a restored or copied outbox file starts a fork)")

	// ErrTrimmed: a read asked for records that were already trimmed after
	// a receipt. Resume from the cloud's watermark (hello) instead.
	ErrTrimmed = errors.New("records already trimmed after a receipt: resume from the cloud's watermark")

	// ErrInvalid: an entry that cannot become a record (bad device id, event
	// id or type, body that is not a CBOR map, record over the size limit).
	// It is reported per entry; the other entries of the call go on.
	ErrInvalid = errors.New("invalid entry, refused: the device must send a valid event")
)

// isDiskFull reports whether a commit failed for lack of space. bbolt wraps
// some errors of its file growth with %s, so the errno is matched by text too.
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, berrors.ErrMaxSizeReached) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error())
}
