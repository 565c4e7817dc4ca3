package ota

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/internal/durable"
	"github.com/outpost-edge/outpost/protocol"
)

// Command gate errors.
var (
	// ErrCommandRefused: a command this edge will not act on (not signed by
	// the pinned cloud key, for another edge, expired, or replayed).
	ErrCommandRefused = errors.New("command refused")
	// ErrCommandReplay (with ErrCommandRefused): a validly signed command
	// for this edge whose seq is at or below the last accepted one. The
	// cloud redelivers commands at every hello until it sees the edge's
	// acknowledgement, so this is normal: it is counted and logged, and no
	// event is spooled (redelivery cannot fill the outbox).
	ErrCommandReplay = errors.New("command already accepted")
)

// DefaultRefusalEvery is how often at most a refusal of each reason class
// becomes an ota.command_refused event (CommandGate.RefusalEvery).
const DefaultRefusalEvery = time.Minute

// CommandGate decides whether a cloud command may be acted on, and
// records its decisions as events in the spool, so each command is
// acknowledged in the edge's own signed ledger (ota.command_accepted, or
// ota.command_refused with the reason). The highest accepted sequence
// number is persisted (fsynced) before Accept returns the command, under
// a flock of Path.lock: a command is accepted once, even across
// processes and restarts.
//
// Commands must arrive in sequence order: the cloud keeps the commands of
// an offline edge and delivers them in order when it reconnects; one at or
// below the last accepted is a redelivery (or a replay), dropped without
// an event.
//
// Refusals are events, but at most one per RefusalEvery per reason class
// (a command that does not verify, one for another edge, an expired one);
// the rest are counted, and the next recorded refusal of the class says
// how many were not recorded. So an attacker on the broker cannot fill the
// outbox with refusals.
type CommandGate struct {
	Path      string        // the state file (highest accepted seq)
	Edge      string        // this edge's id
	CloudKeys protocol.Keys // the pinned cloud key
	Spool     Spool
	Now       func() time.Time
	// Keep, when set, runs for an accepted command under the gate's lock,
	// before its seq is persisted: what it keeps (an assignment) is
	// durable before the command counts as accepted. Its error refuses
	// nothing: the command is not accepted, and the cloud's next delivery
	// tries again.
	Keep func(c protocol.Command, msg []byte) error
	// RefusalEvery is the least time between two recorded refusals of
	// one class (DefaultRefusalEvery).
	RefusalEvery time.Duration
	Logger       *slog.Logger // slog.Default()

	accepted, redelivered, refused, unrecorded atomic.Uint64

	mu      sync.Mutex // guards classes
	classes map[string]*refusalClass
}

type refusalClass struct {
	last       time.Time // the last refusal recorded as an event
	unrecorded uint64    // refusals since, counted only
}

// GateStats counts a gate's decisions since it was made.
type GateStats struct {
	Accepted    uint64 `json:"accepted"`
	Redelivered uint64 `json:"redelivered"` // validly signed, at or below the last accepted: dropped silently
	Refused     uint64 `json:"refused"`
	Unrecorded  uint64 `json:"refusals_unrecorded"` // refusals counted but not spooled (rate limit)
	// Dropped is filled by the gate's caller: commands it could not queue
	// for the gate (the cloud redelivers them at the next hello).
	Dropped uint64 `json:"dropped,omitempty"`
}

// Stats returns the gate's counters.
func (g *CommandGate) Stats() GateStats {
	return GateStats{Accepted: g.accepted.Load(), Redelivered: g.redelivered.Load(), Refused: g.refused.Load(), Unrecorded: g.unrecorded.Load()}
}

type gateState struct {
	Seq uint64 `json:"seq"`
}

// Last is the seq of the last accepted command (0: none), what the hello
// tells the cloud.
func (g *CommandGate) Last() (uint64, error) {
	st, err := g.read()
	return st.Seq, err
}

func (g *CommandGate) log() *slog.Logger {
	if g.Logger != nil {
		return g.Logger
	}
	return slog.Default()
}

