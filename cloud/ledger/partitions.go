package ledger

import (
	"context"
	"log/slog"
	"time"
)

// The partition maintenance policy, the one the service runs
// (PartitionKeeper) and docs/OPERATIONS.md describes: every
// PartitionCheckEvery, make sure the native partitions cover now through
// DefaultPartitionsAhead (the current month and the two after it). A
// check that fails is tried again after PartitionRetryEvery; with two
// months ahead, a day of failures costs nothing, but the error is logged
// each time.
const (
	PartitionCheckEvery = 24 * time.Hour
	PartitionRetryEvery = time.Hour
)

// PartitionKeeper runs the partition maintenance policy until its context
// ends. Zero fields take the policy's values.
type PartitionKeeper struct {
	DB     DB
	Ahead  time.Duration // default DefaultPartitionsAhead
	Every  time.Duration // default PartitionCheckEvery
	Retry  time.Duration // default PartitionRetryEvery
	Now    func() time.Time
	Logger *slog.Logger
}

// Run checks at once, then on the policy's schedule, until ctx ends. It
// returns nil then: a failed check is logged and retried, never fatal,
// because until the month turns the existing partitions (and after it the
// DEFAULT partition) keep taking rows.
func (k PartitionKeeper) Run(ctx context.Context) error {
	if k.Ahead <= 0 {
		k.Ahead = DefaultPartitionsAhead
	}
	if k.Every <= 0 {
		k.Every = PartitionCheckEvery
	}
	if k.Retry <= 0 {
		k.Retry = PartitionRetryEvery
	}
	if k.Now == nil {
		k.Now = time.Now
	}
	if k.Logger == nil {
		k.Logger = slog.Default()
	}
	log := k.Logger.With("component", "partitions")
	for {
		wait := k.Every
		created, err := EnsurePartitions(ctx, k.DB, k.Now(), k.Ahead)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			wait = k.Retry
			log.Error("could not create ledger partitions ahead; rows fall into the default partition if a month starts uncovered",
				"err", err, "retry_in", wait)
		case len(created) > 0:
			log.Info("created ledger partitions", "partitions", created, "ahead", k.Ahead)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
