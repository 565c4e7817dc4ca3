package rollout

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/protocol"
)

// Commands is the command channel as rollouts use it (cloud/command).
type Commands interface {
	// Enqueue stores a signed command for edge in tx (command.Enqueue).
	Enqueue(ctx context.Context, tx pgx.Tx, edge, kind, ref string, body []byte, expires time.Time) (uint64, error)
	// CancelRef withdraws ref's commands the edges have not acknowledged
	// (command.CancelRef).
	CancelRef(ctx context.Context, tx pgx.Tx, ref string) ([]string, error)
	// Held reports whether edge may hold its command seq: it was
	// published at least once, or acknowledged.
	Held(ctx context.Context, tx pgx.Tx, edge string, seq uint64) (bool, error)
}

// CommandQueue is Commands on cloud/command, signing with the cloud key.
type CommandQueue struct{ Signer *protocol.Signer }

var _ Commands = CommandQueue{}

// Enqueue implements Commands.
func (q CommandQueue) Enqueue(ctx context.Context, tx pgx.Tx, edge, kind, ref string, body []byte, expires time.Time) (uint64, error) {
	return command.Enqueue(ctx, tx, q.Signer, edge, kind, ref, body, expires)
}

// CancelRef implements Commands.
func (CommandQueue) CancelRef(ctx context.Context, tx pgx.Tx, ref string) ([]string, error) {
	return command.CancelRef(ctx, tx, ref)
}

// Held implements Commands.
func (CommandQueue) Held(ctx context.Context, tx pgx.Tx, edge string, seq uint64) (bool, error) {
	cs, err := command.List(ctx, tx, edge)
	if err != nil {
		return false, err
	}
	for _, c := range cs {
		if c.Seq == seq {
			return c.DeliveredAt != nil || c.AckedAt != nil, nil
		}
	}
	return false, nil
}
