package outbox

import (
	"errors"
	"strings"
	"syscall"

	berrors "go.etcd.io/bbolt/errors"
)

// Error is an outbox sentinel: a short message, as bbolt's errors are, so
// that it reads well inside the context callers wrap it in. What an
// operator should do about it is Advice, written once here; what a device
// is told is the intake's business (edge/intake reason.go). Callers branch
// with errors.Is; the intake classifies a storage refusal by its Quota and
// DiskFull methods, which need no adapter in between.
type Error struct {
	msg, advice     string
	quota, diskFull bool
}

func (e *Error) Error() string { return e.msg }

// Advice says what an operator should do about the error.
func (e *Error) Advice() string { return e.advice }

// Quota reports whether the error is a full quota: the same append may
// succeed once the uplink drains the outbox.
func (e *Error) Quota() bool { return e.quota }

// DiskFull reports whether the error is a full disk (drain-only mode).
func (e *Error) DiskFull() bool { return e.diskFull }

// Sentinel errors.
var (
	// ErrClosed: the outbox has been closed; nothing more is accepted.
	ErrClosed = &Error{msg: "outbox closed",
		advice: "the edge is shutting down; retry against the restarted daemon"}

	// ErrLedgerQuota: storing a ledger record would exceed Options.LedgerQuota.
	// Ledger records are never dropped, so new ones are refused instead.
	ErrLedgerQuota = &Error{msg: "ledger quota full", quota: true,
		advice: "ledger events are never dropped, so new ones are refused: free space by restoring the uplink so the cloud can acknowledge, or raise --ledger-quota"}

	// ErrTelemetryQuota: the telemetry quota is full even after every stored
	// telemetry record has been shed to a tombstone. Tombstones keep the
	// chain whole and go only when the cloud acknowledges them.
	ErrTelemetryQuota = &Error{msg: "telemetry quota full of tombstones", quota: true,
		advice: "the quota holds only tombstones of shed readings: restore the uplink so the cloud can acknowledge them, or raise --telemetry-quota"}

	// ErrDiskFull: a commit failed because the volume is full (ENOSPC) or
	// the file reached Options.MaxFileBytes. The outbox is in drain-only mode:
	// appends are refused, segments and trims keep working, and appends are
	// accepted again after a trim frees space or a periodic retry succeeds.
	ErrDiskFull = &Error{msg: "disk full: drain-only", diskFull: true,
		advice: "the outbox refuses new events until a receipt trims acknowledged records or space is freed on the volume; sending to the cloud continues"}

	// ErrCorrupt: the stored data breaks an invariant (a chain break, a bad
	// checkpoint, inconsistent metadata). Nothing is repaired automatically.
	ErrCorrupt = &Error{msg: "outbox corrupt",
		advice: "stop the edge, keep the file for analysis, and run `edge outbox verify` to see the first bad seq"}

	// ErrLocked: another process (normally the edge daemon) holds the file.
	ErrLocked = &Error{msg: "outbox file locked by another process",
		advice: "stop the edge daemon (or the other tool) that has it open and retry"}

	// ErrReceipt: a receipt that does not fit this outbox: another stream,
	// a watermark beyond the head, or a head hash that differs from the
	// stored record. Nothing is trimmed.
	ErrReceipt = &Error{msg: "receipt does not match this outbox",
		advice: "nothing was trimmed; check that the cloud and the edge agree on the stream (a restored or copied outbox file starts a fork)"}

	// ErrTrimmed: a read asked for records that were already trimmed after
	// a receipt. Resume from the cloud's watermark (hello) instead.
	ErrTrimmed = &Error{msg: "records already trimmed",
		advice: "resume from the cloud's watermark"}

	// ErrInvalid: an entry that cannot become a record (bad device id, event
	// id or type, body that is not a CBOR map, record over the size limit).
	// It is reported per entry; the other entries of the call go on.
	ErrInvalid = &Error{msg: "invalid entry",
		advice: "the device must send a valid event"}
)

// isDiskFull reports whether a commit failed for lack of space. bbolt wraps
// some errors of its file growth with %s, so the errno is matched by text too.
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, berrors.ErrMaxSizeReached) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error())
}
