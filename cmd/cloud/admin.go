package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/cli"
	"github.com/outpost-edge/outpost/internal/flagenv"
	"github.com/outpost-edge/outpost/protocol"
)

// runAdmin runs migrate, edges, tokens and key.
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	name := args[0]
	rest := args[1:]
	if name != "migrate" {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return usagef("cloud %s needs a subcommand; see cloud --help", name)
		}
		name += " " + rest[0]
		rest = rest[1:]
	}
	var c Config
	fs := flag.NewFlagSet("cloud "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs, &c)
	// Each command defines only the flags it reads, so that its --help
	// lists only those.
	id, pub, kidFlag, edge, tokName, role := new(string), new(string), new(string), new(string), new(string), new(string)
	admin, asJSON := new(bool), new(bool)
	ttl := new(time.Duration)
	tenant, store, tname, zone, currency := new(string), new(string), new(string), new(string), new(string)
	switch name {
	case "migrate":
	case "key show", "edges list", "tenants list":
		fs.BoolVar(asJSON, "json", false, "print JSON")
	case "stores list":
		fs.BoolVar(asJSON, "json", false, "print JSON")
		fs.StringVar(tenant, "tenant", "", "only this tenant's stores")
	case "tenants add":
		fs.StringVar(id, "id", "", "tenant id: 1 to 64 of A-Z a-z 0-9 _ -")
		fs.StringVar(tname, "name", "", "the tenant's name, for people")
	case "stores add":
		fs.StringVar(tenant, "tenant", "", "the tenant that owns the store")
		fs.StringVar(id, "id", "", "store id: the store its tills put in POS bodies (unique across tenants)")
		fs.StringVar(tname, "name", "", "the store's name, for people")
		fs.StringVar(zone, "time-zone", "", "the store's IANA time zone, such as Europe/Paris")
		fs.StringVar(currency, "currency", "", "the store's default ISO 4217 currency, such as EUR")
	case "edges add":
		fs.StringVar(id, "id", "", "edge id")
		fs.StringVar(pub, "public-key", "", "the edge's Ed25519 public key, hex or base64 (32 bytes)")
		fs.StringVar(tenant, "tenant", "", "the tenant the edge belongs to (default: the tenant \"default\")")
		fs.StringVar(store, "store", "", "with --tenant: the store of the tenant the edge serves")
	case "edges rotate-key":
		fs.StringVar(id, "id", "", "edge id")
		fs.StringVar(pub, "public-key", "", "the edge's Ed25519 public key, hex or base64 (32 bytes)")
	case "edges revoke":
		fs.StringVar(id, "id", "", "edge id")
	case "edges revoke-key":
		fs.StringVar(id, "id", "", "edge id")
		fs.StringVar(kidFlag, "kid", "", "the key id to revoke (16 hex digits, from edges list)")
	case "tokens create":
		fs.StringVar(edge, "edge", "", "the edge the enrollment token is for")
		flagenv.DurationVar(fs, ttl, "ttl", 24*time.Hour, flagenv.Durations(time.Minute, 0, ""), "how long the enrollment token is valid")
		fs.BoolVar(admin, "admin", false, "make an API token instead of an enrollment token")
		fs.StringVar(tokName, "name", "", "with --admin: a name for the API token")
		fs.StringVar(role, "role", "admin", "with --admin: admin (read and write) or reader")
		fs.StringVar(tenant, "tenant", "", "the tenant the enrolled edge belongs to; with --admin, the tenant the API token is scoped to (default: none, a global token)")
		fs.StringVar(store, "store", "", "with --tenant, for an enrollment token: the store of the tenant the edge serves")
	default:
		return usagef("unknown command `cloud %s`; see cloud --help", name)
	}
	fs.Usage = flagenv.Usage(fs, "OUTPOST_", "Usage: cloud "+name+" [flags]")
	if err := flagenv.Parse(fs, rest, "OUTPOST_", "config"); err != nil {
		return err
	}
	log, err := cli.NewLogger(stderr, c.LogLevel, c.LogFormat)
	if err != nil {
		return err
	}

	if name == "key show" {
		s, err := loadCloudKey(c.DataDir, log)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(map[string]string{"public_key": hex.EncodeToString(s.Public()), "kid": string(s.KeyID())})
		}
		fmt.Fprintf(stdout, "public key: %s\nkid:        %s\n", hex.EncodeToString(s.Public()), s.KeyID())
		return nil
	}

	pool, cl, err := openDB(ctx, &c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	defer func() {
		pool.Close()
		if cl != nil {
			cl.Stop()
		}
	}()
	if name == "migrate" {
		part, err := ledger.MigrateReport(ctx, pool)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "schema at version %d (ledger partitioning: %s)\n", ledger.SchemaVersion(), part)
		return nil
	}
	if err := ledger.CheckSchema(ctx, pool); err != nil {
		return fmt.Errorf("%w (run `cloud migrate` first)", err)
	}
	led := ledger.New(pool, ledger.Options{Logger: log})

	need := func(v, flagName string) error {
		if v == "" {
			return usagef("cloud %s needs --%s", name, flagName)
		}
		return nil
	}
	switch name {
	case "edges add", "edges rotate-key":
		if err := need(*id, "id"); err != nil {
			return err
		}
		k, err := ParsePublicKey(*pub)
		if err != nil {
			return err
		}
		if name == "edges add" {
			if *store != "" && *tenant == "" {
				return usagef("--store needs --tenant: the tenant that owns store %s", *store)
			}
			if *tenant != "" {
				if err := led.CheckTenantStore(ctx, *tenant, *store); err != nil {
					return err
				}
			}
			e, err := led.AddEdge(ctx, *id, k)
			if err != nil {
				return err
			}
			if *tenant != "" {
				if err := led.SetEdgeTenant(ctx, e.ID, *tenant, *store); err != nil {
					return err
				}
			}
			fmt.Fprintf(stdout, "added edge %s with key %s\n", e.ID, protocol.KeyIDOf(k))
			return nil
		}
		kid, err := led.RotateKey(ctx, *id, k)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "edge %s: added key %s; revoke the old key once the edge uses the new one\n", *id, kid)
		return nil
	case "edges list":
		edges, err := led.ListEdges(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(edges)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "EDGE\tTENANT\tSTORE\tSTATUS\tCREATED\tKEYS")
		for _, e := range edges {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.Tenant, orDash(e.Store), e.Status, e.CreatedAt.Format(time.RFC3339), keysSummary(e))
		}
		return tw.Flush()
	case "edges revoke":
		if err := need(*id, "id"); err != nil {
			return err
		}
		if err := led.RevokeEdge(ctx, *id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked edge %s: its segments are refused from now on\n", *id)
		return nil
	case "edges revoke-key":
		if err := need(*id, "id"); err != nil {
			return err
		}
		if err := need(*kidFlag, "kid"); err != nil {
			return err
		}
		if err := led.RevokeKey(ctx, *id, protocol.KeyID(*kidFlag)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked key %s of edge %s: segments signed with it are refused from now on\n", *kidFlag, *id)
		return nil
	case "tokens create":
		if *admin {
			if err := need(*tokName, "name"); err != nil {
				return err
			}
			if *role != "admin" && *role != "reader" {
				return usagef("--role must be admin or reader, not %q", *role)
			}
			if *store != "" {
				return usagef("--store is for enrollment tokens; an API token is scoped to a whole tenant")
			}
			var t string
			var err error
			if *tenant == "" {
				t, err = led.CreateAPIToken(ctx, *tokName, *role, "")
			} else {
				t, err = led.CreateTenantAPIToken(ctx, *tokName, *role, *tenant)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s\n", t)
			scope := "every tenant"
			if *tenant != "" {
				scope = "tenant " + *tenant + " only"
			}
			fmt.Fprintf(stderr, "API token %q (%s, sees %s) created. It is shown once; use it as `Authorization: Bearer <token>`.\n", *tokName, *role, scope)
			return nil
		}
		if err := need(*edge, "edge"); err != nil {
			return err
		}
		if *store != "" && *tenant == "" {
			return usagef("--store needs --tenant: the tenant that owns store %s", *store)
		}
		var t string
		var err error
		if *tenant == "" {
			t, err = led.CreateEnrollToken(ctx, *edge, *ttl)
		} else {
			t, err = led.CreateTenantEnrollToken(ctx, *edge, *tenant, *store, *ttl)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", t)
		fmt.Fprintf(stderr, "Enrollment token for edge %s, valid for %s and usable once: on the edge run\n  edge enroll --cloud http://<cloud-api> --token %s\n", *edge, *ttl, t)
		return nil
	case "tenants add":
		if err := need(*id, "id"); err != nil {
			return err
		}
		if err := need(*tname, "name"); err != nil {
			return err
		}
		t, err := led.AddTenant(ctx, *id, *tname)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "added tenant %s (%s)\n", t.ID, t.Name)
		return nil
	case "tenants list":
		ts, err := led.Tenants(ctx, ledger.AllTenants)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(ts)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tNAME\tCREATED")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", t.ID, t.Name, t.CreatedAt.Format(time.RFC3339))
		}
		return tw.Flush()
	case "stores add":
		for _, f := range []struct{ v, name string }{{*tenant, "tenant"}, {*id, "id"}, {*tname, "name"}, {*zone, "time-zone"}, {*currency, "currency"}} {
			if err := need(f.v, f.name); err != nil {
				return err
			}
		}
		st, err := led.AddStore(ctx, ledger.Store{Tenant: *tenant, ID: *id, Name: *tname, TimeZone: *zone, Currency: *currency})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "added store %s (%s) to tenant %s: %s, %s\n", st.ID, st.Name, st.Tenant, st.TimeZone, st.Currency)
		return nil
	case "stores list":
		sc := ledger.AllTenants
		if *tenant != "" {
			sc = *tenant
		}
		ss, err := led.Stores(ctx, sc)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(ss)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tSTORE\tNAME\tTIME ZONE\tCURRENCY")
		for _, st := range ss {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", st.Tenant, st.ID, st.Name, st.TimeZone, st.Currency)
		}
		return tw.Flush()
	}
	return usagef("unknown command `cloud %s`; see cloud --help", name)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func keysSummary(e ledger.Edge) string {
	var parts []string
	for _, k := range e.Keys {
		parts = append(parts, fmt.Sprintf("%s(%s)", k.KID, k.Status))
	}
	return strings.Join(parts, " ")
}

// ParsePublicKey reads and validates an edge's Ed25519 public key in hex or
// base64 (protocol.ParsePublicKey).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, usagef("--public-key is required: the edge's Ed25519 public key (edge key show prints it)")
	}
	pub, err := protocol.ParsePublicKey(s)
	if err != nil {
		return nil, usagef("--public-key: %v", err)
	}
	return pub, nil
}
