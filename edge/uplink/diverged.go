package uplink

import (
	"errors"
	"fmt"

	"github.com/outpost-edge/outpost/protocol"
)

// Diverger is what a Source may also do: recognise, from the cloud's
// signed receipt at hello, that the cloud's stream is beyond or apart from
// its own (an older outbox file was restored: every record appended since
// gets a seq the cloud already holds another record at, and could never be
// delivered), and leave that stream for a new one. The outbox does both
// (Diverges, NewEpoch; cmd/edge adapts it). A Source without it keeps the
// old behaviour: such receipts are ignored and counted as forged.
type Diverger interface {
	// Diverges reports whether r, verified and for the source's stream,
	// shows the cloud beyond or apart from it.
	Diverges(r protocol.Receipt) (bool, error)
	// Diverged leaves the stream for a new one (a new epoch); the uplink
	// then starts a session for the new stream.
	Diverged(r protocol.Receipt) error
}

// ErrNewStream ends a session whose stream the cloud has moved past: the
// source started a new one, and the next session says hello for it.
var ErrNewStream = errors.New("the cloud's stream is beyond or apart from the outbox's (an older outbox file restored?): started a new epoch; the old records are kept for an operator")

// checkDiverged is the hello's call into this file, and accept's for a
// receipt in a session that does not match the source (the cloud's real
// answer to a hello that resumed on a stale receipt arrives that way):
// for a verified receipt for the session's stream, it returns
// ErrNewStream when the source has left the stream (or an error when it
// could not), nil to go on as usual.
func (u *Uplink) checkDiverged(rc protocol.Receipt) error {
	d, ok := u.o.Source.(Diverger)
	if !ok {
		return nil
	}
	div, err := d.Diverges(rc)
	if err != nil {
		u.log.Warn("check the cloud's receipt against the outbox", "err", err)
		return nil
	}
	if !div {
		return nil
	}
	u.log.Error("the cloud's signed receipt is beyond or apart from the outbox: was an older outbox file restored? starting a new epoch",
		"stream", rc.Stream().String(), "cloud_hwm", rc.HWM, "local_head", u.o.Source.LastSeq())
	if err := d.Diverged(rc); err != nil {
		return fmt.Errorf("the cloud is beyond or apart from the outbox, and a new epoch could not start: %w", err)
	}
	u.update(func(s *Stats) { s.NewStreams++ })
	return ErrNewStream
}
