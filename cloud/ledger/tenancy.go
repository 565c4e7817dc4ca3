package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// AllTenants is the scope of a global token: every tenant's rows. It cannot
// be a tenant id (protocol.ValidateName refuses '*').
const AllTenants = "*"

// DefaultTenant always exists (migration 0007): edges registered or
// enrolled without a tenant belong to it, so a single-tenant installation
// needs no setup.
const DefaultTenant = "default"

// ReaderRole is the Postgres role that ReadAs switches to for the length of
// a read: row-level security policies (migration 0008) apply to it, and it
// has SELECT only on the tables whose policies have been written. The role
// that owns the tables (the one that runs migrations, ingest and commits)
// is exempt from the policies as their owner.
const ReaderRole = "outpost_reader"

// Errors of tenancy.
var (
	// ErrTenantMismatch: the edge belongs to another tenant than the one
	// asked for (an enrollment token or a registration for a tenant other
	// than the edge's).
	ErrTenantMismatch = errors.New("edge belongs to another tenant")
	// ErrInvalid: a tenant or store field breaks its rule; the message
	// names the field.
	ErrInvalid = errors.New("invalid")
)

// Tenant is one customer of the cloud: it owns stores and edges.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Store is one shop of a tenant. ID is the `store` of the POS bodies its
// tills send.
type Store struct {
	Tenant    string    `json:"tenant"`
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	TimeZone  string    `json:"time_zone"` // IANA, such as Europe/Paris
	Currency  string    `json:"currency"`  // default ISO 4217 code
	CreatedAt time.Time `json:"created_at"`
}

// CheckTenantID checks a tenant id: 1 to 64 characters of [A-Za-z0-9_-].
func CheckTenantID(id string) error {
	if err := protocol.ValidateName("tenant", id); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// CheckStore checks a store's fields: its id is a name (it is the store of
// POS bodies), its time zone one time.LoadLocation knows, its currency an
// ISO 4217 code.
func CheckStore(s Store) error {
	if err := CheckTenantID(s.Tenant); err != nil {
		return err
	}
	if err := protocol.ValidateName("store", s.ID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := checkDisplayName("store name", s.Name); err != nil {
		return err
	}
	if s.TimeZone == "" || s.TimeZone == "Local" {
		return fmt.Errorf("%w: time zone is required: an IANA zone such as Europe/Paris or UTC", ErrInvalid)
	}
	if _, err := time.LoadLocation(s.TimeZone); err != nil {
		return fmt.Errorf("%w: time zone %q is not an IANA zone this system knows (such as Europe/Paris or America/New_York)", ErrInvalid, s.TimeZone)
	}
	if !pos.ValidCurrency(s.Currency) {
		return fmt.Errorf("%w: currency %q is not an ISO 4217 code: give three upper-case letters such as EUR or USD", ErrInvalid, s.Currency)
	}
	return nil
}

func checkDisplayName(field, s string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return fmt.Errorf("%w: %s is required", ErrInvalid, field)
	case len(s) > 200:
		return fmt.Errorf("%w: %s is %d bytes; the limit is 200", ErrInvalid, field, len(s))
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: %s holds a control character", ErrInvalid, field)
		}
	}
	return nil
}

// AddTenant creates a tenant. It returns ErrExists when the id is taken.
func (l *Ledger) AddTenant(ctx context.Context, id, name string) (Tenant, error) {
	if err := CheckTenantID(id); err != nil {
		return Tenant{}, fmt.Errorf("add tenant: %w", err)
	}
	if err := checkDisplayName("tenant name", name); err != nil {
		return Tenant{}, fmt.Errorf("add tenant %s: %w", id, err)
	}
	t := Tenant{ID: id, Name: name}
	err := l.db.QueryRow(ctx, `INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING created_at`, id, name).Scan(&t.CreatedAt)
	if sqlState(err) == "23505" {
		return Tenant{}, fmt.Errorf("add tenant %s: %w", id, ErrExists)
	}
	if err != nil {
		return Tenant{}, fmt.Errorf("add tenant %s: %w", id, err)
	}
	return t, nil
}

// Tenants returns the tenants scope may see (AllTenants: every one), by id.
func (l *Ledger) Tenants(ctx context.Context, scope string) ([]Tenant, error) {
	rows, err := l.db.Query(ctx,
		`SELECT id, name, created_at FROM tenants WHERE $1 = '*' OR id = $1 ORDER BY id`, scope)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) {
		var t Tenant
		err := r.Scan(&t.ID, &t.Name, &t.CreatedAt)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return out, nil
}

