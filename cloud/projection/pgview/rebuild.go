package pgview

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
)

// lockRebuild is the session advisory lock a rebuild or check holds: one
// at a time per database ("outpost" in the high bytes, as cloud/ledger's).
const lockRebuild int64 = 0x6f7574706f737410

// ErrBusy is returned when another rebuild or check holds the database.
var ErrBusy = errors.New("another projection rebuild or check is running on this database; wait for it to finish")

// shadowSuffix names the tables a rebuild folds into, beside the live ones.
const shadowSuffix = "_rebuild"

// RebuildOptions configure Rebuild.
type RebuildOptions struct {
	// Swap replaces the live rows with the rebuilt ones (rebuild); without
	// it the rebuilt rows are only compared and dropped (check).
	Swap bool
	// Page is how many ledger records each shadow transaction folds;
	// default 2000.
	Page   int
	Dir    *Directory
	Logger *slog.Logger
}

// Diff is how one table's live rows differ from the rebuilt ones.
type Diff struct {
	Table        string
	LiveOnly     int64  // rows only the live table has (or has differently)
	RebuiltOnly  int64  // rows only the rebuilt table has (or has differently)
	FirstLive    string // the first such live row in key order, as JSON
	FirstRebuilt string
}

func (d Diff) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d live rows and %d rebuilt rows differ", d.Table, d.LiveOnly, d.RebuiltOnly)
	if d.FirstLive != "" {
		fmt.Fprintf(&b, "; first live: %s", d.FirstLive)
	}
	if d.FirstRebuilt != "" {
		fmt.Fprintf(&b, "; first rebuilt: %s", d.FirstRebuilt)
	}
	return b.String()
}

// Result is what a Rebuild found and did.
type Result struct {
	Through       int64 // the ledger position the rebuilt rows reflect
	Records       int64 // ledger records folded
	LiveVersion   int   // the live checkpoint's version before (0: there was none)
	LiveDigest    Digest
	RebuiltDigest Digest
	Diffs         []Diff // tables that differ, in table order; empty when equal
	Swapped       bool
}

// Equal reports whether the rebuilt rows equal the live ones, row for row,
// and both were folded from the same records.
func (r *Result) Equal() bool { return len(r.Diffs) == 0 && r.LiveDigest == r.RebuiltDigest }

// Rebuild recomputes the projection from the ledger into shadow tables
// beside the live ones while ingest keeps committing, catches up to the
// live position, compares, and (with Swap) replaces the live rows, all in
// one transaction that holds the live checkpoint lock: a reader sees the
// old rows or the new ones, and commits wait for it, then fold on the new
// rows. The ledger is read through ledger.ReadCommitted.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, o RebuildOptions) (*Result, error) {
	if o.Page <= 0 {
		o.Page = 2000
	}
	if o.Dir == nil {
		o.Dir = NewDirectory()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("rebuild: %w", err)
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockRebuild).Scan(&got); err != nil {
		return nil, fmt.Errorf("rebuild: %w", err)
	}
	if !got {
		return nil, ErrBusy
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockRebuild)

	shadow := &Projection{Dir: o.Dir, name: Name + shadowSuffix, suffix: shadowSuffix}
	if err := createShadow(ctx, pool); err != nil {
		return nil, err
	}
	defer dropShadow(context.WithoutCancel(ctx), pool, o.Logger)

	res := &Result{}
	last := int64(0)
	for {
		through, err := ledger.LastPos(ctx, pool)
		if err != nil {
			return nil, fmt.Errorf("rebuild: %w", err)
		}
		if through-last < int64(o.Page) {
			break // close enough: the rest is caught up under the lock
		}
		for last < through {
			n, at, err := foldPage(ctx, pool, shadow, last, through, o.Page)
			if err != nil {
				return nil, err
			}
			res.Records += int64(n)
			last = at
		}
		o.Logger.Info("projection rebuild progress", "projection", Name, "pos", last)
	}
	return res, finish(ctx, pool, shadow, last, o, res)
}

