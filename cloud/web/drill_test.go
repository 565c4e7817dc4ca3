package web_test

import (
	"encoding/csv"
	"strings"
	"testing"
)

// TestStoreDayDrillsToItsEvents: the Store-and-day figures link to the
// events list of that store's day, which shows exactly its folded POS
// transactions (not the Z reports, not the duplicate, not another
// tenant's sale), pages with the filter kept, and downloads the same rows
// as CSV; another tenant following the link sees nothing.
func TestStoreDayDrillsToItsEvents(t *testing.T) {
	sh := mustShops(t, 1)
	b := sh.browser(t)
	b.login(sh.A)
	const link = "/events?business_day=2026-02-10&amp;store=s1"
	day := b.get("/stores/s1/" + day1)
	wantAll(t, day, "store and day", `class="drill" href="`+link+`"`, `id="day-events" href="`+link+`"`)

	p := b.get("/events?business_day=2026-02-10&store=s1")
	wantAll(t, p, "drilled events", "<code>a</code>", `id="txn-filter"`,
		`id="next" href="/events?after=1&amp;business_day=2026-02-10&amp;store=s1"`)
	for _, not := range []string{"<code>b</code>", "<code>z</code>", "<code>b-retry</code>", "<code>x</code>"} {
		if strings.Contains(p.Body, not) {
			t.Errorf("first page of one shows %s", not)
		}
	}
	rows, err := csv.NewReader(strings.NewReader(b.get("/events.csv?business_day=2026-02-10&store=s1").Body)).ReadAll()
	if err != nil || len(rows) != 3 || rows[1][6] != "a" || rows[2][6] != "b" {
		t.Fatalf("drilled csv: %v %q, want the events a and b", err, rows)
	}

	other := sh.browser(t)
	other.login(sh.B)
	if p := other.get("/events?business_day=2026-02-10&store=s1"); strings.Contains(p.Body, "<code>a</code>") || !strings.Contains(p.Body, "No events for this filter") {
		t.Fatalf("tenant t2 sees t1's day:\n%s", p.Body)
	}
}
