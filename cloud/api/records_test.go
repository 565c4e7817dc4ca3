package api_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

type recordsAnswer struct {
	Edge    string `json:"edge"`
	Epoch   string `json:"epoch"`
	HWM     uint64 `json:"hwm"`
	LastSeq uint64 `json:"last_seq"`
	From    uint64 `json:"from"`
	To      uint64 `json:"to"`
	Records []struct {
		Seq         uint64    `json:"seq"`
		Pos         int64     `json:"pos"`
		CommittedAt time.Time `json:"committed_at"`
		Raw         []byte    `json:"raw"`
	} `json:"records"`
	Checkpoints []struct {
		Seq         uint64    `json:"seq"`
		CommittedAt time.Time `json:"committed_at"`
		Signature   []byte    `json:"signature"`
	} `json:"checkpoints"`
	Next uint64 `json:"next"`
}

// TestStreamRecords pages through a stream's raw records and checks
// offline, with the edge's key from GET /v1/edges/{id}, that the chain and
// every checkpoint verify.
func TestStreamRecords(t *testing.T) {
	e := MustEnv(t, envOptions{})
	a := e.MustStream(t, "shop-a")
	appendTypes(t, a, time.Date(2026, 2, 10, 9, 0, 0, 0, time.UTC), "sale.completed", "telemetry.temperature", "sale.completed",
		"sale.completed", "sale.voided", "sale.completed", "telemetry.temperature")
	e.MustCommit(t, a, 1, 3)
	e.MustCommit(t, a, 4, 7)
	path := fmt.Sprintf("/v1/streams/shop-a/%s/records", a.Stream.Epoch)

	var edge struct {
		Keys []struct {
			KID       string `json:"kid"`
			PublicKey string `json:"public_key"`
		} `json:"keys"`
	}
	e.MustDo(t, 200, "GET", "/v1/edges/shop-a", e.Reader, nil, &edge)
	keys := protocol.KeyMap{}
	for _, k := range edge.Keys {
		pub, err := hex.DecodeString(k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		keys[protocol.KeyID(k.KID)] = ed25519.PublicKey(pub)
	}

	var raws [][]byte
	cps := map[uint64][]byte{}
	from := uint64(1)
	pages := 0
	for from != 0 {
		var p recordsAnswer
		e.MustDo(t, 200, "GET", fmt.Sprintf("%s?from=%d&limit=2", path, from), e.Admin, nil, &p)
		pages++
		if p.Edge != "shop-a" || p.Epoch != a.Stream.Epoch.String() || p.HWM != 7 || p.LastSeq != 7 || p.From != from || p.To != from+1 {
			t.Fatalf("page from %d: %+v", from, p)
		}
		for _, r := range p.Records {
			if r.Seq != uint64(len(raws)+1) || r.Pos == 0 || r.CommittedAt.IsZero() {
				t.Fatalf("record %+v after %d records", r, len(raws))
			}
			raws = append(raws, r.Raw)
		}
		if len(p.Checkpoints) == 0 {
			t.Fatalf("page from %d has no checkpoint covering it", from)
		}
		for _, c := range p.Checkpoints {
			cps[c.Seq] = c.Signature
		}
		from = p.Next
	}
	if pages != 4 || len(raws) != 7 || len(cps) != 2 {
		t.Fatalf("%d pages, %d records, %d checkpoints; want 4, 7, 2", pages, len(raws), len(cps))
	}
	st := protocol.ChainState{Stream: a.Stream}
	for _, seq := range []uint64{3, 7} {
		ck, err := protocol.VerifyCheckpoint(cps[seq], keys)
		if err != nil {
			t.Fatalf("checkpoint %d: %v", seq, err)
		}
		if st, _, err = protocol.VerifyChain(st, raws[st.Seq:seq], &protocol.ChainState{Stream: a.Stream, Seq: ck.Seq, Head: ck.Head}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range raws {
		if !bytes.Equal(raws[i], a.Raws[i]) {
			t.Errorf("record %d: bytes differ from what was committed", i+1)
		}
	}

	// Beyond the end: an empty page and no next.
	var end recordsAnswer
	e.MustDo(t, 200, "GET", path+"?from=8", e.Admin, nil, &end)
	if len(end.Records) != 0 || len(end.Checkpoints) != 0 || end.Next != 0 || end.To != 8+99 {
		t.Errorf("page beyond the end: %+v", end)
	}

	wantError(t, e.Do(t, "GET", path, e.Reader, nil), 403, "admin")
	wantError(t, e.Do(t, "GET", path, "", nil), 401)
	wantError(t, e.Do(t, "GET", "/v1/streams/shop-a/xyz/records", e.Admin, nil), 400, "epoch")
	wantError(t, e.Do(t, "GET", "/v1/streams/shop.a/"+a.Stream.Epoch.String()+"/records", e.Admin, nil), 400, "edge")
	wantError(t, e.Do(t, "GET", path+"?from=0", e.Admin, nil), 400, "parameter from")
	wantError(t, e.Do(t, "GET", path+"?limit=1001", e.Admin, nil), 400, "parameter limit")
	wantError(t, e.Do(t, "GET", path+"?after=3", e.Admin, nil), 400, "parameter after")
	wantError(t, e.Do(t, "GET", "/v1/streams/shop-a/"+fmt.Sprintf("%032x", 1)+"/records", e.Admin, nil), 404, "not found")
}
