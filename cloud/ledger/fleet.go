package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/protocol"
)

// Statuses of edges and keys.
const (
	StatusActive  = "active"
	StatusRevoked = "revoked"
)

// Token prefixes, so that a leaked token says what it is (and secret
// scanners can find it).
const (
	EnrollTokenPrefix = "oe_"
	APITokenPrefix    = "oa_"
)

// Edge is a registered edge and its keys.
type Edge struct {
	ID        string
	Tenant    string // the tenant it belongs to (DefaultTenant unless moved)
	Store     string // the store it usually serves; may be ""
	Status    string // StatusActive or StatusRevoked
	CreatedAt time.Time
	RevokedAt time.Time // zero while active
	Keys      []Key     // oldest first
	// Agent is the software the edge last named in its hello (its own,
	// unsigned word, cleaned by CleanAgent); "" before one did. AgentAt is
	// when it first named that agent.
	Agent   string
	AgentAt time.Time
}

// Key is one of an edge's signing keys.
type Key struct {
	KID       protocol.KeyID
	Public    ed25519.PublicKey
	Status    string // StatusActive or StatusRevoked
	CreatedAt time.Time
	RevokedAt time.Time // zero while active
}

// Keys is one edge's keys as read at one moment: it implements
// protocol.Keys for checking that edge's checkpoints. PublicKey refuses a
// key id that is not registered to this edge (so a checkpoint signed by
// another edge's key does not verify), a revoked key, and every key of a
// revoked edge.
type Keys struct {
	edge    string
	revoked bool
	keys    map[protocol.KeyID]Key
}

var _ protocol.Keys = (*Keys)(nil)

// Edge returns the edge whose keys these are.
func (k *Keys) Edge() string { return k.edge }

// Revoked reports whether the edge itself is revoked (every key refused).
func (k *Keys) Revoked() bool { return k.revoked }

// PublicKey returns the active key kid of the edge. Errors wrap
// ErrUnknownKey or ErrRevoked.
func (k *Keys) PublicKey(kid protocol.KeyID) (ed25519.PublicKey, error) {
	if k == nil {
		return nil, fmt.Errorf("edge not registered: %w", ErrUnknownKey)
	}
	if k.revoked {
		return nil, fmt.Errorf("edge %s: %w", k.edge, ErrRevoked)
	}
	key, ok := k.keys[kid]
	switch {
	case !ok:
		return nil, fmt.Errorf("key %s is not registered to edge %s: %w", kid, k.edge, ErrUnknownKey)
	case key.Status != StatusActive:
		return nil, fmt.Errorf("key %s of edge %s: %w", kid, k.edge, ErrRevoked)
	}
	return key.Public, nil
}

// EdgeKeys reads the keys of one edge. It returns ErrNotFound for an edge
// that is not registered.
func (l *Ledger) EdgeKeys(ctx context.Context, edge string) (*Keys, error) {
	m, err := loadKeys(ctx, l.db, []string{edge})
	if err != nil {
		return nil, fmt.Errorf("keys of edge %s: %w", edge, err)
	}
	k := m[edge]
	if k == nil {
		return nil, fmt.Errorf("edge %s: %w", edge, ErrNotFound)
	}
	return k, nil
}

// loadKeys reads the keys of several edges in one query. Edges that are not
// registered are absent from the map.
func loadKeys(ctx context.Context, db DB, edges []string) (map[string]*Keys, error) {
	rows, err := db.Query(ctx,
		`SELECT e.id, e.status, k.kid, k.pubkey, k.status
		 FROM edges e LEFT JOIN edge_keys k ON k.edge = e.id
		 WHERE e.id = ANY($1)`, edges)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]*Keys{}
	for rows.Next() {
		var id, status string
		var kid, kstatus *string
		var pub []byte
		if err := rows.Scan(&id, &status, &kid, &pub, &kstatus); err != nil {
			return nil, err
		}
		k := out[id]
		if k == nil {
			k = &Keys{edge: id, revoked: status != StatusActive, keys: map[protocol.KeyID]Key{}}
			out[id] = k
		}
		if kid != nil {
			k.keys[protocol.KeyID(*kid)] = Key{KID: protocol.KeyID(*kid), Public: ed25519.PublicKey(pub), Status: *kstatus}
		}
	}
	return out, rows.Err()
}

