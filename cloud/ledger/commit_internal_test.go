package ledger

import "testing"

// TestEarlyCovers: the early transaction is used only for a commit whose
// edges it locked and whose records it took positions for.
func TestEarlyCovers(t *testing.T) {
	e := &early{edges: []string{"a", "c"}, n: 5}
	for _, tc := range []struct {
		edges []string
		n     int
		want  bool
	}{
		{[]string{"a"}, 5, true},
		{[]string{"a", "c"}, 1, true},
		{[]string{"b"}, 1, false},
		{[]string{"a", "d"}, 1, false},
		{[]string{"c"}, 6, false},
	} {
		if got := e.covers(&txn{edges: tc.edges, maxNew: tc.n}); got != tc.want {
			t.Errorf("edges %v, %d records: covers = %v", tc.edges, tc.n, got)
		}
	}
}
