package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// Tenants and stores are checked on the way in, and an edge's tenant
// follows the rules: an enrollment token of a tenant puts the edge there,
// an edge of the default tenant with nothing committed may be moved, and
// an edge that has committed stays where it is.
func TestTenancy(t *testing.T) {
	ctx := context.Background()
	url := MustMigratedDB(t)
	l := MustLedger(t, url, ledger.Options{})
	if _, err := l.AddTenant(ctx, "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		do   func() error
	}{
		{"tenant id", ledger.ErrInvalid, func() error { _, err := l.AddTenant(ctx, "a b", "x"); return err }},
		{"tenant name", ledger.ErrInvalid, func() error { _, err := l.AddTenant(ctx, "b", " "); return err }},
		{"tenant again", ledger.ErrExists, func() error { _, err := l.AddTenant(ctx, "acme", "x"); return err }},
		{"zone", ledger.ErrInvalid, func() error {
			_, err := l.AddStore(ctx, ledger.Store{Tenant: "acme", ID: "s1", Name: "S", TimeZone: "Nowhere/Atlantis", Currency: "EUR"})
			return err
		}},
		{"local zone", ledger.ErrInvalid, func() error {
			_, err := l.AddStore(ctx, ledger.Store{Tenant: "acme", ID: "s1", Name: "S", TimeZone: "Local", Currency: "EUR"})
			return err
		}},
		{"currency", ledger.ErrInvalid, func() error {
			_, err := l.AddStore(ctx, ledger.Store{Tenant: "acme", ID: "s1", Name: "S", TimeZone: "UTC", Currency: "XYZ"})
			return err
		}},
		{"unknown tenant", ledger.ErrNotFound, func() error {
			_, err := l.AddStore(ctx, ledger.Store{Tenant: "ghost", ID: "s1", Name: "S", TimeZone: "UTC", Currency: "EUR"})
			return err
		}},
		{"read as a bad scope", ledger.ErrInvalid, func() error {
			return l.ReadAs(ctx, "a'b", func(*ledger.Ledger) error { return nil })
		}},
	} {
		if err := tc.do(); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
	}
	if _, err := l.AddStore(ctx, ledger.Store{Tenant: "acme", ID: "s1", Name: "S", TimeZone: "Europe/Paris", Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddStore(ctx, ledger.Store{Tenant: ledger.DefaultTenant, ID: "s1", Name: "S", TimeZone: "UTC", Currency: "EUR"}); !errors.Is(err, ledger.ErrExists) {
		t.Errorf("a store id of another tenant: %v, want ErrExists", err)
	}

	// Enrollment with a tenant's token.
	tok, err := l.CreateTenantEnrollToken(ctx, "till-gw", "acme", "s1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Enroll(ctx, tok, protocoltest.NewSigner(t).Public()); err != nil {
		t.Fatal(err)
	}
	if tenant, store, err := l.EdgeTenant(ctx, "till-gw"); err != nil || tenant != "acme" || store != "s1" {
		t.Errorf("enrolled edge: %q %q %v", tenant, store, err)
	}
	if _, err := l.CreateTenantEnrollToken(ctx, "till-gw", ledger.DefaultTenant, "", time.Hour); !errors.Is(err, ledger.ErrTenantMismatch) {
		t.Errorf("a token of another tenant for the edge: %v, want ErrTenantMismatch", err)
	}
	if _, err := l.CreateTenantEnrollToken(ctx, "other", ledger.DefaultTenant, "s1", time.Hour); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("a store of another tenant: %v, want ErrInvalid", err)
	}

	// An edge of the default tenant: moved while it has committed nothing,
	// kept once it has.
	e := MustAddEdge(t, l, "shop-1")
	if tenant, _, _ := l.EdgeTenant(ctx, "shop-1"); tenant != ledger.DefaultTenant {
		t.Fatalf("a new edge is in %q", tenant)
	}
	MustAddEdge(t, l, "shop-2")
	if err := l.SetEdgeTenant(ctx, "shop-2", "acme", ""); err != nil {
		t.Errorf("move an edge with nothing committed: %v", err)
	}
	c := makeChain(t, protocol.Stream{Edge: "shop-1", Epoch: newEpoch(t)}, 2, time.Now())
	if out := MustCommit(t, l, inputs(segment(c, e, 1, 2))...); out[0].Kind != ledger.KindCommitted {
		t.Fatalf("commit: %+v", out)
	}
	if err := l.SetEdgeTenant(ctx, "shop-1", "acme", ""); !errors.Is(err, ledger.ErrTenantMismatch) {
		t.Errorf("move an edge that has committed: %v, want ErrTenantMismatch", err)
	}
	if err := l.SetEdgeTenant(ctx, "nobody", "acme", ""); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("an edge that is not registered: %v, want ErrNotFound", err)
	}
	// Read as acme, the committed stream of the default tenant's edge is
	// not there; read as every tenant, it is.
	for _, c := range []struct {
		scope string
		want  int
	}{{"acme", 0}, {ledger.AllTenants, 1}, {ledger.DefaultTenant, 1}} {
		err := l.ReadAs(ctx, c.scope, func(l *ledger.Ledger) error {
			ss, err := l.Streams(ctx)
			if err == nil && len(ss) != c.want {
				t.Errorf("streams as %s: %d, want %d", c.scope, len(ss), c.want)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
