package projection_test

import (
	pt "github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"reflect"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/protocol/pos"
)

var tillEUR = pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: day, Currency: "EUR"}

func sale(day, id string, price int64, tender string) pos.Transaction {
	return pt.Txn(day, id, "EUR", false, 0, tender, 0, pt.Line("apple", 1000, price, 0, price/10))
}

func TestReconciliation(t *testing.T) {
	for _, tc := range []struct {
		name      string
		build     func(*pt.Ledger)
		key       pos.TillKey
		status    string
		reason    string // a part of the reason, "" for none
		zCount    int64
		restated  int
		anomalies []string
	}{
		{name: "no Z yet", key: tillEUR, status: projection.StatusOpen,
			build: func(l *pt.Ledger) { l.Add("e1", "a", pos.TypeSaleCompleted, sale(day, "T1", 100, "card")) }},
		{name: "match", key: tillEUR, status: projection.StatusMatch, zCount: 1,
			build: func(l *pt.Ledger) {
				a := l.Add("e1", "a", pos.TypeSaleCompleted, sale(day, "T1", 100, "card"))
				b := l.Add("e1", "b", pos.TypeSaleCompleted, sale(day, "T2", 300, "cash"))
				l.Add("e1", "z", pos.TypeTillClosed, pt.ZOf(l.TB, tillEUR, a, b))
			}},
		{name: "void, return and change", key: tillEUR, status: projection.StatusMatch, zCount: 1,
			build: func(l *pt.Ledger) {
				shopInto(l)
				l.Add("e1", "z", pos.TypeTillClosed, pt.ZOf(l.TB, tillEUR, l.Recs...))
			}},
		{name: "two currencies", key: pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: day, Currency: "USD"},
			status: projection.StatusMatch, zCount: 1,
			build: func(l *pt.Ledger) {
				shopInto(l)
				usd := pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: day, Currency: "USD"}
				l.Add("e1", "zu", pos.TypeTillClosed, pt.ZOf(l.TB, usd, l.Recs...))
				l.Add("e1", "ze", pos.TypeTillClosed, pt.ZOf(l.TB, tillEUR, l.Recs[:4]...))
			}},
		{name: "a Z before its sales", key: tillEUR, status: projection.StatusMatch, zCount: 1,
			build: func(l *pt.Ledger) {
				a, b := sale(day, "T1", 100, "card"), sale(day, "T2", 300, "cash")
				z := pt.ZOf(l.TB, tillEUR, l.Record(pos.TypeSaleCompleted, a), l.Record(pos.TypeSaleCompleted, b))
				l.Add("e1", "z", pos.TypeTillClosed, z)
				l.Add("e1", "a", pos.TypeSaleCompleted, a)
				l.Add("e1", "b", pos.TypeSaleCompleted, b)
			}},
		{name: "reprinted Z", key: tillEUR, status: projection.StatusMatch, zCount: 2,
			build: func(l *pt.Ledger) {
				a := l.Add("e1", "a", pos.TypeSaleCompleted, sale(day, "T1", 100, "card"))
				z := pt.ZOf(l.TB, tillEUR, a)
				l.Add("e1", "z", pos.TypeTillClosed, z)
				l.Add("e1", "z-reprint", pos.TypeTillClosed, z)
			}},
		{name: "two Zs for one day", key: tillEUR, status: projection.StatusRestated, reason: "now match",
			zCount: 2, restated: 1, anomalies: []string{projection.AnomalyZSuperseded},
			build: func(l *pt.Ledger) {
				a := l.Add("e1", "a", pos.TypeSaleCompleted, sale(day, "T1", 100, "card"))
				l.Add("e1", "z1", pos.TypeTillClosed, pt.ZOf(l.TB, tillEUR, a))
				b := l.Add("e1", "b", pos.TypeSaleCompleted, sale(day, "T2", 300, "cash"))
				l.Add("e1", "z2", pos.TypeTillClosed, pt.ZOf(l.TB, tillEUR, a, b))
			}},
		{name: "pending", key: tillEUR, status: projection.StatusPending, zCount: 1,
			reason: "short of the Z report by 1 transactions worth 330",
			build: func(l *pt.Ledger) {
				a := l.Add("e1", "a", pos.TypeSaleCompleted, sale(day, "T1", 100, "card"))
				b := l.Record(pos.TypeSaleCompleted, sale(day, "T2", 300, "cash"))
				l.Add("e1", "z", pos.TypeTillClosed, pt.ZOf(l.TB, tillEUR, a, b))
			}},
		{name: "mismatch: the ledger exceeds the Z", key: tillEUR, status: projection.StatusMismatch, zCount: 1,
			reason: "sales: the Z report says 1 for 110, the ledger holds 2 for 440",
			build: func(l *pt.Ledger) {
				a := l.Add("e1", "a", pos.TypeSaleCompleted, sale(day, "T1", 100, "card"))
				l.Add("e1", "b", pos.TypeSaleCompleted, sale(day, "T2", 300, "cash"))
				l.Add("e1", "z", pos.TypeTillClosed, pt.ZOf(l.TB, tillEUR, a))
			}},
		{name: "mismatch: the tender split differs", key: tillEUR, status: projection.StatusMismatch, zCount: 1,
			reason: "tender cash: the Z report says 110, the ledger adds up to 0",
			build: func(l *pt.Ledger) {
				a := l.Add("e1", "a", pos.TypeSaleCompleted, sale(day, "T1", 100, "card"))
				z := pt.ZOf(l.TB, tillEUR, a)
				z.Tenders[0].Type = "cash"
				l.Add("e1", "z", pos.TypeTillClosed, z)
			}},
		{name: "a late return after the match", key: tillEUR, status: projection.StatusRestated, zCount: 1, restated: 1,
			reason: "now mismatch",
			build: func(l *pt.Ledger) {
				a := sale(day, "T1", 100, "card")
				r := l.Add("e1", "a", pos.TypeSaleCompleted, a)
				l.Add("e1", "z", pos.TypeTillClosed, pt.ZOf(l.TB, tillEUR, r))
				l.Add("e1", "ret", pos.TypeReturnCompleted, pt.ReturnOf(a, "R1", 0))
			}},
		{name: "late events for an old day", key: pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: "2026-11-23", Currency: "EUR"},
			status: projection.StatusRestated, zCount: 1, restated: 2, reason: "now mismatch",
			build: func(l *pt.Ledger) {
				old := pos.TillKey{Store: "s1", Terminal: "T1", BusinessDay: "2026-11-23", Currency: "EUR"}
				a := l.Add("e1", "a", pos.TypeSaleCompleted, sale(old.BusinessDay, "T1", 100, "card"))
				l.Add("e1", "z", pos.TypeTillClosed, pt.ZOf(l.TB, old, a))
				// A week of other days, then two events the till held back.
				for i, d := range []string{"2026-11-24", "2026-11-27", day} {
					l.Add("e1", "x", pos.TypeSaleCompleted, sale(d, "X"+string(rune('0'+i)), 100, "card"))
				}
				l.Add("e2", "late1", pos.TypeSaleCompleted, sale(old.BusinessDay, "T7", 200, "card"))
				l.Add("e2", "late2", pos.TypeSaleCompleted, sale(old.BusinessDay, "T8", 200, "card"))
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := pt.New(t)
			tc.build(l)
			s := pt.Fold(t, l.Recs...)
			got, ok := s.Tills[tc.key]
			if !ok {
				t.Fatalf("no reconciliation row for %+v", tc.key)
			}
			if got.Status != tc.status {
				t.Fatalf("status %s, want %s (reason %q)", got.Status, tc.status, got.Reason)
			}
			reason := strings.Join(got.Reason, "; ")
			if tc.reason == "" && len(got.Reason) != 0 || !strings.Contains(reason, tc.reason) {
				t.Fatalf("reason %q, want %q", reason, tc.reason)
			}
			if got.ZCount != tc.zCount {
				t.Fatalf("%d Z reports, want %d", got.ZCount, tc.zCount)
			}
			if len(got.Restated) != tc.restated || countTill(s.Restatements, tc.key) != tc.restated {
				t.Fatalf("restated by %v (log %+v), want %d events", got.Restated, s.Restatements, tc.restated)
			}
			var kinds []string
			for _, a := range s.Anomalies {
				kinds = append(kinds, a.Kind)
			}
			if !reflect.DeepEqual(kinds, tc.anomalies) {
				t.Fatalf("anomalies %+v, want kinds %v", s.Anomalies, tc.anomalies)
			}
		})
	}
}