// keyCache holds edges' keys between commits, saving a query per batch.
// It may be stale, which is safe: a key it lacks (added since) is looked
// up again before a segment is refused, and a key it still holds after a
// revocation is refused by the commit transaction, which re-reads the
// status of the keys it uses under a share lock. Revocations are
// permanent, so a revoked entry is never wrong.
type keyCache struct {
	mu sync.Mutex
	m  map[string]*Keys
}

// get returns the keys of edges, reading those it lacks in one query.
// Edges that are not registered are absent from the map.
func (c *keyCache) get(ctx context.Context, db DB, edges []string) (map[string]*Keys, error) {
	out := make(map[string]*Keys, len(edges))
	var missing []string
	c.mu.Lock()
	for _, e := range edges {
		if k := c.m[e]; k != nil {
			out[e] = k
		} else if !slices.Contains(missing, e) {
			missing = append(missing, e)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	loaded, err := loadKeys(ctx, db, missing)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedEdges {
		c.m = map[string]*Keys{}
	}
	for e, k := range loaded {
		c.m[e] = k
		out[e] = k
	}
	return out, nil
}

// maxCachedEdges bounds the key cache; past it, the cache starts over.
const maxCachedEdges = 100_000

func (c *keyCache) forget(edges ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range edges {
		delete(c.m, e)
	}
}

// AddEdge registers an edge with its first public key (kid =
// protocol.KeyIDOf(pub)). It returns ErrExists when the edge is registered
// already and ErrKeyInUse when the key is.
func (l *Ledger) AddEdge(ctx context.Context, id string, pub ed25519.PublicKey) (Edge, error) {
	if err := checkEdgeKey(id, pub); err != nil {
		return Edge{}, fmt.Errorf("add edge: %w", err)
	}
	tx, err := l.db.Begin(ctx)
	if err != nil {
		return Edge{}, fmt.Errorf("add edge %s: %w", id, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `INSERT INTO edges (id) VALUES ($1)`, id); err != nil {
		if sqlState(err) == "23505" {
			return Edge{}, fmt.Errorf("add edge %s: %w", id, ErrExists)
		}
		return Edge{}, fmt.Errorf("add edge %s: %w", id, err)
	}
	if err := insertKey(ctx, tx, id, pub); err != nil {
		return Edge{}, fmt.Errorf("add edge %s: %w", id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return Edge{}, fmt.Errorf("add edge %s: %w", id, err)
	}
	l.keys.forget(id)
	return l.GetEdge(ctx, id)
}

func checkEdgeKey(id string, pub ed25519.PublicKey) error {
	if err := protocol.ValidateName("edge", id); err != nil {
		return err
	}
	return protocol.ValidatePublicKey(pub)
}

func insertKey(ctx context.Context, tx pgx.Tx, edge string, pub ed25519.PublicKey) error {
	kid := protocol.KeyIDOf(pub)
	if _, err := tx.Exec(ctx, `INSERT INTO edge_keys (kid, edge, pubkey) VALUES ($1, $2, $3)`,
		string(kid), edge, []byte(pub)); err != nil {
		if sqlState(err) == "23505" {
			return fmt.Errorf("key %s: %w", kid, ErrKeyInUse)
		}
		return fmt.Errorf("key %s: %w", kid, err)
	}
	return nil
}

// RevokeEdge revokes an edge: none of its keys verifies anything from then
// on. Once it returns, no commit of a segment signed by the edge is in
// flight or can start (commits hold a share lock on the edge's row).
// Revoking a revoked edge does nothing.
func (l *Ledger) RevokeEdge(ctx context.Context, id string) error {
	tag, err := l.db.Exec(ctx,
		`UPDATE edges SET status = 'revoked', revoked_at = now() WHERE id = $1 AND status = 'active'`, id)
	if err != nil {
		return fmt.Errorf("revoke edge %s: %w", id, err)
	}
	l.keys.forget(id)
	if tag.RowsAffected() == 0 {
		if _, err := l.GetEdge(ctx, id); err != nil {
			return fmt.Errorf("revoke edge: %w", err)
		}
	}
	return nil
}

// RotateKey adds a new active key to an active edge and returns its id.
// The edge's older keys stay valid until RevokeKey: its outbox holds
// checkpoints signed with them, which must still verify when they are
// uploaded. Revoke the old key once the edge's stream has caught up past
// the rotation (or at once, if the old key is compromised, accepting that
// those segments are quarantined).
func (l *Ledger) RotateKey(ctx context.Context, edge string, pub ed25519.PublicKey) (protocol.KeyID, error) {
	if err := checkEdgeKey(edge, pub); err != nil {
		return "", fmt.Errorf("rotate key: %w", err)
	}
	tx, err := l.db.Begin(ctx)
	if err != nil {
		return "", fmt.Errorf("rotate key of %s: %w", edge, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var status string
	err = tx.QueryRow(ctx, `SELECT status FROM edges WHERE id = $1`, edge).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", fmt.Errorf("rotate key: edge %s: %w", edge, ErrNotFound)
	case err != nil:
		return "", fmt.Errorf("rotate key of %s: %w", edge, err)
	case status != StatusActive:
		return "", fmt.Errorf("rotate key: edge %s: %w", edge, ErrRevoked)
	}
	if err := insertKey(ctx, tx, edge, pub); err != nil {
		return "", fmt.Errorf("rotate key of %s: %w", edge, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return "", fmt.Errorf("rotate key of %s: %w", edge, err)
	}
	l.keys.forget(edge)
	return protocol.KeyIDOf(pub), nil
}

// RevokeKey revokes one key of an edge. As with RevokeEdge, once it returns
// no commit signed by that key is in flight or can start.
func (l *Ledger) RevokeKey(ctx context.Context, edge string, kid protocol.KeyID) error {
	tag, err := l.db.Exec(ctx,
		`UPDATE edge_keys SET status = 'revoked', revoked_at = now()
		 WHERE edge = $1 AND kid = $2 AND status = 'active'`, edge, string(kid))
	if err != nil {
		return fmt.Errorf("revoke key %s of %s: %w", kid, edge, err)
	}
	l.keys.forget(edge)
	if tag.RowsAffected() == 0 {
		var n int
		if err := l.db.QueryRow(ctx, `SELECT count(*) FROM edge_keys WHERE edge = $1 AND kid = $2`,
			edge, string(kid)).Scan(&n); err != nil {
			return fmt.Errorf("revoke key %s of %s: %w", kid, edge, err)
		}
		if n == 0 {
			return fmt.Errorf("revoke key %s of %s: %w", kid, edge, ErrNotFound)
		}
	}
	return nil
}

// GetEdge returns one edge with its keys.
func (l *Ledger) GetEdge(ctx context.Context, id string) (Edge, error) {
	es, err := l.listEdges(ctx, `WHERE e.id = $1`, id)
	if err != nil {
		return Edge{}, fmt.Errorf("get edge %s: %w", id, err)
	}
	if len(es) == 0 {
		return Edge{}, fmt.Errorf("edge %s: %w", id, ErrNotFound)
	}
	return es[0], nil
}

// ListEdges returns every registered edge with its keys, by id.
func (l *Ledger) ListEdges(ctx context.Context) ([]Edge, error) {
	es, err := l.listEdges(ctx, ``)
	if err != nil {
		return nil, fmt.Errorf("list edges: %w", err)
	}
	return es, nil
}

func (l *Ledger) listEdges(ctx context.Context, where string, args ...any) ([]Edge, error) {
	rows, err := l.db.Query(ctx,
		`SELECT e.id, coalesce(e.tenant, ''), coalesce(e.store, ''), e.status, e.created_at, e.revoked_at,
			coalesce(e.agent, ''), e.agent_at,
			k.kid, k.pubkey, k.status, k.created_at, k.revoked_at
		 FROM edges e LEFT JOIN edge_keys k ON k.edge = e.id `+where+`
		 ORDER BY e.id, k.created_at, k.kid`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Edge
	for rows.Next() {
		var e Edge
		var erev, agentAt, kcreated, krev *time.Time
		var kid, kstatus *string
		var pub []byte
		if err := rows.Scan(&e.ID, &e.Tenant, &e.Store, &e.Status, &e.CreatedAt, &erev, &e.Agent, &agentAt, &kid, &pub, &kstatus, &kcreated, &krev); err != nil {
			return nil, err
		}
		if len(out) == 0 || out[len(out)-1].ID != e.ID {
			e.RevokedAt = deref(erev)
			e.AgentAt = deref(agentAt)
			out = append(out, e)
		}
		if kid != nil {
			last := &out[len(out)-1]
			last.Keys = append(last.Keys, Key{KID: protocol.KeyID(*kid), Public: ed25519.PublicKey(pub),
				Status: *kstatus, CreatedAt: deref(kcreated), RevokedAt: deref(krev)})
		}
	}
	return out, rows.Err()
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// newToken returns a random token with prefix and the SHA-256 under which
// it is stored.
func newToken(prefix string) (string, []byte) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	t := prefix + base64.RawURLEncoding.EncodeToString(b)
	return t, tokenHash(t)
}

func tokenHash(t string) []byte {
	h := sha256.Sum256([]byte(t))
	return h[:]
}

// CreateEnrollToken makes a one-time enrollment token for edge, valid for
// ttl, and returns its plaintext: the only time it is seen, as only its
// SHA-256 is stored. The edge need not be registered yet (Enroll registers
// it), but must not be revoked.
func (l *Ledger) CreateEnrollToken(ctx context.Context, edge string, ttl time.Duration) (string, error) {
	if err := protocol.ValidateName("edge", edge); err != nil {
		return "", fmt.Errorf("create enroll token: %w", err)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("create enroll token for %s: ttl %v is not positive", edge, ttl)
	}
	var status string
	err := l.db.QueryRow(ctx, `SELECT status FROM edges WHERE id = $1`, edge).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return "", fmt.Errorf("create enroll token for %s: %w", edge, err)
	case status != StatusActive:
		return "", fmt.Errorf("create enroll token: edge %s: %w", edge, ErrRevoked)
	}
	tok, hash := newToken(EnrollTokenPrefix)
	if _, err := l.db.Exec(ctx, `INSERT INTO enroll_tokens (hash, edge, expires_at) VALUES ($1, $2, $3)`,
		hash, edge, l.opts.Now().Add(ttl)); err != nil {
		return "", fmt.Errorf("create enroll token for %s: %w", edge, err)
	}
	return tok, nil
}

// Enroll spends an enrollment token: it registers the token's edge (when
// new) with pub as an active key, and returns the edge. A token works once
// and only before it expires: ErrTokenUnknown, ErrTokenUsed and
// ErrTokenExpired tell the cases apart. A refused enrollment (ErrRevoked,
// ErrKeyInUse) does not spend the token.
func (l *Ledger) Enroll(ctx context.Context, token string, pub ed25519.PublicKey) (Edge, error) {
	if err := protocol.ValidatePublicKey(pub); err != nil {
		return Edge{}, fmt.Errorf("enroll: %w", err)
	}
	tx, err := l.db.Begin(ctx)
	if err != nil {
		return Edge{}, fmt.Errorf("enroll: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var edge string
	var expires time.Time
	var used *time.Time
	err = tx.QueryRow(ctx,
		`SELECT edge, expires_at, used_at FROM enroll_tokens WHERE hash = $1 FOR UPDATE`,
		tokenHash(token)).Scan(&edge, &expires, &used)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Edge{}, fmt.Errorf("enroll: %w", ErrTokenUnknown)
	case err != nil:
		return Edge{}, fmt.Errorf("enroll: %w", err)
	case used != nil:
		return Edge{}, fmt.Errorf("enroll: edge %s: %w at %s", edge, ErrTokenUsed, used.UTC().Format(time.RFC3339))
	case !l.opts.Now().Before(expires):
		return Edge{}, fmt.Errorf("enroll: edge %s: %w at %s", edge, ErrTokenExpired, expires.UTC().Format(time.RFC3339))
	}
	if err := checkEdgeKey(edge, pub); err != nil {
		return Edge{}, fmt.Errorf("enroll: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO edges (id) VALUES ($1) ON CONFLICT DO NOTHING`, edge); err != nil {
		return Edge{}, fmt.Errorf("enroll %s: %w", edge, err)
	}
	var status string
	if err := tx.QueryRow(ctx, `SELECT status FROM edges WHERE id = $1`, edge).Scan(&status); err != nil {
		return Edge{}, fmt.Errorf("enroll %s: %w", edge, err)
	}
	if status != StatusActive {
		return Edge{}, fmt.Errorf("enroll: edge %s: %w", edge, ErrRevoked)
	}
	if err := insertKey(ctx, tx, edge, pub); err != nil {
		return Edge{}, fmt.Errorf("enroll %s: %w", edge, err)
	}
	if err := enrollTenant(ctx, tx, edge, tokenHash(token)); err != nil {
		return Edge{}, fmt.Errorf("enroll %s: %w", edge, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE enroll_tokens SET used_at = now(), used_kid = $2 WHERE hash = $1`,
		tokenHash(token), string(protocol.KeyIDOf(pub))); err != nil {
		return Edge{}, fmt.Errorf("enroll %s: %w", edge, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return Edge{}, fmt.Errorf("enroll %s: %w", edge, err)
	}
	l.keys.forget(edge)
	return l.GetEdge(ctx, edge)
}

// APIToken is what an API bearer token grants.
type APIToken struct {
	Name      string
	Role      string
	Tenant    string // "" for every tenant
	CreatedAt time.Time
}

// CreateAPIToken makes a bearer token for the back-office API and returns
// its plaintext, the only time it is seen. name is unique (ErrExists);
// the API layer gives role its meaning, and tenant scopes what the token
// sees ("" for all tenants).
func (l *Ledger) CreateAPIToken(ctx context.Context, name, role, tenant string) (string, error) {
	if name == "" || role == "" {
		return "", fmt.Errorf("create api token: name and role are required")
	}
	tok, hash := newToken(APITokenPrefix)
	if _, err := l.db.Exec(ctx, `INSERT INTO api_tokens (hash, name, role, tenant) VALUES ($1, $2, $3, $4)`,
		hash, name, role, tenant); err != nil {
		if sqlState(err) == "23505" {
			return "", fmt.Errorf("create api token %q: %w", name, ErrExists)
		}
		return "", fmt.Errorf("create api token %q: %w", name, err)
	}
	return tok, nil
}

// AuthAPIToken returns what a bearer token grants: ErrTokenUnknown for no
// such token, ErrRevoked for a revoked one.
func (l *Ledger) AuthAPIToken(ctx context.Context, plaintext string) (APIToken, error) {
	var t APIToken
	var revoked *time.Time
	err := l.db.QueryRow(ctx,
		`SELECT name, role, tenant, created_at, revoked_at FROM api_tokens WHERE hash = $1`,
		tokenHash(plaintext)).Scan(&t.Name, &t.Role, &t.Tenant, &t.CreatedAt, &revoked)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return APIToken{}, fmt.Errorf("api token: %w", ErrTokenUnknown)
	case err != nil:
		return APIToken{}, fmt.Errorf("api token: %w", err)
	case revoked != nil:
		return APIToken{}, fmt.Errorf("api token %q: %w", t.Name, ErrRevoked)
	}
	return t, nil
}

// RevokeAPIToken revokes the API token called name.
func (l *Ledger) RevokeAPIToken(ctx context.Context, name string) error {
	tag, err := l.db.Exec(ctx,
		`UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("revoke api token %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("revoke api token %q: %w", name, ErrNotFound)
	}
	return nil
}

// UseBrokerCounter spends one broker login of edge with key kid: it
// succeeds only if counter is above the highest counter accepted for the
// edge so far, and the edge and the key are active, in one statement, so that
// two replicas offered the same token accept it at most once. Errors wrap
// ErrCounterUsed (the token was used or is older than one that was: a
// replay), ErrRevoked, ErrUnknownKey or ErrNotFound.
func (l *Ledger) UseBrokerCounter(ctx context.Context, edge string, kid protocol.KeyID, counter uint64) error {
	if counter > math.MaxInt64 {
		return fmt.Errorf("broker login of %s: counter %d is above 2^63-1", edge, counter)
	}
	// The counter has a table of its own (migration 0014): a commit holds
	// the edge's row FOR SHARE, and the login must not wait for it.
	tag, err := l.db.Exec(ctx,
		`INSERT INTO edge_broker_counters AS c (edge, counter)
		 SELECT e.id, $3 FROM edges e
		 WHERE e.id = $1 AND e.status = 'active'
		   AND EXISTS (SELECT 1 FROM edge_keys k WHERE k.kid = $2 AND k.edge = $1 AND k.status = 'active')
		 ON CONFLICT (edge) DO UPDATE SET counter = excluded.counter WHERE c.counter < excluded.counter`,
		edge, string(kid), int64(counter))
	if err != nil {
		return fmt.Errorf("broker login of %s: %w", edge, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	// Refused: say why.
	var status string
	var highest int64
	var kstatus *string
	err = l.db.QueryRow(ctx,
		`SELECT e.status, coalesce((SELECT c.counter FROM edge_broker_counters c WHERE c.edge = e.id), 0),
		        (SELECT k.status FROM edge_keys k WHERE k.kid = $2 AND k.edge = e.id)
		 FROM edges e WHERE e.id = $1`, edge, string(kid)).Scan(&status, &highest, &kstatus)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("broker login: edge %s: %w", edge, ErrNotFound)
	case err != nil:
		return fmt.Errorf("broker login of %s: %w", edge, err)
	case status != StatusActive:
		return fmt.Errorf("broker login: edge %s: %w", edge, ErrRevoked)
	case kstatus == nil:
		return fmt.Errorf("broker login: key %s is not registered to edge %s: %w", kid, edge, ErrUnknownKey)
	case *kstatus != StatusActive:
		return fmt.Errorf("broker login: key %s of edge %s: %w", kid, edge, ErrRevoked)
	}
	return fmt.Errorf("broker login of %s: counter %d is not above %d, the highest accepted: %w", edge, counter, highest, ErrCounterUsed)
}

// Revocation is one revocation of an edge (KID empty) or of one key.
type Revocation struct {
	ID        int64
	Edge      string
	KID       protocol.KeyID // empty: the whole edge
	RevokedAt time.Time
}

// RecentRevocations returns the revocations made in the last window, by id.
// Callers that poll it (cloud/edgeauth) remember the ids they acted on: ids
// are not committed in order, so "everything after the last id seen"
// could miss one that committed late, and a window cannot.
func (l *Ledger) RecentRevocations(ctx context.Context, window time.Duration) ([]Revocation, error) {
	rows, err := l.db.Query(ctx,
		`SELECT id, edge, coalesce(kid, ''), revoked_at FROM revocations
		 WHERE revoked_at > clock_timestamp() - $1::interval ORDER BY id`, window)
	if err != nil {
		return nil, fmt.Errorf("recent revocations: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Revocation, error) {
		var v Revocation
		var kid string
		err := r.Scan(&v.ID, &v.Edge, &kid, &v.RevokedAt)
		v.KID = protocol.KeyID(kid)
		return v, err
	})
	if err != nil {
		return nil, fmt.Errorf("recent revocations: %w", err)
	}
	return out, nil
}
