package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/simulator/load"
)

// ceilingBatch is how many segments one plain COPY transaction carries,
// as one commit transaction of the cloud carries a batch of them.
const ceilingBatch = 4

// copyCeiling measures the plain COPY ceiling of `sim load` on the
// cloud's Postgres server: rows like the run's, made by the same
// generator, copied with cloud/ledger's ceiling code into the ledger
// table of a scratch database migrated with the ledger's own migrations
// (so the run's ledger gets no foreign rows), first by one connection,
// then by workers at once. The scratch database is dropped after.
func copyCeiling(dbURL string) func(ctx context.Context, segs []*protocol.Segment, workers int) (load.Ceiling, error) {
	return func(ctx context.Context, segs []*protocol.Segment, workers int) (load.Ceiling, error) {
		res := load.Ceiling{Workers: workers}
		cfg, err := pgx.ParseConfig(dbURL)
		if err != nil {
			return res, err
		}
		admin, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return res, fmt.Errorf("connect: %w", err)
		}
		defer admin.Close(context.Background())
		name := fmt.Sprintf("outpost_ceiling_%d", time.Now().UnixNano())
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			return res, fmt.Errorf("create the scratch database %s (the ceiling needs CREATEDB on the cloud's server): %w", name, err)
		}
		defer func() {
			_, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		}()
		pcfg, err := pgxpool.ParseConfig(dbURL)
		if err != nil {
			return res, err
		}
		pcfg.ConnConfig.Database = name
		pool, err := pgxpool.NewWithConfig(ctx, pcfg)
		if err != nil {
			return res, err
		}
		defer pool.Close()
		if err := ledger.Migrate(ctx, pool); err != nil {
			return res, fmt.Errorf("migrate the scratch database: %w", err)
		}
		scfg := cfg.Copy()
		scfg.Database = name
		conns := make([]*pgx.Conn, workers)
		for i := range conns {
			if conns[i], err = pgx.ConnectConfig(ctx, scfg); err != nil {
				return res, err
			}
			defer conns[i].Close(context.Background())
		}
		var pos atomic.Int64
		batches := func() ([]ledger.CeilingBatch, error) {
			var out []ledger.CeilingBatch
			for i := 0; i < len(segs); i += ceilingBatch {
				rows, err := ledger.CeilingRecords(segs[i:min(i+ceilingBatch, len(segs))], func() int64 { return pos.Add(1) }, time.Now())
				if err != nil {
					return nil, err
				}
				res.Rows += rows.Len()
				out = append(out, rows)
			}
			return out, nil
		}
		one, err := batches()
		if err != nil {
			return res, err
		}
		t0 := time.Now()
		for _, b := range one {
			if err := ledger.PlainCopy(ctx, conns[0], b); err != nil {
				return res, err
			}
		}
		res.OneStream = float64(res.Rows) / time.Since(t0).Seconds()
		rows := res.Rows
		many, err := batches()
		if err != nil {
			return res, err
		}
		var wg sync.WaitGroup
		errs := make([]error, workers)
		t0 = time.Now()
		for w := range workers {
			wg.Go(func() {
				for i := w; i < len(many); i += workers {
					if err := ledger.PlainCopy(ctx, conns[w], many[i]); err != nil {
						errs[w] = err
						return
					}
				}
			})
		}
		wg.Wait()
		res.SameWorkers = float64(res.Rows-rows) / time.Since(t0).Seconds()
		res.Rows = rows
		for _, err := range errs {
			if err != nil {
				return res, err
			}
		}
		return res, nil
	}
}
