package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"
	_ "time/tzdata" // assignment windows are in the store's zone; a gateway may have no zoneinfo

	"github.com/outpost-edge/outpost/edge/ota"
	"github.com/outpost-edge/outpost/protocol"
)

// commander is `edge run --ota-repo`'s side of the command channel: the
// uplink's transport hands it every message on the edge's cmd topic
// (offer, from the transport's goroutine, never blocking); one worker
// passes each through the gate, whose Keep is the assignment store; the
// Assigner installs the current assignment in the background.
//
// Two queues: offer checks each message's signature and edge first (pure
// CPU, about 0.1 ms), and only a command signed for this edge above the
// last accepted seq goes to queue; everything else (forged, foreign,
// replayed, oversized) goes to suspect, which the worker takes only when
// queue is empty. A flood from the broker then fills suspect alone and
// cannot crowd out the cloud's commands: a dropped seq N followed by an
// accepted N+1 would be lost for good (the hello says N+1, and the cloud
// does not send N again).
type commander struct {
	gate    *ota.CommandGate
	store   *ota.Assignments
	keys    protocol.Keys
	edge    string
	queue   chan []byte   // commands that verify for this edge, above last
	suspect chan []byte   // the rest, for the gate to refuse (and record within its rate)
	last    atomic.Uint64 // the last accepted seq, as offer sorts by it
	dropped atomic.Uint64 // messages offered while their queue was full (the cloud redelivers at the next hello)
	log     *slog.Logger
}

// assignedPendingDeadline is the pending deadline of an assigned install,
// edge ota install --probation's default.
const assignedPendingDeadline = 15 * time.Minute

// commandQueue bounds the commands waiting for the gate. The cloud sends an
// edge few; a flood from the broker beyond this is dropped, not queued.
const commandQueue = 64

func newCommander(dataDir, edgeID string, cloudKeys protocol.Keys, log *slog.Logger) *commander {
	dir := otaDirFor(dataDir)
	spool := otaSpool(dir)
	log = log.With("component", "ota-commands")
	store := &ota.Assignments{Dir: dir, Edge: edgeID, CloudKeys: cloudKeys, Spool: spool, Logger: log}
	c := &commander{
		gate: &ota.CommandGate{Path: filepath.Join(dir, "commands.json"), Edge: edgeID, CloudKeys: cloudKeys, Spool: spool,
			Keep: store.Keep, Logger: log},
		store: store, keys: cloudKeys, edge: edgeID,
		queue: make(chan []byte, commandQueue), suspect: make(chan []byte, commandQueue), log: log,
	}
	c.last.Store(c.lastAccepted())
	return c
}

// offer is the transport's OnCommand.
func (c *commander) offer(msg []byte) {
	q := c.suspect
	if cmd, err := protocol.VerifyCommand(msg, c.keys); err == nil && cmd.Edge == c.edge && cmd.Seq > c.last.Load() {
		q = c.queue
	}
	select {
	case q <- msg:
	default:
		c.dropped.Add(1)
	}
}

// lastAccepted is the uplink's Options.Cmd: the last accepted command, for
// hellos.
func (c *commander) lastAccepted() uint64 {
	n, err := c.gate.Last()
	if err != nil {
		c.log.Error("the command state cannot be read; the hello asks for every command", "err", err)
	}
	return n
}

// run gates the queued commands until ctx ends. A refusal is the gate's
// to record; the command is then dropped.
func (c *commander) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg := <-c.queue:
			c.take(msg)
			continue
		default:
		}
		select {
		case <-ctx.Done():
			return nil
		case msg := <-c.queue:
			c.take(msg)
		case msg := <-c.suspect:
			c.take(msg)
		}
	}
}

func (c *commander) take(msg []byte) {
	cmd, err := c.gate.Accept(msg)
	switch {
	case err == nil:
		c.log.Info("accepted a command", "seq", cmd.Seq, "kind", cmd.Kind)
		if cmd.Seq > c.last.Load() {
			c.last.Store(cmd.Seq)
		}
		c.store.Notify()
	case errors.Is(err, ota.ErrCommandRefused):
		// Logged (and recorded, within its rate) by the gate.
	default:
		c.log.Error("a command could not be taken; the cloud will send it again", "seq", cmd.Seq, "kind", cmd.Kind, "err", err)
	}
}

// assigner is the Assigner of `edge run --ota-repo repo`: each assignment is
// installed by otaInstallOnline, the code `edge ota install --repo` runs.
func (c *commander) assigner(dataDir, repo string, log *slog.Logger) *ota.Assigner {
	o := &otaFlags{dataDir: dataDir, otaDir: otaDirFor(dataDir)}
	return &ota.Assigner{Store: c.store, Logger: log, Install: func(ctx context.Context, a *ota.Assigned, set func(state, reason string) error) error {
		return otaInstallOnline(ctx, o, onlineInstall{repo: repo, target: a.Target, probation: assignedPendingDeadline,
			assigned: a, background: true, set: set}, io.Discard)
	}}
}

// assignments is the store `edge ota` commands read the assignment from,
// with the edge id and cloud key this data dir enrolled with.
func (o *otaFlags) assignments() (*ota.Assignments, error) {
	id, err := loadIdentity(o.dataDir)
	if err != nil {
		return nil, err
	}
	if id.Edge == "" || id.CloudPublicKey == "" {
		return nil, fmt.Errorf("%s has no edge id and cloud key (edge enroll) to verify an assignment with", identityPath(o.dataDir))
	}
	pub, err := parseKeyHex("cloud_public_key in "+identityPath(o.dataDir), id.CloudPublicKey)
	if err != nil {
		return nil, err
	}
	return &ota.Assignments{Dir: o.dir(), Edge: id.Edge, CloudKeys: protocol.NewKeyMap(pub), Spool: otaSpool(o.dir())}, nil
}

// assignmentWindow is the assignment's window for the Downloader, on a
// clock in its zone (a download stops when the window closes and resumes
// at the next opening).
func assignmentWindow(a *ota.Assigned) (*ota.Window, func() time.Time, error) {
	if a == nil || a.Window == "" {
		return nil, nil, nil
	}
	w, err := ota.ParseWindow(a.Window)
	if err != nil {
		return nil, nil, err
	}
	loc := time.Local
	if a.Zone != "" {
		if loc, err = time.LoadLocation(a.Zone); err != nil {
			return nil, nil, err
		}
	}
	return w, func() time.Time { return time.Now().In(loc) }, nil
}