// TestReconciliationAsItGoes follows one till day through its statuses: a Z
// that arrives first is pending until its sales are in, then matches, and
// a late event restates it, with the log saying which.
func TestReconciliationAsItGoes(t *testing.T) {
	l := pt.New(t)
	a, b := sale(day, "T1", 100, "card"), sale(day, "T2", 300, "cash")
	z := pt.ZOf(t, tillEUR, l.Record(pos.TypeSaleCompleted, a), l.Record(pos.TypeSaleCompleted, b))
	l.Add("e1", "z", pos.TypeTillClosed, z)
	l.Add("e1", "a", pos.TypeSaleCompleted, a)
	l.Add("e1", "b", pos.TypeSaleCompleted, b)
	late := l.Add("e2", "late", pos.TypeSaleVoided, pt.VoidOf(a, "V1"))
	s := projection.NewState()
	var statuses []string
	for _, r := range l.Recs {
		s.Apply(projection.Fold(s, pt.Stores(t), []projection.Record{r}))
		statuses = append(statuses, s.Tills[tillEUR].Status)
	}
	want := []string{projection.StatusPending, projection.StatusPending, projection.StatusMatch, projection.StatusRestated}
	if !reflect.DeepEqual(statuses, want) {
		t.Fatalf("statuses %v, want %v", statuses, want)
	}
	if len(s.Restatements) != 1 {
		t.Fatalf("restatements: %+v", s.Restatements)
	}
	r := s.Restatements[0]
	if r.Pos != late.Pos || r.ID != "late" || r.Till != tillEUR || r.Status != projection.StatusMismatch || len(r.What) == 0 {
		t.Fatalf("restatement: %+v", r)
	}
}

func countTill(rs []projection.Restatement, k pos.TillKey) int {
	n := 0
	for _, r := range rs {
		if r.Till == k {
			n++
		}
	}
	return n
}
