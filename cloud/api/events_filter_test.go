package api_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/outpost-edge/outpost/cloud/ledger"
)

type storeEventsPage struct {
	Events []ledger.Event `json:"events"`
	Next   int64          `json:"next"`
}

func eventIDs(p storeEventsPage) []string {
	ids := []string{}
	for _, ev := range p.Events {
		ids = append(ids, ev.ID)
	}
	return ids
}

// TestEventsByStoreAndDay: GET /v1/events?store=&business_day= lists the
// POS transactions the projections folded for that store and day (the
// events behind the Store-and-day figures), paginated, and nothing else:
// not the day's Z report, not another day's sale, not another store's.
func TestEventsByStoreAndDay(t *testing.T) {
	sh := mustShop(t) // ev-0, ev-1: day-1 sales; ev-2: day-1 Z; ev-3: day-2 sale
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"?store=s1&business_day=" + day1, []string{"ev-0", "ev-1"}},
		{"?store=s1&business_day=" + day2, []string{"ev-3"}},
		{"?store=s1", []string{"ev-0", "ev-1", "ev-3"}},
		{"?store=s1&business_day=2026-02-12", []string{}},
		{"?store=s2&business_day=" + day1, []string{}},
		{"?store=s1&business_day=" + day1 + "&type=sale.completed&edge=edge-1", []string{"ev-0", "ev-1"}},
	} {
		var p storeEventsPage
		sh.MustDo(t, 200, "GET", "/v1/events"+tc.query, sh.Token, nil, &p)
		if got := eventIDs(p); !equalStrings(got, tc.want) {
			t.Errorf("%s: events %v, want %v", tc.query, got, tc.want)
		}
	}
	// Pages: one at a time, resuming from next.
	var p1, p2 storeEventsPage
	sh.MustDo(t, 200, "GET", "/v1/events?store=s1&business_day="+day1+"&limit=1", sh.Token, nil, &p1)
	if got := eventIDs(p1); !equalStrings(got, []string{"ev-0"}) {
		t.Fatalf("first page %v", got)
	}
	sh.MustDo(t, 200, "GET", "/v1/events?store=s1&business_day="+day1+"&limit=1&after="+itoa(p1.Next), sh.Token, nil, &p2)
	if got := eventIDs(p2); !equalStrings(got, []string{"ev-1"}) {
		t.Fatalf("second page %v", got)
	}
	for _, tc := range []struct{ query, want string }{
		{"?business_day=" + day1, "parameter business_day needs parameter store"},
		{"?store=s1&business_day=10-02-2026", "parameter business_day must be a business day as YYYY-MM-DD"},
		{"?store=bad%20store", "parameter store"},
	} {
		wantError(t, sh.Do(t, "GET", "/v1/events"+tc.query, sh.Token, nil), http.StatusBadRequest, tc.want)
	}
}

// TestEventsByStoreSeesOnlyItsTenant: another tenant's token asking for
// t1's store gets nothing (row-level security on projection_txns and the
// ledger, and the API's own filter).
func TestEventsByStoreSeesOnlyItsTenant(t *testing.T) {
	sh := mustShop(t)
	ctx := t.Context()
	if _, err := sh.Ledger.AddTenant(ctx, "t2", "Tenant two"); err != nil {
		t.Fatal(err)
	}
	tok, err := sh.Ledger.CreateAPIToken(ctx, "t2-reader", "reader", "t2")
	if err != nil {
		t.Fatal(err)
	}
	var p storeEventsPage
	sh.MustDo(t, 200, "GET", "/v1/events?store=s1&business_day="+day1, tok, nil, &p)
	if len(p.Events) != 0 {
		t.Fatalf("tenant t2 sees t1's events: %v", eventIDs(p))
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
