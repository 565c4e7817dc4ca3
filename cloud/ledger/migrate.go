package ledger

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Partitioning modes: how the ledger table is split by commit time.
const (
	PartitionNative      = "native"      // monthly RANGE partitions plus a DEFAULT one
	PartitionTimescaleDB = "timescaledb" // a hypertable, 30-day chunks (migration 0009)
)

// DefaultPartitionsAhead is how far past now Migrate makes partitions, and
// how far PartitionKeeper keeps them made: the current month and the two
// after it.
const DefaultPartitionsAhead = 62 * 24 * time.Hour

// Advisory lock keys (pg_advisory_xact_lock). Arbitrary constants; "outpost"
// in ASCII in the high bytes so that they are recognisable in pg_locks.
const (
	lockMigrate    int64 = 0x6f7574706f737401
	lockPartitions int64 = 0x6f7574706f737402
	// lockCommit is taken by ledger_take_positions (migration 0009), as a
	// session lock for the length of that call only.
	lockCommit int64 = 0x6f7574706f737403
)

// lockEdgeClass is the first key of the two-key transaction advisory lock a
// commit takes per edge (the second is hashtext of the edge id): "outp".
const lockEdgeClass int32 = 0x6f757470

// lockProjectionClass is the first key of the two-key transaction advisory
// lock a commit takes per OrderedProjection (the second is hashtext of its
// OrderKey), before it takes its positions: "outq".
const lockProjectionClass int32 = 0x6f757471