// AddStore creates a store of an existing tenant. Store ids are unique
// across tenants, because POS bodies name a store by its id alone. It
// returns ErrNotFound for an unknown tenant and ErrExists for a taken id.
func (l *Ledger) AddStore(ctx context.Context, s Store) (Store, error) {
	if err := CheckStore(s); err != nil {
		return Store{}, fmt.Errorf("add store: %w", err)
	}
	err := l.db.QueryRow(ctx,
		`INSERT INTO stores (tenant, id, name, time_zone, currency) VALUES ($1, $2, $3, $4, $5) RETURNING created_at`,
		s.Tenant, s.ID, s.Name, s.TimeZone, s.Currency).Scan(&s.CreatedAt)
	switch sqlState(err) {
	case "":
	case "23505":
		return Store{}, fmt.Errorf("add store %s: %w (store ids are unique across tenants)", s.ID, ErrExists)
	case "23503":
		return Store{}, fmt.Errorf("add store %s: tenant %s: %w", s.ID, s.Tenant, ErrNotFound)
	}
	if err != nil {
		return Store{}, fmt.Errorf("add store %s: %w", s.ID, err)
	}
	return s, nil
}

// Stores returns the stores of the tenants scope may see, by tenant and id.
func (l *Ledger) Stores(ctx context.Context, scope string) ([]Store, error) {
	rows, err := l.db.Query(ctx,
		`SELECT tenant, id, name, time_zone, currency, created_at FROM stores
		 WHERE $1 = '*' OR tenant = $1 ORDER BY tenant, id`, scope)
	if err != nil {
		return nil, fmt.Errorf("list stores: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Store, error) {
		var s Store
		err := r.Scan(&s.Tenant, &s.ID, &s.Name, &s.TimeZone, &s.Currency, &s.CreatedAt)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("list stores: %w", err)
	}
	return out, nil
}

// checkTenantStore checks that tenant exists and, when store is not
// empty, that the store is the tenant's.
func checkTenantStore(ctx context.Context, db DB, tenant, store string) error {
	if err := CheckTenantID(tenant); err != nil {
		return err
	}
	var owner *string
	err := db.QueryRow(ctx,
		`SELECT (SELECT s.tenant FROM stores s WHERE s.id = $2) FROM tenants t WHERE t.id = $1`, tenant, store).Scan(&owner)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("tenant %s: %w", tenant, ErrNotFound)
	case err != nil:
		return err
	case store == "":
		return nil
	case owner == nil:
		return fmt.Errorf("store %s: %w", store, ErrNotFound)
	case *owner != tenant:
		return fmt.Errorf("%w: store %s is not a store of tenant %s", ErrInvalid, store, tenant)
	}
	return nil
}

// CreateTenantEnrollToken is CreateEnrollToken for an edge of tenant (and
// usually of one of its stores; store may be empty): the edge enrolled
// with it belongs to that tenant. An edge that exists already must belong
// to the tenant, or have no tenant yet (ErrTenantMismatch).
func (l *Ledger) CreateTenantEnrollToken(ctx context.Context, edge, tenant, store string, ttl time.Duration) (string, error) {
	if err := checkTenantStore(ctx, l.db, tenant, store); err != nil {
		return "", fmt.Errorf("create enroll token for %s: %w", edge, err)
	}
	if err := edgeTenantFits(ctx, l.db, edge, tenant); err != nil {
		return "", fmt.Errorf("create enroll token: %w", err)
	}
	tok, err := l.CreateEnrollToken(ctx, edge, ttl)
	if err != nil {
		return "", err
	}
	if _, err := l.db.Exec(ctx, `UPDATE enroll_tokens SET tenant = $2, store = nullif($3, '') WHERE hash = $1`,
		tokenHash(tok), tenant, store); err != nil {
		return "", fmt.Errorf("create enroll token for %s: %w", edge, err)
	}
	return tok, nil
}

// edgeTenantFits checks that edge, when it exists, may be in tenant: it is
// already, or it is in DefaultTenant and has committed nothing yet (an
// edge registered before its tenant was chosen). An edge with committed
// events stays in its tenant: those events are that tenant's.
func edgeTenantFits(ctx context.Context, db DB, edge, tenant string) error {
	var have string
	var streams bool
	err := db.QueryRow(ctx, `SELECT tenant, EXISTS (SELECT 1 FROM streams s WHERE s.edge = e.id) FROM edges e WHERE id = $1`,
		edge).Scan(&have, &streams)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("edge %s: %w", edge, err)
	case have == tenant:
		return nil
	case have == DefaultTenant && !streams:
		return nil
	}
	return fmt.Errorf("edge %s: %w %s, not %s", edge, ErrTenantMismatch, have, tenant)
}

// enrollTenant gives the edge enrolled with token hash the token's tenant
// and store, inside Enroll's transaction. A token without a tenant leaves
// the edge as it is.
func enrollTenant(ctx context.Context, tx pgx.Tx, edge string, hash []byte) error {
	var tenant, store *string
	if err := tx.QueryRow(ctx, `SELECT tenant, store FROM enroll_tokens WHERE hash = $1`, hash).Scan(&tenant, &store); err != nil {
		return err
	}
	if tenant == nil {
		return nil
	}
	s := ""
	if store != nil {
		s = *store
	}
	return setEdgeTenant(ctx, tx, edge, *tenant, s)
}

