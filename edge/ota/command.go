package ota

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/protocol"
)

// ErrCommandRefused: a command this edge will not act on (not signed by
// the pinned cloud key, for another edge, expired, or replayed).
var ErrCommandRefused = errors.New("command refused")

// CommandGate decides whether a cloud command may be acted on, and
// records every decision as an event in the spool, so each command is
// acknowledged in the edge's own signed ledger (ota.command_accepted, or
// ota.command_refused with the reason). The highest accepted sequence
// number is persisted (fsynced) before Accept returns the command, under
// a flock of Path.lock: a command is accepted once, even across
// processes and restarts.
//
// Commands must arrive in sequence order: the cloud keeps the commands of
// an offline edge and delivers them in order when it reconnects; one
// older than the last accepted is a replay.
type CommandGate struct {
	Path      string        // the state file (highest accepted seq)
	Edge      string        // this edge's id
	CloudKeys protocol.Keys // the pinned cloud key
	Spool     Spool
	Now       func() time.Time
}

type gateState struct {
	Seq uint64 `json:"seq"`
}

// Accept verifies msg and returns the command to act on, or an error
// wrapping ErrCommandRefused that says why.
func (g *CommandGate) Accept(msg []byte) (protocol.Command, error) {
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}
	at := now()
	c, err := protocol.VerifyCommand(msg, g.CloudKeys)
	if err != nil {
		return c, g.refuse(msg, c, at, fmt.Errorf("%w: %w", ErrCommandRefused, err))
	}
	if c.Edge != g.Edge {
		return c, g.refuse(msg, c, at, fmt.Errorf("%w: command %d is for edge %s, this is %s", ErrCommandRefused, c.Seq, c.Edge, g.Edge))
	}
	if exp := time.UnixMilli(c.Expires); !at.Before(exp) {
		return c, g.refuse(msg, c, at, fmt.Errorf("%w: command %d (%s) expired at %s", ErrCommandRefused, c.Seq, c.Kind, exp.UTC().Format(time.RFC3339)))
	}
	unlock, err := firmware.LockFile(g.Path + ".lock")
	if err != nil {
		return c, err
	}
	defer unlock()
	st, err := g.read()
	if err != nil {
		return c, err
	}
	if c.Seq <= st.Seq {
		return c, g.refuse(msg, c, at, fmt.Errorf("%w: command %d (%s) is a replay: the last accepted is %d", ErrCommandRefused, c.Seq, c.Kind, st.Seq))
	}
	b, _ := json.Marshal(gateState{Seq: c.Seq})
	if err := durable.WriteFile(g.Path, b, 0o600); err != nil {
		return c, fmt.Errorf("record command %d: %w", c.Seq, err)
	}
	if err := g.Spool.Add(Event{ID: "cmd-" + strconv.FormatUint(c.Seq, 10) + "-accepted", Kind: "ota.command_accepted", Target: c.Kind,
		Reason: fmt.Sprintf("command %d", c.Seq), At: at}); err != nil {
		return c, fmt.Errorf("acknowledge command %d: %w", c.Seq, err)
	}
	return c, nil
}

func (g *CommandGate) read() (gateState, error) {
	var st gateState
	b, err := os.ReadFile(g.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("command state %s: %w", g.Path, err)
	}
	return st, nil
}

// refuse spools the refusal (best effort: the refusal stands either way)
// and returns err.
func (g *CommandGate) refuse(msg []byte, c protocol.Command, at time.Time, err error) error {
	// One id per message and moment: a refusal recorded twice (a retry of
	// the same delivery) is one event.
	sum := sha256.Sum256(msg)
	e := Event{ID: "cmd-refused-" + hex.EncodeToString(sum[:8]) + "-" + strconv.FormatInt(at.UnixNano(), 36),
		Kind: "ota.command_refused", Target: c.Kind, Reason: err.Error(), At: at}
	if sErr := g.Spool.Add(e); sErr != nil {
		return fmt.Errorf("%w (and recording the refusal failed: %v)", err, sErr)
	}
	return err
}
