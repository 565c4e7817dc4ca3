package api_test

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// Integer parameters are range-checked: from=9223372036854775807 used to
// overflow to a negative to and return a checkpoint below from.
func TestIntegerParameterRanges(t *testing.T) {
	e := MustEnv(t, envOptions{})
	a := e.MustStream(t, "shop-a")
	appendTypes(t, a, time.Date(2026, 2, 10, 9, 0, 0, 0, time.UTC), "sale.completed", "sale.completed", "sale.completed")
	e.MustCommit(t, a, 1, 3)
	path := fmt.Sprintf("/v1/streams/shop-a/%s/records", a.Stream.Epoch)

	var got recordsAnswer
	e.MustDo(t, 200, "GET", fmt.Sprintf("%s?from=%d", path, uint64(math.MaxInt64)), e.Admin, nil, &got)
	if got.From != math.MaxInt64 || got.To != math.MaxInt64 || len(got.Records) != 0 || got.Next != 0 {
		t.Fatalf("from=MaxInt64: from %d to %d, %d records, next %d", got.From, got.To, len(got.Records), got.Next)
	}
	for _, c := range got.Checkpoints {
		if c.Seq < got.From {
			t.Fatalf("checkpoint %d below from %d", c.Seq, got.From)
		}
	}
	e.MustDo(t, 200, "GET", fmt.Sprintf("%s?from=%d&limit=1000", path, uint64(math.MaxInt64-5)), e.Admin, nil, &got)
	if got.To != math.MaxInt64 || len(got.Checkpoints) != 0 {
		t.Fatalf("near the top: to %d, checkpoints %+v", got.To, got.Checkpoints)
	}
	for _, bad := range []string{"9223372036854775808", "18446744073709551616", "0", "-1", "1e3"} {
		wantError(t, e.Do(t, "GET", path+"?from="+bad, e.Admin, nil), 400, "parameter from", "9223372036854775807")
	}
	for _, bad := range []string{"0", "-5", "1001", "99999999999999999999"} {
		wantError(t, e.Do(t, "GET", path+"?limit="+bad, e.Admin, nil), 400, "parameter limit")
	}
	for _, q := range []string{"/v1/events?after=-1", "/v1/events?after=9223372036854775808", "/v1/quarantine?after=-1"} {
		wantError(t, e.Do(t, "GET", q, e.Reader, nil), 400, "parameter after")
	}
	wantError(t, e.Do(t, "GET", "/v1/quarantine/9223372036854775808", e.Reader, nil), 400, "quarantine id")
}

// Unknown or repeated query parameters are refused on every endpoint, GET
// and POST, as API.md says.
func TestUnknownParametersRefused(t *testing.T) {
	e := MustEnv(t, envOptions{})
	s := e.MustStream(t, "shop-a")
	k := MustSigner(t)
	for _, c := range []struct{ method, path, token string }{
		{"GET", "/v1/edges/shop-a?x=1", e.Reader},
		{"GET", "/v1/edges?x=1", e.Reader},
		{"GET", "/v1/streams?edge=shop-a", e.Reader},
		{"GET", "/v1/cloud-key?x=1", ""},
		{"GET", "/healthz?x=1", ""},
		{"GET", "/v1/quarantine/1?x=1", e.Reader},
		{"GET", "/v1/events?edges=shop-a", e.Reader},
		{"GET", fmt.Sprintf("/v1/streams/shop-a/%s/records?to=5", s.Stream.Epoch), e.Admin},
		{"POST", "/v1/edges?dry_run=1", e.Admin},
		{"POST", "/v1/edges/shop-a/keys?x=1", e.Admin},
		{"POST", "/v1/edges/shop-a/revoke?force=1", e.Admin},
		{"POST", "/v1/edges/shop-a/keys/" + string(s.Signer.KeyID()) + "/revoke?x=1", e.Admin},
		{"POST", "/v1/tokens?x=1", e.Admin},
		{"POST", "/v1/api-tokens?x=1", e.Admin},
		{"POST", "/v1/api-tokens/viewer/revoke?x=1", e.Admin},
		{"POST", "/v1/enroll?x=1", ""},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			wantError(t, e.Do(t, c.method, c.path, c.token, map[string]any{"id": "shop-b", "public_key": hexKey(k.Public())}), 400, "parameter")
		})
	}
	wantError(t, e.Do(t, "GET", "/v1/events?limit=5&limit=6", e.Reader, nil), 400, "given 2 times")
	// Nothing was done by the refused requests.
	var one struct{ Status string }
	e.MustDo(t, 200, "GET", "/v1/edges/shop-a", e.Reader, nil, &one)
	if one.Status != "active" {
		t.Fatalf("shop-a is %s after refused requests", one.Status)
	}
	wantError(t, e.Do(t, "GET", "/v1/edges/shop-b", e.Reader, nil), 404, "not found")
}
