package rollout_test

import (
	"testing"
)

// TestOTATextWithNULCommits: an ota.* event whose version, target or
// reason holds a NUL (valid UTF-8, but not storable in a Postgres text
// column) still commits: the projection must not make the edge's whole
// batch fail, which would wedge its stream at that batch for good.
func TestOTATextWithNULCommits(t *testing.T) {
	r := newRig(t)
	r.edges("e", 1, "linux/amd64")
	r.commit("e-00", ota{kind: "downloaded", version: "1.1.0\x00x", target: "edge\x00-1.1.0", reason: "bad\x00reason"})
	r.commit("e-00", ota{kind: "refused", version: "1.1.0", target: "t\x00", reason: "r\x00"})
	var n int
	if err := r.pool.QueryRow(t.Context(), `SELECT count(*) FROM ota_edge_versions WHERE edge = 'e-00'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("ota_edge_versions rows: %d, %v", n, err)
	}
}