// foldPage folds the records after pos after, up to through, at most page
// of them, into the shadow tables in one transaction.
func foldPage(ctx context.Context, pool *pgxpool.Pool, shadow *Projection, after, through int64, page int) (int, int64, error) {
	recs, err := ledger.ReadCommitted(ctx, pool, after, through, page)
	if err != nil {
		return 0, 0, fmt.Errorf("rebuild: %w", err)
	}
	if len(recs) == 0 {
		return 0, through, nil
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return shadow.Apply(ctx, tx, recs) })
	if err != nil {
		return 0, 0, fmt.Errorf("rebuild: fold positions %d to %d: %w", recs[0].Pos, recs[len(recs)-1].Pos, err)
	}
	at := recs[len(recs)-1].Pos
	if len(recs) < page {
		at = through
	}
	return len(recs), at, nil
}

// finish runs the last transaction: lock the live checkpoint (commits wait
// from here), fold the rest of the ledger up to it into the shadow, compare,
// and swap or not.
func finish(ctx context.Context, pool *pgxpool.Pool, shadow *Projection, last int64, o RebuildOptions, res *Result) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	live, existed, err := ReadCheckpoint(ctx, tx, Name)
	if err != nil {
		return err
	}
	if existed {
		res.LiveVersion = live.Version
	}
	if live, err = lockCheckpoint(ctx, tx, Name); err != nil {
		return err
	}
	res.LiveDigest = live.Digest
	through := max(live.LastPos, last)
	if !existed || live.LastPos == 0 {
		// No commit has folded into the live tables: rebuild through
		// everything committed.
		if through, err = ledger.LastPos(ctx, tx); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
	}
	recs, err := ledger.ReadCommitted(ctx, tx, last, through, 0)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	if len(recs) > 0 {
		if err := shadow.Apply(ctx, tx, recs); err != nil {
			return fmt.Errorf("rebuild: catch up through position %d: %w", through, err)
		}
	}
	res.Records += int64(len(recs))
	res.Through = through
	// Every record at or below through must have been folded: one that
	// committed late with a lower position than a page already read (once
	// commits no longer take positions in commit order) would be missing.
	var n int64
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM ledger WHERE pos <= $1`, through).Scan(&n); err != nil {
		return fmt.Errorf("rebuild: count the ledger: %w", err)
	}
	if n != res.Records {
		return fmt.Errorf("rebuild: the ledger holds %d records through position %d, the rebuild folded %d: records committed below positions it had already read; run it again", n, through, res.Records)
	}
	sc, _, err := ReadCheckpoint(ctx, tx, shadow.name)
	if err != nil {
		return err
	}
	res.RebuiltDigest = sc.Digest
	if res.Diffs, err = compare(ctx, tx, "", shadowSuffix); err != nil {
		return err
	}
	if !o.Swap {
		return nil
	}
	b := &pgx.Batch{}
	for _, t := range tables {
		b.Queue(`TRUNCATE ` + t.name)
		b.Queue(fmt.Sprintf(`INSERT INTO %s SELECT * FROM %s%s`, t.name, t.name, shadowSuffix))
	}
	b.Queue(`UPDATE projection_checkpoints SET version = $2, last_pos = $3, digest = $4, updated_at = now() WHERE name = $1`,
		Name, projection.Version, through, sc.Digest[:])
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("rebuild: swap: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("rebuild: swap: %w", err)
	}
	res.Swapped = true
	return nil
}

func createShadow(ctx context.Context, pool *pgxpool.Pool) error {
	b := &pgx.Batch{}
	for _, t := range tables {
		// Unlogged: the shadow is thrown away if the server crashes, and a
		// rebuild then simply starts again.
		b.Queue(fmt.Sprintf(`DROP TABLE IF EXISTS %s%s`, t.name, shadowSuffix))
		b.Queue(fmt.Sprintf(`CREATE UNLOGGED TABLE %s%s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)`,
			t.name, shadowSuffix, t.name))
	}
	b.Queue(`DELETE FROM projection_checkpoints WHERE name = $1`, Name+shadowSuffix)
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
		return fmt.Errorf("rebuild: create the shadow tables: %w", err)
	}
	return nil
}

func dropShadow(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) {
	b := &pgx.Batch{}
	for _, t := range tables {
		b.Queue(fmt.Sprintf(`DROP TABLE IF EXISTS %s%s`, t.name, shadowSuffix))
	}
	b.Queue(`DELETE FROM projection_checkpoints WHERE name = $1`, Name+shadowSuffix)
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
		log.Warn("projection rebuild: drop the shadow tables", "err", err)
	}
}

// compare compares every table with suffix a against the one with suffix
// b and returns the tables that differ.
func compare(ctx context.Context, q pgx.Tx, a, b string) ([]Diff, error) {
	var out []Diff
	for _, t := range tables {
		keys := names(t.key, "")
		ab := fmt.Sprintf(`SELECT * FROM %s%s EXCEPT ALL SELECT * FROM %s%s`, t.name, a, t.name, b)
		ba := fmt.Sprintf(`SELECT * FROM %s%s EXCEPT ALL SELECT * FROM %s%s`, t.name, b, t.name, a)
		sql := fmt.Sprintf(`SELECT (SELECT count(*) FROM (%s) x), (SELECT count(*) FROM (%s) x),
			coalesce((SELECT to_jsonb(x)::text FROM (%s) x ORDER BY %s LIMIT 1), ''),
			coalesce((SELECT to_jsonb(x)::text FROM (%s) x ORDER BY %s LIMIT 1), '')`, ab, ba, ab, keys, ba, keys)
		d := Diff{Table: t.name}
		if err := q.QueryRow(ctx, sql).Scan(&d.LiveOnly, &d.RebuiltOnly, &d.FirstLive, &d.FirstRebuilt); err != nil {
			return nil, fmt.Errorf("compare %s: %w", t.name, err)
		}
		if d.LiveOnly+d.RebuiltOnly > 0 {
			out = append(out, d)
		}
	}
	return out, nil
}

// VersionChanged is NeedsRebuild for a projection folded behind the
// commits (Follower): records the checkpoint has not folded yet are the
// follower's work, so only a change of the definitions (Version) calls for
// a rebuild.
func VersionChanged(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	cp, ok, err := ReadCheckpoint(ctx, pool, Name)
	if err != nil {
		return "", err
	}
	if ok && cp.Version != projection.Version {
		return fmt.Sprintf("its rows were folded by version %d of the definitions, this is version %d", cp.Version, projection.Version), nil
	}
	return "", nil
}

// NeedsRebuild says why the live projection must be rebuilt before it can
// be trusted ("" when it need not): its checkpoint was folded by another
// Version of the definitions, or the ledger holds records no commit has
// folded into the live tables.
func NeedsRebuild(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	cp, ok, err := ReadCheckpoint(ctx, pool, Name)
	if err != nil {
		return "", err
	}
	if ok && cp.Version != projection.Version {
		return fmt.Sprintf("its rows were folded by version %d of the definitions, this is version %d", cp.Version, projection.Version), nil
	}
	last, err := ledger.LastPos(ctx, pool)
	if err != nil {
		return "", err
	}
	// A commit folds into the checkpoint in its own transaction, so while
	// every committer folds, the checkpoint is never behind the ledger.
	if ok && cp.LastPos < last {
		return fmt.Sprintf("the ledger holds records through position %d, the projection was folded through %d (commits were made without projections)", last, cp.LastPos), nil
	}
	if !ok && last > 0 {
		return fmt.Sprintf("the ledger holds records through position %d that no projection has folded", last), nil
	}
	return "", nil
}
