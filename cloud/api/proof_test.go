package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol/proof"
)

func TestEventProof(t *testing.T) {
	ctx := context.Background()
	e := MustEnv(t, envOptions{})
	s := e.MustStream(t, "edge-1").AddN(t, 25)
	e.MustCommit(t, s, 1, 10)
	e.MustCommit(t, s, 11, 25)
	path := func(seq uint64) string { return fmt.Sprintf("/v1/events/edge-1/%s/%d/proof", s.Stream.Epoch, seq) }
	var page ledger.Page
	e.MustDo(t, http.StatusOK, "GET", "/v1/events?edge=edge-1&limit=1000", e.Reader, nil, &page)
	posOf := map[uint64]int64{}
	for _, ev := range page.Events {
		posOf[ev.Seq] = ev.Pos
	}

	check := func(t *testing.T, seq, cpSeq uint64) *proof.Result {
		t.Helper()
		r := e.MustDo(t, http.StatusOK, "GET", path(seq), e.Reader, nil, nil)
		if ct := r.Header.Get("Content-Type"); ct != proof.ContentType {
			t.Errorf("Content-Type %q, want %q", ct, proof.ContentType)
		}
		if cd := r.Header.Get("Content-Disposition"); !strings.Contains(cd, fmt.Sprintf("proof-edge-1-%s-%d", s.Stream.Epoch, seq)) {
			t.Errorf("Content-Disposition %q", cd)
		}
		res, err := proof.Verify(r.Body, proof.Options{CloudKey: e.Cloud.Public()})
		if err != nil {
			t.Fatalf("proof of seq %d: %v", seq, err)
		}
		if res.Record.Seq != seq || res.Checkpoint.Seq != cpSeq || res.ChainLen != int(cpSeq-seq) ||
			res.Statement.Pos != posOf[seq] || res.Statement.EdgeKID != s.Signer.KeyID() {
			t.Fatalf("proof of seq %d: record %d, checkpoint %d, chain %d, pos %d (want %d), key %s",
				seq, res.Record.Seq, res.Checkpoint.Seq, res.ChainLen, res.Statement.Pos, posOf[seq], res.Statement.EdgeKID)
		}
		return res
	}

	t.Run("each record proves, under the checkpoint that covers it", func(t *testing.T) {
		for _, tc := range []struct{ seq, cp uint64 }{{1, 10}, {3, 10}, {10, 10}, {11, 25}, {25, 25}} {
			check(t, tc.seq, tc.cp)
		}
	})

	t.Run("a key revoked later still proves what it signed before", func(t *testing.T) {
		if err := e.Ledger.RevokeKey(ctx, "edge-1", s.Signer.KeyID()); err != nil {
			t.Fatal(err)
		}
		res := check(t, 4, 10)
		if res.Statement.KeyValidUntil == 0 || !strings.Contains(res.Text(), "revoked") {
			t.Errorf("the proof does not say the key was revoked:\n%s", res.Text())
		}
	})

	t.Run("refusals", func(t *testing.T) {
		wantError(t, e.Do(t, "GET", path(26), e.Reader, nil), http.StatusNotFound, "event 26", "is not committed")
		wantError(t, e.Do(t, "GET", "/v1/events/edge-1/zz/1/proof", e.Reader, nil), http.StatusBadRequest, "epoch in the path")
		wantError(t, e.Do(t, "GET", fmt.Sprintf("/v1/events/edge-1/%s/0/proof", s.Stream.Epoch), e.Reader, nil), http.StatusBadRequest, "seq in the path")
		wantError(t, e.Do(t, "GET", path(1), "", nil), http.StatusUnauthorized, "missing bearer token")
		wantError(t, e.Do(t, "GET", path(1)+"?x=1", e.Reader, nil), http.StatusBadRequest, "parameter x")
	})

	t.Run("a damaged ledger is refused, not proven", func(t *testing.T) {
		if _, err := e.Conn.Exec(ctx, `UPDATE ledger SET raw = set_byte(raw, length(raw) - 1, get_byte(raw, length(raw) - 1) # 1)
			WHERE edge = 'edge-1' AND seq = 7`); err != nil {
			t.Fatal(err)
		}
		wantError(t, e.Do(t, "GET", path(3), e.Reader, nil), http.StatusInternalServerError, "run cloud audit")
		check(t, 12, 25) // the other checkpoint's range is intact
	})
}