// A migration is one version of the schema: a SQL file for every mode
// (NNNN_name.sql), and files for one partitioning mode (NNNN_name.native.sql,
// NNNN_name.timescaledb.sql) that run after it, in the same transaction. A
// version without a plain file needs both modes' files; one with it states
// only what a mode adds (a TimescaleDB chunk interval), so the SQL common to
// both is written once.
type migration struct {
	version  int
	name     string
	sql      string            // for every mode, first
	variants map[string]string // partitioning mode -> SQL run after sql
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)(?:\.(native|timescaledb))?\.sql$`)

// migrations is the embedded schema history, in version order, versions
// 1..n without gaps.
var migrations = mustLoadMigrations()

func mustLoadMigrations() []migration {
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		panic("ledger: " + err.Error())
	}
	return ms
}

func loadMigrations(fsys fs.FS) ([]migration, error) {
	ents, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, err
	}
	byVersion := map[int]*migration{}
	for _, e := range ents {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %s: name is not NNNN_name[.native|.timescaledb].sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := fs.ReadFile(fsys, "migrations/"+e.Name())
		if err != nil {
			return nil, err
		}
		mg := byVersion[v]
		if mg == nil {
			mg = &migration{version: v, name: m[2]}
			byVersion[v] = mg
		}
		if mg.name != m[2] {
			return nil, fmt.Errorf("migration %04d has two names, %s and %s", v, mg.name, m[2])
		}
		if m[3] == "" {
			mg.sql = string(b)
		} else {
			if mg.variants == nil {
				mg.variants = map[string]string{}
			}
			mg.variants[m[3]] = string(b)
		}
	}
	out := make([]migration, 0, len(byVersion))
	for v := 1; v <= len(byVersion); v++ {
		mg, ok := byVersion[v]
		if !ok {
			return nil, fmt.Errorf("migrations: version %04d is missing", v)
		}
		if mg.sql == "" && (mg.variants[PartitionNative] == "" || mg.variants[PartitionTimescaleDB] == "") {
			return nil, fmt.Errorf("migration %04d must have a plain file (NNNN_name.sql), or both a native and a timescaledb variant", v)
		}
		out = append(out, *mg)
	}
	return out, nil
}

// SchemaVersion is the schema version this binary knows up to.
func SchemaVersion() int { return len(migrations) }

// SchemaError says that the database's schema version is not the one this
// binary knows. It matches ErrSchemaTooNew or ErrSchemaBehind.
type SchemaError struct {
	Have  int // the database's version
	Known int // the latest version this binary knows
}

func (e *SchemaError) Error() string {
	if e.Have > e.Known {
		return fmt.Sprintf("database schema is version %d, this binary knows up to %d: upgrade the binary", e.Have, e.Known)
	}
	return fmt.Sprintf("database schema is version %d, this binary needs %d: run the migrations (cloud migrate)", e.Have, e.Known)
}

func (e *SchemaError) Is(target error) bool {
	return (target == ErrSchemaTooNew && e.Have > e.Known) || (target == ErrSchemaBehind && e.Have < e.Known)
}

const createVersionTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    integer PRIMARY KEY,
	name       text NOT NULL,
	variant    text NOT NULL DEFAULT '',
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// Migrate brings the schema up to this binary's version in one
// transaction, under an advisory lock so that several instances starting
// at once apply each migration exactly once. Running it again is a no-op.
// It refuses, changing nothing, a database whose schema is newer than this
// binary knows. It also makes the ledger partitions for the coming months
// (EnsurePartitions with DefaultPartitionsAhead).
//
// The ledger table's partitioning is chosen when it is created
// (DecidePartitioning): a TimescaleDB hypertable when the extension is
// installed, preloaded and may be created by this role, native monthly
// partitions otherwise. The choice is permanent for that database;
// installing TimescaleDB later does not convert it. MigrateReport also
// says what was chosen and why.
func Migrate(ctx context.Context, db DB) error {
	_, err := MigrateReport(ctx, db)
	return err
}

// MigrateReport is Migrate, and returns the ledger's partitioning with the
// reason for it: the choice this run made when it created the ledger
// table, or PartitioningReport's account of the existing one.
func MigrateReport(ctx context.Context, db DB) (PartitionChoice, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return PartitionChoice{}, fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockMigrate); err != nil {
		return PartitionChoice{}, fmt.Errorf("migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, createVersionTable); err != nil {
		return PartitionChoice{}, fmt.Errorf("migrate: %w", err)
	}
	have, err := schemaVersion(ctx, tx)
	if err != nil {
		return PartitionChoice{}, fmt.Errorf("migrate: %w", err)
	}
	if have > len(migrations) {
		return PartitionChoice{}, &SchemaError{Have: have, Known: len(migrations)}
	}
	var choice PartitionChoice
	for _, m := range migrations[have:] {
		sql, variant := m.sql, ""
		if m.variants != nil {
			if choice.Mode == "" {
				if choice, err = choosePartitioning(ctx, tx); err != nil {
					return PartitionChoice{}, fmt.Errorf("migrate: %w", err)
				}
			}
			if v, ok := m.variants[choice.Mode]; ok {
				sql, variant = sql+"\n"+v, choice.Mode
			}
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			return PartitionChoice{}, fmt.Errorf("migrate: apply %04d_%s: %w", m.version, m.name, err)
		}
		if _, err := tx.Exec(ctx,
			`INSERT INTO schema_migrations (version, name, variant) VALUES ($1, $2, $3)`,
			m.version, m.name, variant); err != nil {
			return PartitionChoice{}, fmt.Errorf("migrate: record %04d: %w", m.version, err)
		}
	}
	if _, err := ensurePartitions(ctx, tx, time.Now(), DefaultPartitionsAhead); err != nil {
		return PartitionChoice{}, fmt.Errorf("migrate: %w", err)
	}
	if choice.Mode == "" {
		if choice, err = partitioningReport(ctx, tx); err != nil {
			return PartitionChoice{}, fmt.Errorf("migrate: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return PartitionChoice{}, fmt.Errorf("migrate: commit: %w", err)
	}
	return choice, nil
}

// PartitionChoice is how the ledger is (or would be) partitioned, and why,
// in words for the operator.
type PartitionChoice struct {
	Mode   string // PartitionNative or PartitionTimescaleDB
	Reason string
}

func (c PartitionChoice) String() string { return c.Mode + ": " + c.Reason }

// TimescaleProbe is what the server says about TimescaleDB, read before
// choosing the partitioning.
type TimescaleProbe struct {
	Available bool // installed on the server (pg_available_extensions)
	Created   bool // the extension exists in this database already
	// Preload is shared_preload_libraries, when this role may read it.
	Preload         string
	PreloadReadable bool
	// Loaded: timescaledb's own settings are registered, so its library
	// is loaded (readable by any role).
	Loaded     bool
	Superuser  bool
	CreateOnDB bool // the role has CREATE on the database
	Role       string
	Database   string
}

// Preloaded reports whether the timescaledb library is loaded at server
// start, which CREATE EXTENSION needs: without it the server ends the
// session with FATAL, which no savepoint catches.
func (p TimescaleProbe) Preloaded() bool {
	if p.Loaded {
		return true
	}
	for _, lib := range strings.Split(p.Preload, ",") {
		lib = strings.Trim(strings.TrimSpace(lib), `"'`)
		if i := strings.LastIndexByte(lib, '/'); i >= 0 {
			lib = lib[i+1:]
		}
		if lib == "timescaledb" {
			return true
		}
	}
	return false
}

