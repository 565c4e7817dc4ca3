package projection_test

import (
	"fmt"
	pt "github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/outpost-edge/outpost/cloud/projection"
)

// TestSplitEqualsWhole is the rebuild-equals-incremental invariant in
// memory: folding a ledger in one batch (a rebuild) gives exactly the rows
// that folding it batch by batch, cut anywhere, gives (ingest).
func TestSplitEqualsWhole(t *testing.T) {
	stores := pt.Stores(t)
	for seed := uint64(1); seed <= 20; seed++ {
		l := pt.Random(t, seed, 150)
		whole := projection.NewState()
		whole.Apply(projection.Fold(whole, stores, l.Recs))
		checkInvariants(t, seed, whole)
		rng := rand.New(rand.NewPCG(seed, 2))
		for split := 0; split < 4; split++ {
			inc := projection.NewState()
			for rest := l.Recs; len(rest) > 0; {
				n := rng.IntN(min(len(rest), []int{1, 3, 20, 200}[split%4]) + 1) // empty batches too
				inc.Apply(projection.Fold(inc, stores, rest[:n]))
				rest = rest[n:]
			}
			if !reflect.DeepEqual(whole, inc) {
				t.Fatalf("seed %d, split %d: folding in batches differs from folding at once\n%s", seed, split, firstDiff(whole, inc))
			}
		}
	}
}

// checkInvariants checks what must hold of any fold (checkFigures) and
// that the generator made duplicates.
func checkInvariants(t *testing.T, seed uint64, s *projection.State) {
	t.Helper()
	checkFigures(t, s)
	var kinds = map[string]int{}
	for _, a := range s.Anomalies {
		kinds[a.Kind]++
	}
	if kinds[projection.AnomalyDuplicate] == 0 {
		t.Fatalf("seed %d: the random ledger has no duplicate transaction; the generator is not exercising it", seed)
	}
}

// checkFigures checks that the tenders of a store day add up to its total
// collected, and that net sales are gross less discounts, returns and voids.
func checkFigures(t *testing.T, s *projection.State) {
	t.Helper()
	type dayKey struct{ store, day, currency string }
	tenders := map[dayKey]int64{}
	for k, v := range s.Tables.Tenders {
		tenders[dayKey{k.Store, k.BusinessDay, k.Currency}] += v.Net
	}
	for k, v := range s.Tables.Sales {
		if got := tenders[dayKey{k.Store, k.BusinessDay, k.Currency}]; got != v.TotalCollected {
			t.Fatalf("%+v: tenders add up to %d, total collected is %d", k, got, v.TotalCollected)
		}
		if v.NetSales != v.GrossSales-v.Discounts-v.ReturnsAmount-v.VoidsAmount || v.TotalCollected != v.NetSales+v.Tax {
			t.Fatalf("%+v: figures do not add up: %+v", k, v)
		}
	}
}

// firstDiff names the first table that differs, for the failure message.
func firstDiff(a, b *projection.State) string {
	va, vb := reflect.ValueOf(a.Tables), reflect.ValueOf(b.Tables)
	for i := 0; i < va.NumField(); i++ {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			return fmt.Sprintf("table %s:\n whole %+v\n split %+v", va.Type().Field(i).Name, va.Field(i).Interface(), vb.Field(i).Interface())
		}
	}
	la, lb := reflect.ValueOf(a.Logs), reflect.ValueOf(b.Logs)
	for i := 0; i < la.NumField(); i++ {
		if !reflect.DeepEqual(la.Field(i).Interface(), lb.Field(i).Interface()) {
			return fmt.Sprintf("log %s:\n whole %+v\n split %+v", la.Type().Field(i).Name, la.Field(i).Interface(), lb.Field(i).Interface())
		}
	}
	return fmt.Sprintf("last pos %d and %d", a.LastPos, b.LastPos)
}