func setEdgeTenant(ctx context.Context, db DB, edge, tenant, store string) error {
	if err := edgeTenantFits(ctx, db, edge, tenant); err != nil {
		return err
	}
	tag, err := db.Exec(ctx, `UPDATE edges SET tenant = $2, store = coalesce(nullif($3, ''), store) WHERE id = $1`, edge, tenant, store)
	if err != nil {
		return fmt.Errorf("edge %s: %w", edge, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("edge %s: %w", edge, ErrNotFound)
	}
	return nil
}

// SetEdgeTenant puts a registered edge in tenant (and, when store is not
// empty, in that store of the tenant). An edge that already belongs to
// another tenant stays there (ErrTenantMismatch): its committed events are
// that tenant's; register the device as a new edge instead.
func (l *Ledger) SetEdgeTenant(ctx context.Context, edge, tenant, store string) error {
	if err := checkTenantStore(ctx, l.db, tenant, store); err != nil {
		return fmt.Errorf("set tenant of edge %s: %w", edge, err)
	}
	if err := setEdgeTenant(ctx, l.db, edge, tenant, store); err != nil {
		return fmt.Errorf("set tenant: %w", err)
	}
	return nil
}

// EdgeTenant returns the tenant and store ("" for none) of a registered
// edge. It returns ErrNotFound for an edge that is not registered.
func (l *Ledger) EdgeTenant(ctx context.Context, edge string) (tenant, store string, err error) {
	err = l.db.QueryRow(ctx, `SELECT tenant, coalesce(store, '') FROM edges WHERE id = $1`, edge).Scan(&tenant, &store)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", fmt.Errorf("edge %s: %w", edge, ErrNotFound)
	}
	if err != nil {
		return "", "", fmt.Errorf("tenant of edge %s: %w", edge, err)
	}
	return tenant, store, nil
}

// TenantEdges returns the ids of the edges of tenant, for callers that
// check a result row by row as well as through row-level security.
func (l *Ledger) TenantEdges(ctx context.Context, tenant string) (map[string]bool, error) {
	rows, err := l.db.Query(ctx, `SELECT id FROM edges WHERE tenant = $1`, tenant)
	if err != nil {
		return nil, fmt.Errorf("edges of tenant %s: %w", tenant, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("edges of tenant %s: %w", tenant, err)
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// ReadAs runs fn with a Ledger whose every query runs in one read-only,
// repeatable-read transaction as ReaderRole, with the tenant scope set
// (outpost.tenant, SET LOCAL), so that the row-level security policies
// show fn only scope's rows (AllTenants: every row). It is the read path of
// the back-office API: whatever fn reads, through any Ledger method, a
// tenant's token sees only its tenant.
func (l *Ledger) ReadAs(ctx context.Context, scope string, fn func(*Ledger) error) error {
	if scope != AllTenants {
		if err := CheckTenantID(scope); err != nil {
			return fmt.Errorf("read as tenant: %w", err)
		}
	}
	tx, err := l.db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("read as %s: %w", scope, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The isolation level first: nothing may run before it. A nested
	// readSnapshot sets the same level again, which Postgres allows.
	if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`); err != nil {
		return fmt.Errorf("read as %s: %w", scope, err)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('outpost.tenant', $1, true)`, scope); err != nil {
		return fmt.Errorf("read as %s: %w", scope, err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ReaderRole); err != nil {
		return fmt.Errorf("read as %s: switch to role %s (migration 0008 creates it; the serving role must be a member: GRANT %s TO <role>): %w",
			scope, ReaderRole, ReaderRole, err)
	}
	scoped := &Ledger{db: tx, opts: l.opts}
	if err := fn(scoped); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// APITokenTenant returns the tenant scope of the API token called name
// ("" for a global one); ErrNotFound when there is none.
func (l *Ledger) APITokenTenant(ctx context.Context, name string) (string, error) {
	var tenant string
	err := l.db.QueryRow(ctx, `SELECT tenant FROM api_tokens WHERE name = $1`, name).Scan(&tenant)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("api token %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("api token %q: %w", name, err)
	}
	return tenant, nil
}

// CreateTenantAPIToken is CreateAPIToken for a token scoped to an existing
// tenant (ErrNotFound otherwise): it sees that tenant's rows only.
func (l *Ledger) CreateTenantAPIToken(ctx context.Context, name, role, tenant string) (string, error) {
	if err := checkTenantStore(ctx, l.db, tenant, ""); err != nil {
		return "", fmt.Errorf("create api token %q: %w", name, err)
	}
	return l.CreateAPIToken(ctx, name, role, tenant)
}

// CheckTenantStore checks that tenant exists and that store, when not
// empty, is one of its stores: ErrNotFound or ErrInvalid otherwise.
func (l *Ledger) CheckTenantStore(ctx context.Context, tenant, store string) error {
	if err := checkTenantStore(ctx, l.db, tenant, store); err != nil {
		return fmt.Errorf("check tenant: %w", err)
	}
	return nil
}