// DecidePartitioning chooses how to partition a new ledger table. Mode is
// PartitionTimescaleDB only when CREATE EXTENSION may be tried safely;
// that attempt can still fail (and then the ledger is native, saying so).
func DecidePartitioning(p TimescaleProbe) PartitionChoice {
	switch {
	case p.Created:
		return PartitionChoice{PartitionTimescaleDB, fmt.Sprintf("the timescaledb extension exists in database %s", p.Database)}
	case !p.Available:
		return PartitionChoice{PartitionNative, "TimescaleDB is not installed on this Postgres server (native monthly partitions are the default)"}
	case !p.Preloaded():
		preload := fmt.Sprintf("shared_preload_libraries is %q", p.Preload)
		if !p.PreloadReadable {
			preload = fmt.Sprintf("role %s may not read shared_preload_libraries, and no timescaledb.* settings are loaded", p.Role)
		}
		return PartitionChoice{PartitionNative, "TimescaleDB is installed but not preloaded (" + preload +
			"), and CREATE EXTENSION would end the session; to use it, add timescaledb to shared_preload_libraries and restart Postgres before the first migrate"}
	case !p.Superuser && !p.CreateOnDB:
		return PartitionChoice{PartitionNative, fmt.Sprintf("TimescaleDB is preloaded, but role %s may not create extensions in database %s; "+
			"to use it, GRANT CREATE ON DATABASE %s TO %s (or migrate as a superuser) before the first migrate", p.Role, p.Database, p.Database, p.Role)}
	}
	return PartitionChoice{PartitionTimescaleDB, "TimescaleDB is installed and preloaded, and role " + p.Role + " may create it"}
}

// ProbeTimescale reads what DecidePartitioning needs. Every query is one
// any role may run.
func ProbeTimescale(ctx context.Context, db DB) (TimescaleProbe, error) {
	var p TimescaleProbe
	var preload *string
	err := db.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
		EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
		(SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'),
		EXISTS (SELECT 1 FROM pg_settings WHERE name LIKE 'timescaledb.%'),
		coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false),
		has_database_privilege(current_database(), 'CREATE'),
		current_user::text, current_database()::text`).Scan(
		&p.Available, &p.Created, &preload, &p.Loaded, &p.Superuser, &p.CreateOnDB, &p.Role, &p.Database)
	if err != nil {
		return p, fmt.Errorf("look for timescaledb: %w", err)
	}
	if preload != nil {
		p.Preload, p.PreloadReadable = *preload, true
	}
	return p, nil
}

// choosePartitioning decides, and when the decision is TimescaleDB creates
// the extension in a savepoint, so that a failed CREATE EXTENSION leaves
// the migration transaction usable and the ledger native.
func choosePartitioning(ctx context.Context, tx pgx.Tx) (PartitionChoice, error) {
	p, err := ProbeTimescale(ctx, tx)
	if err != nil {
		return PartitionChoice{}, err
	}
	c := DecidePartitioning(p)
	if c.Mode != PartitionTimescaleDB || p.Created {
		return c, nil
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return PartitionChoice{}, err
	}
	if _, err := sp.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS timescaledb`); err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return PartitionChoice{}, rerr
		}
		return PartitionChoice{PartitionNative, "CREATE EXTENSION timescaledb failed: " + err.Error()}, nil
	}
	if err := sp.Commit(ctx); err != nil {
		return PartitionChoice{}, err
	}
	return PartitionChoice{PartitionTimescaleDB, "created the timescaledb extension: " + c.Reason}, nil
}

