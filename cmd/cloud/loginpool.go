package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// loginPoolConns is the size of the broker logins' own pool.
const loginPoolConns = 4

// loginPool is a small pool of its own for the embedded brokers' logins
// (the edge's keys, then the counter spent with an UPDATE; cloud/edgeauth),
// on the same database as main. nats-server and mochi check a login on the
// connection's read goroutine, while the client waits; on the main pool,
// whose connections (pgxpool's default: 4 on 2 cores) the commit workers,
// projections and API hold, a storm's logins queued behind the storm's
// commits. The check is the same on either pool: every token is verified
// and its counter spent durably before the session opens.
func loginPool(ctx context.Context, main *pgxpool.Pool) (*pgxpool.Pool, error) {
	cfg := main.Config().Copy()
	cfg.MaxConns, cfg.MinConns = loginPoolConns, 0
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("the broker logins' pool: %w", err)
	}
	return p, nil
}