// Accept verifies msg and returns the command to act on, or an error
// wrapping ErrCommandRefused that says why (and ErrCommandReplay for a
// redelivery).
func (g *CommandGate) Accept(msg []byte) (protocol.Command, error) {
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}
	at := now()
	c, err := protocol.VerifyCommand(msg, g.CloudKeys)
	if err != nil {
		return c, g.refuse("unverified", msg, c, at, fmt.Errorf("%w: %w", ErrCommandRefused, err))
	}
	if c.Edge != g.Edge {
		return c, g.refuse("foreign", msg, c, at, fmt.Errorf("%w: command %d is for edge %s, this is %s", ErrCommandRefused, c.Seq, c.Edge, g.Edge))
	}
	// The directory may not exist yet (edge run --ota-repo before any
	// event or refusal made it).
	if err := os.MkdirAll(filepath.Dir(g.Path), 0o755); err != nil {
		return c, fmt.Errorf("command state: %w", err)
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
	// Before the expiry: a redelivered command that has expired since is
	// still only a redelivery.
	if c.Seq <= st.Seq {
		g.redelivered.Add(1)
		g.log().Debug("dropped a command already accepted (a redelivery or a replay)", "seq", c.Seq, "kind", c.Kind, "last_accepted", st.Seq)
		return c, fmt.Errorf("%w: %w: command %d (%s) is a replay: the last accepted is %d", ErrCommandRefused, ErrCommandReplay, c.Seq, c.Kind, st.Seq)
	}
	if exp := time.UnixMilli(c.Expires); !at.Before(exp) {
		return c, g.refuse("expired", msg, c, at, fmt.Errorf("%w: command %d (%s) expired at %s", ErrCommandRefused, c.Seq, c.Kind, exp.UTC().Format(time.RFC3339)))
	}
	if g.Keep != nil {
		if err := g.Keep(c, msg); err != nil {
			return c, fmt.Errorf("keep command %d (%s): %w", c.Seq, c.Kind, err)
		}
	}
	// The acknowledgement is spooled before the seq is persisted: a crash
	// (or a spool that cannot be written) in between leaves the command
	// unaccepted, and the cloud's redelivery records it then (its id is
	// fixed: a second copy is one event). Persisted first, a crash lost the
	// event for good, and the rollout never saw the edge accept.
	// It names the command by the digest of its signed bytes as well as by
	// its seq: the cloud acknowledges that command only, not whatever holds
	// the seq there now (a cloud database restored from a backup reissues
	// seqs).
	sum := sha256.Sum256(msg)
	if err := g.Spool.Add(Event{ID: "cmd-" + strconv.FormatUint(c.Seq, 10) + "-accepted", Kind: "ota.command_accepted", Target: c.Kind,
		Reason: fmt.Sprintf("command %d", c.Seq), Command: hex.EncodeToString(sum[:]), At: at}); err != nil {
		return c, fmt.Errorf("record the acceptance of command %d (%s): %w", c.Seq, c.Kind, err)
	}
	b, _ := json.Marshal(gateState{Seq: c.Seq})
	if err := durable.WriteFile(g.Path, b, 0o600); err != nil {
		return c, fmt.Errorf("record command %d: %w", c.Seq, err)
	}
	g.accepted.Add(1)
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

// refuse spools the refusal unless one of its class was recorded within
// RefusalEvery (best effort: the refusal stands either way), and returns
// err.
func (g *CommandGate) refuse(class string, msg []byte, c protocol.Command, at time.Time, err error) error {
	g.refused.Add(1)
	every := g.RefusalEvery
	if every <= 0 {
		every = DefaultRefusalEvery
	}
	g.mu.Lock()
	if g.classes == nil {
		g.classes = map[string]*refusalClass{}
	}
	rc := g.classes[class]
	if rc == nil {
		rc = &refusalClass{}
		g.classes[class] = rc
	}
	// A clock set back by more than every records again rather than never.
	if d := at.Sub(rc.last); !rc.last.IsZero() && d < every && d > -every {
		rc.unrecorded++
		g.mu.Unlock()
		g.unrecorded.Add(1)
		g.log().Debug("refused a command (not recorded: rate limit)", "class", class, "err", err)
		return err
	}
	reason := err.Error()
	if rc.unrecorded > 0 {
		reason += fmt.Sprintf(" (and %d more %s refusals since %s, counted but not recorded)", rc.unrecorded, class, rc.last.UTC().Format(time.RFC3339))
	}
	rc.last, rc.unrecorded = at, 0
	g.mu.Unlock()
	g.log().Warn("refused a command", "class", class, "err", err)
	// One id per message and moment: a refusal recorded twice (a retry of
	// the same delivery) is one event.
	sum := sha256.Sum256(msg)
	e := Event{ID: "cmd-refused-" + hex.EncodeToString(sum[:8]) + "-" + strconv.FormatInt(at.UnixNano(), 36),
		Kind: "ota.command_refused", Target: c.Kind, Reason: reason, At: at}
	if sErr := g.Spool.Add(e); sErr != nil {
		return fmt.Errorf("%w (and recording the refusal failed: %v)", err, sErr)
	}
	return err
}
