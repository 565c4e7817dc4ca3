package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outpost-edge/outpost/internal/pgtest"
)

// cloudRun runs the cloud command line and returns its exit code, stdout
// and stderr.
func cloudRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// `cloud tenants add|list`, `cloud stores add|list`, and tokens and edges
// with a tenant: what they make is in the database, and bad input is a
// usage or input error that names the field.
func TestTenantsAndStoresCommands(t *testing.T) {
	url := pgtest.New(t)
	db := []string{"--database-url", url}
	if code, _, errs := cloudRun(t, append([]string{"migrate"}, db...)...); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errs)
	}
	ok := func(args ...string) string {
		t.Helper()
		code, out, errs := cloudRun(t, append(args, db...)...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		return out
	}
	fails := func(wantCode int, want string, args ...string) {
		t.Helper()
		code, _, errs := cloudRun(t, append(args, db...)...)
		if code != wantCode || !strings.Contains(errs, want) {
			t.Errorf("%s: exit %d, %q; want exit %d saying %q", strings.Join(args, " "), code, errs, wantCode, want)
		}
	}
	ok("tenants", "add", "--id", "acme", "--name", "Acme Retail")
	fails(1, "already exists", "tenants", "add", "--id", "acme", "--name", "Again")
	fails(2, "--name", "tenants", "add", "--id", "nameless")
	if out := ok("tenants", "list"); !strings.Contains(out, "acme") || !strings.Contains(out, "Acme Retail") || !strings.Contains(out, "default") {
		t.Errorf("tenants list: %q", out)
	}
	ok("stores", "add", "--tenant", "acme", "--id", "lyon-1", "--name", "Acme Lyon", "--time-zone", "Europe/Paris", "--currency", "EUR")
	fails(1, "time zone", "stores", "add", "--tenant", "acme", "--id", "x-1", "--name", "X", "--time-zone", "Mars/Olympus", "--currency", "EUR")
	fails(1, "ISO 4217", "stores", "add", "--tenant", "acme", "--id", "x-1", "--name", "X", "--time-zone", "UTC", "--currency", "eur")
	fails(1, "not found", "stores", "add", "--tenant", "nobody", "--id", "x-1", "--name", "X", "--time-zone", "UTC", "--currency", "EUR")
	fails(1, "already exists", "stores", "add", "--tenant", "default", "--id", "lyon-1", "--name", "X", "--time-zone", "UTC", "--currency", "EUR")
	if out := ok("stores", "list", "--tenant", "acme"); !strings.Contains(out, "lyon-1") || !strings.Contains(out, "Europe/Paris") {
		t.Errorf("stores list: %q", out)
	}
	if out := ok("stores", "list", "--tenant", "default"); strings.Contains(out, "lyon-1") {
		t.Errorf("stores list --tenant default shows acme's store: %q", out)
	}

	// An enrollment token for a tenant's store, and an API token scoped to
	// the tenant.
	if tok := ok("tokens", "create", "--edge", "shop-1", "--tenant", "acme", "--store", "lyon-1"); !strings.HasPrefix(tok, "oe_") {
		t.Errorf("enroll token: %q", tok)
	}
	fails(2, "--tenant", "tokens", "create", "--edge", "shop-2", "--store", "lyon-1")
	fails(1, "not a store of tenant", "tokens", "create", "--edge", "shop-2", "--tenant", "default", "--store", "lyon-1")
	if tok := ok("tokens", "create", "--admin", "--name", "acme-bi", "--role", "reader", "--tenant", "acme"); !strings.HasPrefix(tok, "oa_") {
		t.Errorf("api token: %q", tok)
	}
	fails(1, "not found", "tokens", "create", "--admin", "--name", "ghost", "--tenant", "nobody")
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ok("edges", "add", "--id", "shop-3", "--public-key", hex.EncodeToString(pub), "--tenant", "acme", "--store", "lyon-1")

	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var enrollTenant, enrollStore, apiTenant, edgeTenant, edgeStore string
	if err := conn.QueryRow(context.Background(),
		`SELECT (SELECT tenant || '/' || store FROM enroll_tokens WHERE edge = 'shop-1'), '',
		        (SELECT tenant FROM api_tokens WHERE name = 'acme-bi'),
		        (SELECT tenant FROM edges WHERE id = 'shop-3'), (SELECT store FROM edges WHERE id = 'shop-3')`).
		Scan(&enrollTenant, &enrollStore, &apiTenant, &edgeTenant, &edgeStore); err != nil {
		t.Fatal(err)
	}
	if enrollTenant != "acme/lyon-1" || apiTenant != "acme" || edgeTenant != "acme" || edgeStore != "lyon-1" {
		t.Errorf("stored: enroll %q, api token %q, edge %q/%q", enrollTenant, apiTenant, edgeTenant, edgeStore)
	}
	if out := ok("edges", "list"); !strings.Contains(out, "acme") || !strings.Contains(out, "lyon-1") {
		t.Errorf("edges list: %q", out)
	}
}
