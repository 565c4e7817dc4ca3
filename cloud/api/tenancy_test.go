package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/cloud/api"
	"github.com/outpost-edge/outpost/cloud/command"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// tenantData is what one tenant of the fixture has: every kind of row
// the API can show, each naming one of the markers.
type tenantData struct {
	Tenant, Store, Edge, Epoch string
	Quarantine                 int64
	Markers                    []string // strings only this tenant's rows hold
}

// twoTenants is a database holding two tenants, each with a store, an
// edge with committed events and a quarantined segment, and rows in
// every projection table.
type twoTenants struct {
	*env
	A, B             tenantData
	AdminA, ReaderA  string // tokens scoped to tenant A
	GlobalAdmin      string
	ReaderB          string
	projectionTables []string
}

func mustTwoTenants(t *testing.T) *twoTenants {
	t.Helper()
	ctx := context.Background()
	// The live tail's streams end soon after their first page, so that a
	// read of GET /v1/events/stream ends too.
	f := &twoTenants{env: MustEnv(t, envOptions{StreamMaxDuration: 200 * time.Millisecond, Pool: true}), GlobalAdmin: ""}
	f.GlobalAdmin = f.Admin
	base := time.Date(2026, 2, 10, 9, 0, 0, 0, time.UTC)
	for i, d := range []*tenantData{&f.A, &f.B} {
		x := []string{"a", "b"}[i]
		d.Tenant, d.Store, d.Edge = "tenant-"+x, "store-"+x, "edge-"+x
		if _, err := f.Ledger.AddTenant(ctx, d.Tenant, "Tenant "+x); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Ledger.AddStore(ctx, ledger.Store{Tenant: d.Tenant, ID: d.Store, Name: "Store " + x,
			TimeZone: "Europe/Paris", Currency: "EUR"}); err != nil {
			t.Fatal(err)
		}
		s := f.MustStream(t, d.Edge)
		if err := f.Ledger.SetEdgeTenant(ctx, d.Edge, d.Tenant, d.Store); err != nil {
			t.Fatal(err)
		}
		appendTypes(t, s, base, "sale.completed", "sale.completed", "sale.completed")
		f.MustCommit(t, s, 1, 2)
		d.Epoch = s.Stream.Epoch.String()
		// A segment signed by a key that is not the edge's is quarantined.
		seg := s.Segment(3, 3)
		seg.Checkpoint = s.SignedBy(MustSigner(t)).Checkpoint(3)
		out, err := f.Ledger.Commit(ctx, []ledger.Input{{TopicEdge: d.Edge, Segment: seg}})
		if err != nil || out[0].Kind != ledger.KindQuarantined {
			t.Fatalf("commit: %v %+v", err, out)
		}
		if err := f.Conn.QueryRow(ctx, `SELECT max(id) FROM quarantine WHERE edge = $1`, d.Edge).Scan(&d.Quarantine); err != nil {
			t.Fatal(err)
		}
		f.projectionTables = insertProjectionRows(t, f.env, d.Tenant, d.Store, x, int64(100*(i+1)))
		// A command kept for the edge (GET /v1/edges/{id}/commands).
		if err := pgx.BeginFunc(ctx, f.Conn, func(tx pgx.Tx) error {
			_, err := command.Enqueue(ctx, tx, f.Cloud, d.Edge, protocol.CommandAssign, "r-"+x, nil, base.Add(time.Hour))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		insertRolloutRows(t, f.env, d.Tenant, d.Edge)
		d.Markers = []string{d.Tenant, d.Store, d.Edge, d.Epoch}
	}
	var err error
	if f.AdminA, err = f.Ledger.CreateAPIToken(ctx, "admin-a", api.RoleAdmin, f.A.Tenant); err != nil {
		t.Fatal(err)
	}
	if f.ReaderA, err = f.Ledger.CreateAPIToken(ctx, "reader-a", api.RoleReader, f.A.Tenant); err != nil {
		t.Fatal(err)
	}
	if f.ReaderB, err = f.Ledger.CreateAPIToken(ctx, "reader-b", api.RoleReader, f.B.Tenant); err != nil {
		t.Fatal(err)
	}
	return f
}

// insertProjectionRows writes one row of tenant's into every projection
// table, as the commit's fold would (the fold itself is lane proj's and
// tested there): the read path is what is under test here. Strings name
// the tenant's store, sku "sku-<x>", terminal "term-<x>", event "evt-<x>".
func insertProjectionRows(t *testing.T, e *env, tenant, store, x string, pos int64) []string {
	t.Helper()
	ctx := context.Background()
	stmts := map[string]string{
		"sales_summary":        `INSERT INTO sales_summary VALUES ($1, $2, '2026-02-10', 'EUR', 3, 3000, 1500, 100, 1, 200, 1, 300, 90, 900, 990)`,
		"sales_by_sku":         `INSERT INTO sales_by_sku VALUES ($1, $2, '2026-02-10', 'sku-' || $3, 'EUR', 3000, 1000, 0, 1500, 100, 200, 0, 1200)`,
		"sales_by_hour":        `INSERT INTO sales_by_hour VALUES ($1, $2, '2026-02-10', 10, 'EUR', 3, 900)`,
		"tenders":              `INSERT INTO tenders VALUES ($1, $2, '2026-02-10', 'cash', 'EUR', 3, 2000, 10, 0, 1990)`,
		"inventory_on_hand":    `INSERT INTO inventory_on_hand VALUES ($1, $2, 'sku-' || $3, -2000)`,
		"inventory_movements":  `INSERT INTO inventory_movements VALUES ($1, $4, 0, $2, 'sku-' || $3, 'sale', -1000, -2000)`,
		"telemetry_per_minute": `INSERT INTO telemetry_per_minute VALUES ($1, $2, 'sensor-' || $3, 'temp', '2026-02-10T09:01:00Z', 2, 3.5, 4.5, 8)`,
		"till_reconciliation": `INSERT INTO till_reconciliation (tenant, store, terminal, business_day, currency, status, reason,
			ledger_sales_count, ledger_sales_total, ledger_returns_count, ledger_returns_total, ledger_voids_count, ledger_voids_total,
			ledger_net, z_count) VALUES ($1, $2, 'term-' || $3, '2026-02-10', 'EUR', 'pending', '{"1 transaction missing"}',
			3, 990, 0, 0, 0, 0, 990, 1)`,
		"restatements": `INSERT INTO restatements VALUES ($1, $4, 0, $2, 'term-' || $3, '2026-02-10', 'EUR', 'evt-' || $3, 'sale.completed', 'restated', '{}')`,
		"anomalies":    `INSERT INTO anomalies VALUES ($1, $4, 0, 'duplicate_transaction', 'evt-' || $3, 'sale.completed', $2, $4::bigint - 1, 'evt0-' || $3, 'the same txn again')`,
		"projection_txns": `INSERT INTO projection_txns VALUES ($1, $2, 'term-' || $3, '2026-02-10', 'txn-' || $3, $4, 'evt-' || $3,
			'sale.completed', 'EUR', 90, 900, '[]', false)`,
	}
	var tables []string
	for table, sql := range stmts {
		args := []any{tenant, store, x, pos}
		n := 0 // pgx wants exactly the parameters the statement uses
		for _, m := range regexp.MustCompile(`\$(\d)`).FindAllStringSubmatch(sql, -1) {
			n = max(n, int(m[1][0]-'0'))
		}
		if _, err := e.Conn.Exec(ctx, sql, args[:n]...); err != nil {
			t.Fatalf("insert into %s: %v", table, err)
		}
		tables = append(tables, table)
	}
	return tables
}

// fillPath puts d's identifiers into a route's path parameters. A
// parameter it does not know fails the test: a new route with a new
// parameter must be given one here, so that it is tried too.
func fillPath(t *testing.T, pattern string, d tenantData) string {
	t.Helper()
	path := strings.SplitN(pattern, " ", 2)[1]
	return regexp.MustCompile(`\{[a-z]+\}`).ReplaceAllStringFunc(path, func(p string) string {
		switch {
		case p == "{edge}":
			return d.Edge
		case p == "{epoch}":
			return d.Epoch
		case p == "{seq}":
			return "1"
		case p == "{id}" && strings.HasPrefix(path, "/v1/edges/"):
			return d.Edge
		case p == "{id}" && strings.HasPrefix(path, "/v1/quarantine/"):
			return fmt.Sprint(d.Quarantine)
		case p == "{id}" && strings.HasPrefix(path, "/v1/rollouts/"):
			return rolloutOf(d.Tenant)
		}
		t.Fatalf("route %s: no value for path parameter %s; add one to fillPath", pattern, p)
		return ""
	})
}

func holdsAny(body string, markers []string) []string {
	var found []string
	for _, m := range markers {
		if strings.Contains(body, m) {
			found = append(found, m)
		}
	}
	return found
}

// TestTenantIsolation tries every read endpoint of the route table, as
// JSON and as CSV, with tenant A's tokens against tenant B's data and
// expects nothing of B's: not in a list, not by name (404). The same
// requests with a global token and with B's own token do show B's rows,
// so the fixture really holds something for every endpoint to leak.
func TestTenantIsolation(t *testing.T) {
	f := mustTwoTenants(t)
	var reads int
	for _, rt := range api.Routes() {
		if rt.Public || !strings.HasPrefix(rt.Pattern, "GET ") {
			continue
		}
		reads++
		t.Run(strings.TrimPrefix(rt.Pattern, "GET "), func(t *testing.T) {
			pathB := fillPath(t, rt.Pattern, f.B)
			for _, accept := range []string{"application/json", "text/csv"} {
				for _, tok := range []struct{ name, token string }{{"admin-a", f.AdminA}, {"reader-a", f.ReaderA}} {
					if rt.Admin && tok.name == "reader-a" {
						continue
					}
					r := f.get(t, pathB, tok.token, accept)
					switch r.Status {
					case http.StatusOK:
					case http.StatusNotFound:
						// An error that echoes the path asked for, and
						// nothing else.
						var body map[string]any
						r.JSON(t, &body)
						if msg, _ := body["error"].(string); len(body) != 1 || msg == "" {
							t.Errorf("%s %s (%s): 404 with %s", tok.name, pathB, accept, r.Body)
						}
						continue
					default:
						t.Fatalf("%s %s (%s): status %d: %s", tok.name, pathB, accept, r.Status, r.Body)
					}
					if leak := holdsAny(string(r.Body), f.B.Markers); len(leak) > 0 {
						t.Errorf("%s %s (%s) shows tenant B's %v: %s", tok.name, pathB, accept, leak, r.Body)
					}
					if leak := holdsAny(strings.Join(r.Header.Values("X-Outpost-Complete"), ","), f.B.Markers); len(leak) > 0 {
						t.Errorf("%s %s (%s): header shows tenant B's %v", tok.name, pathB, accept, leak)
					}
				}
				// The controls: B's rows are there to be leaked, and A's
				// token does see A's own.
				for _, c := range []struct {
					name, token, path string
					want              []string
				}{
					{"global admin", f.GlobalAdmin, pathB, f.B.Markers},
					{"reader-b", f.ReaderB, pathB, f.B.Markers},
					{"admin-a on A", f.AdminA, fillPath(t, rt.Pattern, f.A), f.A.Markers},
				} {
					if rt.Admin && c.name == "reader-b" {
						continue
					}
					r := f.get(t, c.path, c.token, accept)
					if r.Status != http.StatusOK || len(holdsAny(string(r.Body), c.want)) == 0 {
						t.Errorf("control %s %s (%s): status %d, none of %v in %s", c.name, c.path, accept, r.Status, c.want, r.Body)
					}
				}
			}
		})
	}
	if reads < 18 {
		t.Fatalf("only %d read routes in the table; the walk missed some", reads)
	}
}

// get sends a GET with token and an Accept header.
func (e *env) get(t *testing.T, path, token, accept string) response {
	t.Helper()
	req, err := http.NewRequest("GET", e.Server.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", accept)
	resp, err := e.Server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// TestRowLevelSecurity checks the database layer alone, under the API's
// filters: read as tenant A (ledger.ReadAs), no table the reader role may
// read shows a row of tenant B, and every table it may read has
// row-level security on (but the projection checkpoints, which hold no
// tenant's data). Read as every tenant, B's rows are there.
// tenantFree are the tables the reader role may read that hold no
// tenant's data, so have no policy: the projection's checkpoint (a position
// and a digest) and ledger_marks (about one (position, commit time) pair a
// minute, which bounds the events page's partition scan).
var tenantFree = map[string]bool{"projection_checkpoints": true, "ledger_marks": true}

func TestRowLevelSecurity(t *testing.T) {
	f := mustTwoTenants(t)
	ctx := context.Background()
	if _, err := f.Ledger.SampleLag(ctx); err != nil { // so stream_lag_samples holds rows of both tenants
		t.Fatal(err)
	}
	rows, err := f.Conn.Query(ctx,
		`SELECT c.relname, c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
		   AND has_table_privilege($1, c.oid, 'SELECT') ORDER BY c.relname`, ledger.ReaderRole)
	if err != nil {
		t.Fatal(err)
	}
	readable := map[string]bool{}
	for rows.Next() {
		var name string
		var rls bool
		if err := rows.Scan(&name, &rls); err != nil {
			t.Fatal(err)
		}
		readable[name] = true
		if !rls && !tenantFree[name] {
			t.Errorf("table %s is readable by %s without row-level security", name, ledger.ReaderRole)
		}
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	for _, want := range append([]string{"ledger", "streams", "edges", "edge_keys", "checkpoints", "quarantine", "stores", "tenants"},
		f.projectionTables...) {
		if !readable[want] {
			t.Errorf("table %s is not readable by %s: the API could not read it", want, ledger.ReaderRole)
		}
	}
	for _, table := range []string{"api_tokens", "enroll_tokens", "revocations", "quarantine_senders"} {
		if readable[table] {
			t.Errorf("table %s is readable by %s, and the API never reads it through the role", table, ledger.ReaderRole)
		}
	}
	markB := `t::text LIKE '%tenant-b%' OR t::text LIKE '%store-b%' OR t::text LIKE '%edge-b%'`
	for table := range readable {
		if tenantFree[table] {
			continue
		}
		var asA, asAll int
		for _, sc := range []struct {
			scope string
			n     *int
		}{{f.A.Tenant, &asA}, {ledger.AllTenants, &asAll}} {
			err := f.Ledger.ReadAs(ctx, sc.scope, func(l *ledger.Ledger) error {
				return l.DB().QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s t WHERE %s`, table, markB)).Scan(sc.n)
			})
			if err != nil {
				t.Fatalf("%s as %s: %v", table, sc.scope, err)
			}
		}
		if asA != 0 {
			t.Errorf("table %s: tenant A's read shows %d rows of tenant B", table, asA)
		}
		if asAll == 0 {
			t.Errorf("table %s: no row of tenant B even for every tenant: the check is empty", table)
		}
	}
	// A transaction that sets no scope sees nothing, and cannot write.
	err = f.Ledger.ReadAs(ctx, f.A.Tenant, func(l *ledger.Ledger) error {
		_, err := l.DB().Exec(ctx, `UPDATE stores SET name = 'x'`)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("a write in ReadAs: %v, want a read-only refusal", err)
	}
	var n int
	err = pgxBeginAsReader(ctx, f, &n)
	if err != nil || n != 0 {
		t.Errorf("reader role without a scope: %d rows of edges, err %v; want 0", n, err)
	}
}

// pgxBeginAsReader counts edges as the reader role with no scope set.
func pgxBeginAsReader(ctx context.Context, f *twoTenants, n *int) error {
	tx, err := f.Conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+ledger.ReaderRole); err != nil {
		return err
	}
	return tx.QueryRow(ctx, `SELECT count(*) FROM edges`).Scan(n)
}

// A tenant's admin token acts inside its tenant only: the edges it
// enrolls and registers are its tenant's, and it cannot act on another
// tenant's edges, tokens or stores (which are "not found" to it, or 403
// when it names the other tenant).
func TestTenantAdminWrites(t *testing.T) {
	f := mustTwoTenants(t)
	// Enrollment with a token of the tenant admin: the edge is tenant A's,
	// in the store the token names.
	var tok struct {
		Token, Tenant, Store string
	}
	f.MustDo(t, 201, "POST", "/v1/tokens", f.AdminA, map[string]any{"edge": "new-a", "store": f.A.Store}, &tok)
	if tok.Tenant != f.A.Tenant || tok.Store != f.A.Store {
		t.Fatalf("token %+v: want tenant %s, store %s", tok, f.A.Tenant, f.A.Store)
	}
	pub := MustSigner(t).Public()
	f.MustDo(t, 200, "POST", "/v1/enroll", "", map[string]any{"token": tok.Token, "public_key": hexKey(pub)}, nil)
	var edge struct{ ID, Tenant, Store string }
	f.MustDo(t, 200, "GET", "/v1/edges/new-a", f.ReaderA, nil, &edge)
	if edge.Tenant != f.A.Tenant || edge.Store != f.A.Store {
		t.Errorf("enrolled edge %+v", edge)
	}
	wantError(t, f.Do(t, "GET", "/v1/edges/new-a", f.ReaderB, nil), 404, "not found")

	// Registering an edge directly: in the token's tenant.
	f.MustDo(t, 201, "POST", "/v1/edges", f.AdminA, map[string]any{"id": "reg-a", "public_key": hexKey(MustSigner(t).Public())}, &edge)
	if edge.Tenant != f.A.Tenant {
		t.Errorf("registered edge %+v", edge)
	}
	// A global admin names the tenant and store.
	f.MustDo(t, 201, "POST", "/v1/edges", f.GlobalAdmin, map[string]any{"id": "reg-b", "tenant": f.B.Tenant, "store": f.B.Store,
		"public_key": hexKey(MustSigner(t).Public())}, &edge)
	if edge.Tenant != f.B.Tenant || edge.Store != f.B.Store {
		t.Errorf("registered edge %+v", edge)
	}
	wantError(t, f.Do(t, "POST", "/v1/edges", f.GlobalAdmin, map[string]any{"id": "reg-x", "tenant": f.A.Tenant, "store": f.B.Store,
		"public_key": hexKey(MustSigner(t).Public())}), 400, "not a store of tenant")
	wantError(t, f.Do(t, "GET", "/v1/edges/reg-x", f.GlobalAdmin, nil), 404, "not found") // nothing left behind

	// Another tenant, named: 403. Another tenant's things: not found.
	for _, c := range []struct {
		path string
		body map[string]any
	}{
		{"/v1/tokens", map[string]any{"edge": "x-1", "tenant": f.B.Tenant}},
		{"/v1/api-tokens", map[string]any{"name": "sneaky", "role": "reader", "tenant": f.B.Tenant}},
		{"/v1/stores", map[string]any{"tenant": f.B.Tenant, "id": "store-x", "name": "X", "time_zone": "UTC", "currency": "EUR"}},
		{"/v1/edges", map[string]any{"id": "x-2", "tenant": f.B.Tenant, "public_key": hexKey(MustSigner(t).Public())}},
	} {
		wantError(t, f.Do(t, "POST", c.path, f.AdminA, c.body), 403, "scoped to tenant")
	}
	for _, path := range []string{"/v1/edges/" + f.B.Edge + "/revoke", "/v1/api-tokens/reader-b/revoke"} {
		wantError(t, f.Do(t, "POST", path, f.AdminA, nil), 404, "not found")
	}
	wantError(t, f.Do(t, "POST", "/v1/edges/"+f.B.Edge+"/keys", f.AdminA, map[string]any{"public_key": hexKey(MustSigner(t).Public())}),
		404, "not found")
	// An enrollment token for B's edge, which has committed events: the
	// edge stays in B.
	r := f.Do(t, "POST", "/v1/tokens", f.AdminA, map[string]any{"edge": f.B.Edge})
	wantError(t, r, 409, "is taken")
	if strings.Contains(string(r.Body), f.B.Tenant) {
		t.Errorf("the refusal names tenant B: %s", r.Body)
	}
	wantError(t, f.Do(t, "POST", "/v1/tokens", f.GlobalAdmin, map[string]any{"edge": f.B.Edge, "tenant": f.A.Tenant}), 409, "another tenant")
	// B's edge and token still work.
	f.MustDo(t, 200, "GET", "/v1/edges/"+f.B.Edge, f.ReaderB, nil, nil)
	// A's own store, token and revocations do work.
	f.MustDo(t, 201, "POST", "/v1/stores", f.AdminA, map[string]any{"id": "store-a2", "name": "A2", "time_zone": "Asia/Tokyo", "currency": "JPY"}, nil)
	var at struct{ Token, Tenant string }
	f.MustDo(t, 201, "POST", "/v1/api-tokens", f.AdminA, map[string]any{"name": "a-bi", "role": "reader"}, &at)
	if at.Tenant != f.A.Tenant {
		t.Errorf("api token of a tenant admin: tenant %q", at.Tenant)
	}
	if r := f.Do(t, "POST", "/v1/api-tokens/a-bi/revoke", f.AdminA, nil); r.Status != 204 {
		t.Errorf("revoke own token: %d %s", r.Status, r.Body)
	}
	f.MustDo(t, 200, "POST", "/v1/edges/reg-a/revoke", f.AdminA, nil, nil)
	// Tenants: only a global admin makes them.
	wantError(t, f.Do(t, "POST", "/v1/tenants", f.AdminA, map[string]any{"id": "t3", "name": "Three"}), 403, "global admin")
	f.MustDo(t, 201, "POST", "/v1/tenants", f.GlobalAdmin, map[string]any{"id": "t3", "name": "Three"}, nil)
	wantError(t, f.Do(t, "POST", "/v1/tenants", f.GlobalAdmin, map[string]any{"id": "t3", "name": "Again"}), 409, "already exists")
	wantError(t, f.Do(t, "POST", "/v1/stores", f.GlobalAdmin, map[string]any{"tenant": "t3", "id": "s-3", "name": "S", "time_zone": "Mars/Olympus", "currency": "EUR"}),
		400, "time zone")
	wantError(t, f.Do(t, "POST", "/v1/stores", f.GlobalAdmin, map[string]any{"tenant": "t3", "id": "s-3", "name": "S", "time_zone": "UTC", "currency": "EURO"}),
		400, "ISO 4217")
	wantError(t, f.Do(t, "POST", "/v1/stores", f.GlobalAdmin, map[string]any{"id": "s-3", "name": "S", "time_zone": "UTC", "currency": "EUR"}),
		400, "tenant is required")
}

// Every report pages by its key: with a page of one row, a global token
// walks both tenants' rows one page each, and the pages hold what one big
// page holds.
func TestReportPages(t *testing.T) {
	f := mustTwoTenants(t)
	for _, rt := range api.Routes() {
		path, ok := strings.CutPrefix(rt.Pattern, "GET ")
		if !ok || !strings.HasPrefix(path, "/v1/reports/") {
			continue
		}
		t.Run(path, func(t *testing.T) {
			var all struct {
				Rows []map[string]any `json:"rows"`
			}
			f.MustDo(t, 200, "GET", path, f.GlobalAdmin, nil, &all)
			if len(all.Rows) < 2 {
				t.Fatalf("%d rows; the fixture has one per tenant", len(all.Rows))
			}
			var walked []map[string]any
			after := ""
			for i := 0; i <= len(all.Rows); i++ {
				var page struct {
					Rows []map[string]any `json:"rows"`
					Next string           `json:"next"`
				}
				f.MustDo(t, 200, "GET", path+"?limit=1&after="+after, f.GlobalAdmin, nil, &page)
				walked = append(walked, page.Rows...)
				if page.Next == "" {
					break
				}
				after = page.Next
			}
			if fmt.Sprint(walked) != fmt.Sprint(all.Rows) {
				t.Errorf("pages of one:\n%v\none page:\n%v", walked, all.Rows)
			}
		})
	}
}