// PartitioningReport says how the existing ledger is partitioned and why,
// for start-up logs: a hypertable, or native with the reason TimescaleDB is
// not used (and, when it could be now, that an existing ledger is not
// converted).
func PartitioningReport(ctx context.Context, db DB) (PartitionChoice, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return PartitionChoice{}, fmt.Errorf("partitioning: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	return partitioningReport(ctx, tx)
}

func partitioningReport(ctx context.Context, tx pgx.Tx) (PartitionChoice, error) {
	mode, err := Partitioning(ctx, tx)
	if err != nil {
		return PartitionChoice{}, err
	}
	if mode == PartitionTimescaleDB {
		return PartitionChoice{mode, "the ledger is a TimescaleDB hypertable"}, nil
	}
	p, err := ProbeTimescale(ctx, tx)
	if err != nil {
		return PartitionChoice{}, err
	}
	if c := DecidePartitioning(p); c.Mode == PartitionNative {
		return c, nil
	}
	return PartitionChoice{PartitionNative, "the ledger was created with native partitions; TimescaleDB is usable now, " +
		"but an existing ledger is not converted (the choice is made once, when the ledger table is created)"}, nil
}

func schemaVersion(ctx context.Context, q DB) (int, error) {
	var v int
	err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// CheckSchema reports whether the database is at exactly this binary's
// schema version: nil, or a *SchemaError (ErrSchemaBehind, ErrSchemaTooNew).
// It is the readiness check.
func CheckSchema(ctx context.Context, db DB) error {
	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	have := 0
	if exists {
		var err error
		if have, err = schemaVersion(ctx, db); err != nil {
			return fmt.Errorf("check schema: %w", err)
		}
	}
	if have != len(migrations) {
		return &SchemaError{Have: have, Known: len(migrations)}
	}
	return nil
}

// Partitioning returns how the ledger table is partitioned: PartitionNative
// or PartitionTimescaleDB.
func Partitioning(ctx context.Context, db DB) (string, error) {
	var kind string
	err := db.QueryRow(ctx, `SELECT relkind::text FROM pg_class WHERE oid = to_regclass('ledger')`).Scan(&kind)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", fmt.Errorf("partitioning: no ledger table: %w", ErrSchemaBehind)
	case err != nil:
		return "", fmt.Errorf("partitioning: %w", err)
	case kind == "p":
		return PartitionNative, nil
	}
	return PartitionTimescaleDB, nil
}

// EnsurePartitions makes the monthly ledger partitions that cover now
// through now+ahead and do not exist yet, and returns their names.
// PartitionKeeper calls it on the maintenance policy's schedule; a
// partition must exist before its month starts, or rows land in the
// DEFAULT partition. Rows already in the DEFAULT partition for a month it
// creates are moved into the new partition. It does nothing under
// TimescaleDB, which makes its chunks as rows arrive.
//
// Creating a partition briefly takes an exclusive lock on the ledger, so
// commits pause for it; that happens once a month.
func EnsurePartitions(ctx context.Context, db DB, now time.Time, ahead time.Duration) ([]string, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("ensure partitions: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	created, err := ensurePartitions(ctx, tx, now, ahead)
	if err != nil {
		return nil, fmt.Errorf("ensure partitions: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("ensure partitions: %w", err)
	}
	return created, nil
}

// PartitionName returns the name of the native partition holding rows
// committed at t: ledger_pYYYYMM, by UTC month.
func PartitionName(t time.Time) string {
	return fmt.Sprintf("ledger_p%04d%02d", t.UTC().Year(), int(t.UTC().Month()))
}

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

func ensurePartitions(ctx context.Context, tx pgx.Tx, now time.Time, ahead time.Duration) ([]string, error) {
	mode, err := Partitioning(ctx, tx)
	if err != nil {
		return nil, err
	}
	if mode != PartitionNative {
		return nil, nil
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockPartitions); err != nil {
		return nil, err
	}
	var created []string
	end := monthStart(now.Add(ahead))
	for m := monthStart(now); !m.After(end); m = m.AddDate(0, 1, 0) {
		name := PartitionName(m)
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil {
			return nil, err
		}
		if exists {
			continue
		}
		if err := createPartition(ctx, tx, name, m, m.AddDate(0, 1, 0)); err != nil {
			return nil, fmt.Errorf("create %s: %w", name, err)
		}
		created = append(created, name)
	}
	return created, nil
}

// createPartition makes the partition for [from, to). When the DEFAULT
// partition already holds rows of that range, a plain CREATE ... PARTITION
// OF would fail its check, so the DEFAULT partition is detached, the rows
// moved, and it is attached again, all in the caller's transaction.
func createPartition(ctx context.Context, tx pgx.Tx, name string, from, to time.Time) error {
	ident := pgx.Identifier{name}.Sanitize()
	bounds := fmt.Sprintf("FOR VALUES FROM ('%s') TO ('%s')",
		from.Format(time.RFC3339), to.Format(time.RFC3339))
	var stray bool
	if err := tx.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM ledger_default WHERE committed_at >= $1 AND committed_at < $2)`,
		from, to).Scan(&stray); err != nil {
		return err
	}
	if !stray {
		_, err := tx.Exec(ctx, `CREATE TABLE `+ident+` PARTITION OF ledger `+bounds)
		return err
	}
	steps := []string{
		`ALTER TABLE ledger DETACH PARTITION ledger_default`,
		`CREATE TABLE ` + ident + ` PARTITION OF ledger ` + bounds,
		fmt.Sprintf(`INSERT INTO %s SELECT * FROM ledger_default WHERE committed_at >= '%s' AND committed_at < '%s'`,
			ident, from.Format(time.RFC3339), to.Format(time.RFC3339)),
		fmt.Sprintf(`DELETE FROM ledger_default WHERE committed_at >= '%s' AND committed_at < '%s'`,
			from.Format(time.RFC3339), to.Format(time.RFC3339)),
		`ALTER TABLE ledger ATTACH PARTITION ledger_default DEFAULT`,
	}
	for _, s := range steps {
		if _, err := tx.Exec(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// Partitions lists the ledger's native partitions (monthly ones and the
// default), by name.
func Partitions(ctx context.Context, db DB) ([]string, error) {
	rows, err := db.Query(ctx,
		`SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		 WHERE i.inhparent = to_regclass('ledger')`)
	if err != nil {
		return nil, fmt.Errorf("partitions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("partitions: %w", err)
	}
	slices.Sort(names)
	return names, nil
}
