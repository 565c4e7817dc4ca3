package api_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/api"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

type enrollAnswer struct {
	Edge           string `json:"edge"`
	KID            string `json:"kid"`
	CloudPublicKey string `json:"cloud_public_key"`
	CloudKID       string `json:"cloud_kid"`
}

type tokenAnswer struct {
	Token     string    `json:"token"`
	Edge      string    `json:"edge"`
	ExpiresAt time.Time `json:"expires_at"`
}

func TestEnroll(t *testing.T) {
	e := MustEnv(t, envOptions{})
	var tok tokenAnswer
	e.MustDo(t, http.StatusCreated, "POST", "/v1/tokens", e.Admin, map[string]any{"edge": "shop-1", "ttl": "1h"}, &tok)
	if !strings.HasPrefix(tok.Token, ledger.EnrollTokenPrefix) || tok.Edge != "shop-1" ||
		!tok.ExpiresAt.Equal(e.Clock.Now().Add(time.Hour)) {
		t.Fatalf("token answer %+v", tok)
	}

	edgeKey := MustSigner(t)
	var got enrollAnswer
	e.MustDo(t, http.StatusOK, "POST", "/v1/enroll", "", map[string]any{"token": tok.Token, "public_key": hexKey(edgeKey.Public())}, &got)
	want := enrollAnswer{Edge: "shop-1", KID: string(edgeKey.KeyID()),
		CloudPublicKey: hex.EncodeToString(e.Cloud.Public()), CloudKID: string(e.Cloud.KeyID())}
	if got != want {
		t.Fatalf("enroll answered %+v, want %+v", got, want)
	}
	keys, err := e.Ledger.EdgeKeys(context.Background(), "shop-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.PublicKey(edgeKey.KeyID()); err != nil {
		t.Fatalf("enrolled key is not active: %v", err)
	}

	t.Run("used token", func(t *testing.T) {
		r := e.Do(t, "POST", "/v1/enroll", "", map[string]any{"token": tok.Token, "public_key": hexKey(MustSigner(t).Public())})
		wantError(t, r, http.StatusConflict, "already used", "cloud tokens create --edge")
	})
	t.Run("expired token", func(t *testing.T) {
		var tok tokenAnswer
		e.MustDo(t, http.StatusCreated, "POST", "/v1/tokens", e.Admin, map[string]any{"edge": "shop-2", "ttl": "30m"}, &tok)
		e.Clock.Advance(31 * time.Minute)
		r := e.Do(t, "POST", "/v1/enroll", "", map[string]any{"token": tok.Token, "public_key": hexKey(MustSigner(t).Public())})
		wantError(t, r, http.StatusGone, "expired", "cloud tokens create --edge")
	})
	t.Run("unknown token", func(t *testing.T) {
		r := e.Do(t, "POST", "/v1/enroll", "", map[string]any{"token": "oe_nope", "public_key": hexKey(MustSigner(t).Public())})
		wantError(t, r, http.StatusUnauthorized, "not known", "cloud tokens create --edge")
	})
	t.Run("base64 key", func(t *testing.T) {
		var tok tokenAnswer
		e.MustDo(t, http.StatusCreated, "POST", "/v1/tokens", e.Admin, map[string]any{"edge": "shop-3"}, &tok)
		if !tok.ExpiresAt.Equal(e.Clock.Now().Add(24 * time.Hour)) {
			t.Errorf("default ttl: expires %v, want a day after %v", tok.ExpiresAt, e.Clock.Now())
		}
		k := MustSigner(t)
		var got enrollAnswer
		e.MustDo(t, http.StatusOK, "POST", "/v1/enroll", "",
			map[string]any{"token": tok.Token, "public_key": base64.StdEncoding.EncodeToString(k.Public())}, &got)
		if got.Edge != "shop-3" || got.KID != string(k.KeyID()) {
			t.Fatalf("enroll answered %+v", got)
		}
	})
	t.Run("key in use", func(t *testing.T) {
		var tok tokenAnswer
		e.MustDo(t, http.StatusCreated, "POST", "/v1/tokens", e.Admin, map[string]any{"edge": "shop-4"}, &tok)
		r := e.Do(t, "POST", "/v1/enroll", "", map[string]any{"token": tok.Token, "public_key": hexKey(edgeKey.Public())})
		wantError(t, r, http.StatusConflict, "key already registered")
	})
	t.Run("bad requests", func(t *testing.T) {
		for name, tc := range map[string]struct {
			body string
			want []string
		}{
			"no key":        {`{"token":"oe_x"}`, []string{"public_key is required"}},
			"short key":     {`{"token":"oe_x","public_key":"abcd"}`, []string{"public_key", "32-byte"}},
			"no token":      {`{"public_key":"` + hexKey(edgeKey.Public()) + `"}`, []string{"token is required"}},
			"unknown field": {`{"token":"oe_x","public_key":"00","edge":"x"}`, []string{`unknown field "edge"`}},
			"not json":      {`token=oe_x`, []string{"not valid JSON"}},
			"empty":         {``, []string{"empty"}},
			"two objects":   {`{"token":"a"} {}`, []string{"one JSON object"}},
			"wrong type":    {`{"token":1}`, []string{`"token"`, "string"}},
		} {
			t.Run(name, func(t *testing.T) {
				wantError(t, e.Do(t, "POST", "/v1/enroll", "", tc.body), http.StatusBadRequest, tc.want...)
			})
		}
	})
	t.Run("body too large", func(t *testing.T) {
		body := `{"token":"` + strings.Repeat("x", 70<<10) + `"}`
		wantError(t, e.Do(t, "POST", "/v1/enroll", "", body), http.StatusRequestEntityTooLarge, "larger than")
	})

	// Neither the enrollment tokens nor the API tokens reach the log.
	logs := e.Log.String()
	for _, secret := range []string{tok.Token, e.Admin, ledger.EnrollTokenPrefix, ledger.APITokenPrefix} {
		if strings.Contains(logs, secret) {
			t.Errorf("log holds a secret (%.6s...):\n%s", secret, logs)
		}
	}
	if !strings.Contains(logs, `"token":"root"`) {
		t.Errorf("access log does not name the API token:\n%s", logs)
	}
}

func TestAuth(t *testing.T) {
	e := MustEnv(t, envOptions{})
	ctx := context.Background()
	revoked, err := e.Ledger.CreateAPIToken(ctx, "gone", "admin", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Ledger.RevokeAPIToken(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	tenant, err := e.Ledger.CreateAPIToken(ctx, "acme", "admin", "acme")
	if err != nil {
		t.Fatal(err)
	}
	odd, err := e.Ledger.CreateAPIToken(ctx, "odd", "auditor", "")
	if err != nil {
		t.Fatal(err)
	}
	newEdge := func() map[string]any {
		return map[string]any{"id": "e-" + hex.EncodeToString(MustSigner(t).Public()[:4]), "public_key": hexKey(MustSigner(t).Public())}
	}

	for _, tc := range []struct {
		name         string
		method, path string
		header       string // Authorization
		body         any
		status       int
		want         string
	}{
		{"no token", "GET", "/v1/streams", "", nil, 401, "missing bearer token"},
		{"not bearer", "GET", "/v1/streams", "Basic " + e.Admin, nil, 401, `"Bearer <token>"`},
		{"empty bearer", "GET", "/v1/streams", "Bearer ", nil, 401, `"Bearer <token>"`},
		{"unknown token", "GET", "/v1/streams", "Bearer oa_nope", nil, 401, "unknown or revoked"},
		{"revoked token", "GET", "/v1/edges", "Bearer " + revoked, nil, 401, "unknown or revoked"},
		{"write without token", "POST", "/v1/edges", "", newEdge(), 401, "cloud tokens create --admin"},
		{"reader writes", "POST", "/v1/edges", "Bearer " + e.Reader, newEdge(), 403, `needs role "admin"`},
		{"reader makes tokens", "POST", "/v1/api-tokens", "Bearer " + e.Reader, map[string]any{"name": "x", "role": "admin"}, 403, `needs role "admin"`},
		{"tenant token reads", "GET", "/v1/edges", "Bearer " + tenant, nil, 200, ""},
		{"tenant token makes tenants", "POST", "/v1/tenants", "Bearer " + tenant, map[string]any{"id": "x", "name": "X"}, 403, "global admin"},
		{"unknown role", "GET", "/v1/edges", "Bearer " + odd, nil, 403, `"auditor"`},
		{"reader reads", "GET", "/v1/streams", "Bearer " + e.Reader, nil, 200, ""},
		{"reader reads events", "GET", "/v1/events", "bearer " + e.Reader, nil, 200, ""},
		{"admin reads", "GET", "/v1/edges", "Bearer " + e.Admin, nil, 200, ""},
		{"admin writes", "POST", "/v1/edges", "Bearer " + e.Admin, newEdge(), 201, ""},
		{"cloud key is public", "GET", "/v1/cloud-key", "", nil, 200, ""},
		{"healthz is public", "GET", "/healthz", "", nil, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.DoAuth(t, tc.method, tc.path, tc.header, tc.body)
			if tc.want == "" {
				if r.Status != tc.status {
					t.Fatalf("status %d, want %d: %s", r.Status, tc.status, r.Body)
				}
				return
			}
			wantError(t, r, tc.status, tc.want)
			if tc.status == 401 && !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer: %v", r.Header)
			}
		})
	}
}

type eventsPage struct {
	Events []struct {
		Pos         int64     `json:"pos"`
		CommittedAt time.Time `json:"committed_at"`
		Edge        string    `json:"edge"`
		Epoch       string    `json:"epoch"`
		Seq         uint64    `json:"seq"`
		Type        string    `json:"type"`
		EdgeTime    time.Time `json:"edge_time"`
		Hash        string    `json:"hash"`
		Body        struct {
			N uint64 `json:"n"`
		} `json:"body"`
	} `json:"events"`
	Next int64 `json:"next"`
}

func TestEvents(t *testing.T) {
	e := MustEnv(t, envOptions{})
	base := time.Date(2026, 2, 10, 9, 0, 0, 0, time.UTC)
	a, b := e.MustStream(t, "shop-a"), e.MustStream(t, "shop-b")
	types := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "sale.completed"
			if i%4 == 3 {
				out[i] = "telemetry.temperature"
			}
		}
		return out
	}
	appendTypes(t, a, base, types(20)...)
	appendTypes(t, b, base, types(12)...)
	// Interleave the two edges' commits, so that a filter has to skip.
	e.MustCommit(t, a, 1, 6)
	e.MustCommit(t, b, 1, 5)
	e.MustCommit(t, a, 7, 14)
	e.MustCommit(t, b, 6, 12)
	e.MustCommit(t, a, 15, 20)

	// pages follows next through every page of query and returns the seqs.
	pages := func(t *testing.T, query url.Values) (seqs []uint64, n int) {
		t.Helper()
		var after int64
		for {
			q := url.Values{}
			for k, v := range query {
				q[k] = v
			}
			if after != 0 {
				q.Set("after", fmt.Sprint(after))
			}
			var p eventsPage
			e.MustDo(t, 200, "GET", "/v1/events?"+q.Encode(), e.Reader, nil, &p)
			n++
			if len(p.Events) == 0 {
				if p.Next != after {
					t.Fatalf("empty page moved the cursor from %d to %d", after, p.Next)
				}
				return seqs, n
			}
			for _, ev := range p.Events {
				if ev.Pos <= after {
					t.Fatalf("pos %d not after cursor %d", ev.Pos, after)
				}
				if f := query.Get("edge"); f != "" && ev.Edge != f {
					t.Fatalf("edge filter %s let through %s", f, ev.Edge)
				}
				if f := query.Get("type"); f != "" && ev.Type != f {
					t.Fatalf("type filter %s let through %s", f, ev.Type)
				}
				if ev.Body.N != ev.Seq || ev.Hash == "" || ev.Epoch == "" || ev.CommittedAt.IsZero() {
					t.Fatalf("event not decoded: %+v", ev)
				}
				after = ev.Pos
				seqs = append(seqs, ev.Seq)
			}
			if p.Next != after {
				t.Fatalf("next %d, want the last pos %d", p.Next, after)
			}
			if n > 100 {
				t.Fatal("pagination does not end")
			}
		}
	}
	seqRange := func(from, to uint64, skipTelemetry bool) []uint64 {
		var out []uint64
		for s := from; s <= to; s++ {
			if skipTelemetry && (s-1)%4 == 3 {
				continue
			}
			out = append(out, s)
		}
		return out
	}

	t.Run("all", func(t *testing.T) {
		seqs, n := pages(t, url.Values{"limit": {"7"}})
		if len(seqs) != 32 || n != 6 {
			t.Fatalf("%d events in %d pages, want 32 in 6", len(seqs), n)
		}
	})
	t.Run("edge and type", func(t *testing.T) {
		seqs, n := pages(t, url.Values{"limit": {"4"}, "edge": {"shop-a"}, "type": {"sale.completed"}})
		if want := seqRange(1, 20, true); fmt.Sprint(seqs) != fmt.Sprint(want) || n != 5 {
			t.Fatalf("seqs %v in %d pages, want %v in 5", seqs, n, want)
		}
	})
	t.Run("time range", func(t *testing.T) {
		// Edge time of seq s is base + s ms: from is inclusive, to exclusive.
		q := url.Values{"limit": {"3"}, "edge": {"shop-b"},
			"from": {base.Add(3 * time.Millisecond).Format(time.RFC3339Nano)},
			"to":   {base.Add(9 * time.Millisecond).In(time.FixedZone("", 3600)).Format(time.RFC3339Nano)}}
		seqs, _ := pages(t, q)
		if want := seqRange(3, 8, false); fmt.Sprint(seqs) != fmt.Sprint(want) {
			t.Fatalf("seqs %v, want %v", seqs, want)
		}
	})
	t.Run("default limit", func(t *testing.T) {
		var p eventsPage
		e.MustDo(t, 200, "GET", "/v1/events", e.Reader, nil, &p)
		if len(p.Events) != 32 {
			t.Fatalf("%d events, want all 32", len(p.Events))
		}
	})

	t.Run("bad parameters", func(t *testing.T) {
		for _, tc := range []struct {
			query string
			want  []string
		}{
			{"limit=0", []string{"limit", "1 to 1000"}},
			{"limit=1001", []string{"limit", "1 to 1000"}},
			{"limit=ten", []string{"limit"}},
			{"after=-1", []string{"after", "non-negative integer"}},
			{"after=x", []string{"after"}},
			{"from=yesterday", []string{"from", "RFC 3339"}},
			{"to=2026-01-02", []string{"to", "RFC 3339"}},
			{"from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", []string{"to must be after from"}},
			{"edge=a/b", []string{"edge"}},
			{"type=Sale", []string{"type", "dotted lower case"}},
			{"edges=shop-a", []string{"edges", "not known"}},
			{"limit=1&limit=2", []string{"limit", "once"}},
		} {
			t.Run(tc.query, func(t *testing.T) {
				wantError(t, e.Do(t, "GET", "/v1/events?"+tc.query, e.Reader, nil), http.StatusBadRequest, tc.want...)
			})
		}
	})
}

type streamsAnswer struct {
	Streams []struct {
		Edge       string     `json:"edge"`
		Epoch      string     `json:"epoch"`
		HWM        uint64     `json:"hwm"`
		Head       string     `json:"head"`
		LastCommit *time.Time `json:"last_commit"`
		EdgeSeq    uint64     `json:"edge_seq"`
		Lag        uint64     `json:"lag"`
		LastSeen   time.Time  `json:"last_seen"`
		NextEpoch  *string    `json:"next_epoch"`
		PrevEpoch  *string    `json:"prev_epoch"`
		EndedAt    *time.Time `json:"ended_at"`
		EndedAtSeq *uint64    `json:"ended_at_seq"`
	} `json:"streams"`
}

func TestStreams(t *testing.T) {
	e := MustEnv(t, envOptions{})
	var empty streamsAnswer
	r := e.MustDo(t, 200, "GET", "/v1/streams", e.Reader, nil, &empty)
	if empty.Streams == nil || len(empty.Streams) != 0 {
		t.Fatalf("no streams should be [], got %s", r.Body)
	}

	base := time.Date(2026, 2, 10, 9, 0, 0, 0, time.UTC)
	a, b := e.MustStream(t, "shop-a"), e.MustStream(t, "shop-b")
	appendTypes(t, a, base, "sale.completed", "sale.completed", "sale.completed")
	appendTypes(t, b, base, "sale.completed", "sale.completed")
	e.MustCommit(t, a, 1, 3)
	e.MustCommit(t, b, 1, 2)
	// shop-a says it holds 10 records: 7 are not committed yet.
	appendTypes(t, a, base.Add(time.Minute), "sale.completed", "sale.completed", "sale.completed", "sale.completed", "sale.completed", "sale.completed", "sale.completed")
	if _, err := e.Ledger.NoteHello(context.Background(), protocol.Hello{V: 2, Edge: "shop-a", Epoch: a.Stream.Epoch, Seq: 10, Checkpoint: a.Checkpoint(10)}); err != nil {
		t.Fatal(err)
	}

	var got streamsAnswer
	e.MustDo(t, 200, "GET", "/v1/streams", e.Reader, nil, &got)
	if len(got.Streams) != 2 {
		t.Fatalf("%d streams, want 2", len(got.Streams))
	}
	sa, sb := got.Streams[0], got.Streams[1]
	if sa.Edge != "shop-a" || sa.Epoch != a.Stream.Epoch.String() || sa.HWM != 3 || sa.Head != a.Links[2].String() ||
		sa.EdgeSeq != 10 || sa.Lag != 7 || sa.LastCommit == nil || sa.LastSeen.IsZero() {
		t.Errorf("shop-a: %+v", sa)
	}
	if sb.Edge != "shop-b" || sb.HWM != 2 || sb.EdgeSeq != 0 || sb.Lag != 0 {
		t.Errorf("shop-b: %+v", sb)
	}
	if sa.EndedAt != nil || sa.EndedAtSeq != nil || sa.NextEpoch != nil || sa.PrevEpoch != nil {
		t.Errorf("a current first stream shows an end or a neighbour: %+v", sa)
	}
	wantError(t, e.Do(t, "GET", "/v1/streams?edge=shop-a", e.Reader, nil), 400, "parameter edge", "no query parameters")
}

func TestReadyz(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		e := MustEnv(t, envOptions{})
		var got struct{ Status string }
		e.MustDo(t, 200, "GET", "/readyz", "", nil, &got)
		if got.Status != "ready" {
			t.Fatalf("readyz: %+v", got)
		}
	})
	t.Run("schema behind", func(t *testing.T) {
		e := MustEnv(t, envOptions{Unmigrated: true})
		wantError(t, e.Do(t, "GET", "/readyz", "", nil), 503, "schema", "cloud migrate")
	})
	t.Run("database closed", func(t *testing.T) {
		e := MustEnv(t, envOptions{})
		if err := e.Conn.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		wantError(t, e.Do(t, "GET", "/readyz", "", nil), 503, "database unreachable")
		// The liveness check does not depend on the database.
		if r := e.Do(t, "GET", "/healthz", "", nil); r.Status != 200 || string(r.Body) != "ok\n" {
			t.Fatalf("healthz: %d %q", r.Status, r.Body)
		}
		// Nor can a token be checked: that is 503, not 401.
		wantError(t, e.Do(t, "GET", "/v1/edges", e.Admin, nil), 503, "retry later")
	})
	t.Run("no reader role", func(t *testing.T) {
		// A serving role that is not a member of the reader role cannot
		// read anything through the API: not ready, saying what to do.
		e := MustEnv(t, envOptions{})
		ctx := context.Background()
		role := fmt.Sprintf("outsider_%d", time.Now().UnixNano())
		for _, sql := range []string{`CREATE ROLE ` + role + ` LOGIN`, `GRANT SELECT ON schema_migrations TO ` + role} {
			if _, err := e.Conn.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			_, _ = e.Conn.Exec(ctx, `DROP OWNED BY `+role)
			_, _ = e.Conn.Exec(ctx, `DROP ROLE `+role)
		})
		u, err := url.Parse(e.URL)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.User(role)
		conn := MustConn(t, u.String())
		srv := httptest.NewServer(api.New(api.Options{Ledger: ledger.New(conn, ledger.Options{}), CloudPublicKey: e.Cloud.Public(),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
		defer srv.Close()
		resp, err := srv.Client().Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 503 || !strings.Contains(string(b), "GRANT outpost_reader TO") {
			t.Fatalf("readyz: %d %s", resp.StatusCode, b)
		}
		conn.Close(ctx)
	})
	t.Run("extra check", func(t *testing.T) {
		e := MustEnv(t, envOptions{Ready: func(context.Context) error { return errors.New("broker not connected") }})
		wantError(t, e.Do(t, "GET", "/readyz", "", nil), 503, "broker not connected")
	})
	t.Run("stuck part", func(t *testing.T) {
		e := MustEnv(t, envOptions{Live: func() error { return errors.New("MQTT ingest has not consumed for 2m0s") }})
		r := e.Do(t, "GET", "/healthz", "", nil)
		if r.Status != 503 || !strings.Contains(string(r.Body), "MQTT ingest has not consumed") {
			t.Fatalf("healthz with a stuck part: %d %q", r.Status, r.Body)
		}
	})
}

func TestFleet(t *testing.T) {
	e := MustEnv(t, envOptions{})
	k1, k2 := MustSigner(t), MustSigner(t)

	type edgeAnswer struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Keys   []struct {
			KID       string     `json:"kid"`
			PublicKey string     `json:"public_key"`
			Status    string     `json:"status"`
			RevokedAt *time.Time `json:"revoked_at"`
		} `json:"keys"`
		RevokedAt *time.Time `json:"revoked_at"`
	}
	var added edgeAnswer
	r := e.MustDo(t, 201, "POST", "/v1/edges", e.Admin, map[string]any{"id": "till-gw-9", "public_key": hexKey(k1.Public())}, &added)
	if added.ID != "till-gw-9" || added.Status != "active" || len(added.Keys) != 1 || added.Keys[0].KID != string(k1.KeyID()) ||
		added.Keys[0].PublicKey != hexKey(k1.Public()) || r.Header.Get("Location") != "/v1/edges/till-gw-9" {
		t.Fatalf("added %+v (Location %q)", added, r.Header.Get("Location"))
	}
	wantError(t, e.Do(t, "POST", "/v1/edges", e.Admin, map[string]any{"id": "till-gw-9", "public_key": hexKey(k2.Public())}),
		409, "already exists")
	wantError(t, e.Do(t, "POST", "/v1/edges", e.Admin, map[string]any{"id": "other", "public_key": hexKey(k1.Public())}),
		409, "key already registered")
	wantError(t, e.Do(t, "POST", "/v1/edges", e.Admin, map[string]any{"id": "bad id", "public_key": hexKey(k2.Public())}),
		400, "id")

	var rot struct{ Edge, KID string }
	e.MustDo(t, 201, "POST", "/v1/edges/till-gw-9/keys", e.Admin, map[string]any{"public_key": hexKey(k2.Public())}, &rot)
	if rot.Edge != "till-gw-9" || rot.KID != string(k2.KeyID()) {
		t.Fatalf("rotate answered %+v", rot)
	}
	var after edgeAnswer
	e.MustDo(t, 200, "POST", "/v1/edges/till-gw-9/keys/"+string(k1.KeyID())+"/revoke", e.Admin, nil, &after)
	if len(after.Keys) != 2 || after.Keys[0].Status != "revoked" || after.Keys[0].RevokedAt == nil || after.Keys[1].Status != "active" {
		t.Fatalf("after key revoke: %+v", after)
	}
	wantError(t, e.Do(t, "POST", "/v1/edges/till-gw-9/keys/0123456789abcdef/revoke", e.Admin, nil), 404, "not found")
	wantError(t, e.Do(t, "POST", "/v1/edges/till-gw-9/keys/nope/revoke", e.Admin, nil), 400, "key id")
	wantError(t, e.Do(t, "POST", "/v1/edges/till-gw-9/revoke", e.Admin, `{"force":true}`), 400, `unknown field "force"`)

	e.MustDo(t, 200, "POST", "/v1/edges/till-gw-9/revoke", e.Admin, "{}", &after)
	if after.Status != "revoked" || after.RevokedAt == nil {
		t.Fatalf("after edge revoke: %+v", after)
	}
	e.MustDo(t, 200, "POST", "/v1/edges/till-gw-9/revoke", e.Admin, nil, nil) // idempotent
	wantError(t, e.Do(t, "POST", "/v1/edges/till-gw-9/keys", e.Admin, map[string]any{"public_key": hexKey(MustSigner(t).Public())}),
		409, "revoked")
	wantError(t, e.Do(t, "POST", "/v1/tokens", e.Admin, map[string]any{"edge": "till-gw-9"}), 409, "revoked")
	wantError(t, e.Do(t, "POST", "/v1/edges/nobody/revoke", e.Admin, nil), 404, "not found")
	wantError(t, e.Do(t, "GET", "/v1/edges/nobody", e.Reader, nil), 404, "not found")

	var list struct{ Edges []edgeAnswer }
	e.MustDo(t, 200, "GET", "/v1/edges", e.Reader, nil, &list)
	if len(list.Edges) != 1 || list.Edges[0].ID != "till-gw-9" {
		t.Fatalf("edges: %+v", list)
	}
	var one edgeAnswer
	e.MustDo(t, 200, "GET", "/v1/edges/till-gw-9", e.Reader, nil, &one)
	if one.Status != "revoked" || len(one.Keys) != 2 {
		t.Fatalf("edge: %+v", one)
	}

	for _, ttl := range []string{"0s", "-1h", "forever", "721h"} {
		wantError(t, e.Do(t, "POST", "/v1/tokens", e.Admin, map[string]any{"edge": "x", "ttl": ttl}), 400, "ttl", "at most 720h")
	}
}

func TestAPITokens(t *testing.T) {
	e := MustEnv(t, envOptions{})
	var tok struct{ Token, Name, Role string }
	e.MustDo(t, 201, "POST", "/v1/api-tokens", e.Admin, map[string]any{"name": "dashboard", "role": "reader"}, &tok)
	if !strings.HasPrefix(tok.Token, ledger.APITokenPrefix) || tok.Name != "dashboard" || tok.Role != "reader" {
		t.Fatalf("token answer %+v", tok)
	}
	e.MustDo(t, 200, "GET", "/v1/streams", tok.Token, nil, nil)
	wantError(t, e.Do(t, "POST", "/v1/api-tokens", tok.Token, map[string]any{"name": "x", "role": "admin"}), 403, "admin")
	wantError(t, e.Do(t, "POST", "/v1/api-tokens", e.Admin, map[string]any{"name": "dashboard", "role": "reader"}), 409, "already exists")
	wantError(t, e.Do(t, "POST", "/v1/api-tokens", e.Admin, map[string]any{"name": "x", "role": "owner"}), 400, "role")
	wantError(t, e.Do(t, "POST", "/v1/api-tokens", e.Admin, map[string]any{"name": "", "role": "admin"}), 400, "name")
	wantError(t, e.Do(t, "POST", "/v1/api-tokens", e.Admin, map[string]any{"name": "x", "role": "admin", "tenant": "acme"}),
		404, "tenant acme: not found")

	if r := e.Do(t, "POST", "/v1/api-tokens/dashboard/revoke", e.Admin, nil); r.Status != 204 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	wantError(t, e.Do(t, "GET", "/v1/streams", tok.Token, nil), 401, "revoked")
	wantError(t, e.Do(t, "POST", "/v1/api-tokens/nobody/revoke", e.Admin, nil), 404, "not found")
}

func TestCloudKeyAndRouting(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("outpost_test_metric 1\n"))
	})
	e := MustEnv(t, envOptions{Metrics: metrics})
	var key struct {
		PublicKey string `json:"public_key"`
		KID       string `json:"kid"`
	}
	e.MustDo(t, 200, "GET", "/v1/cloud-key", "", nil, &key)
	if key.PublicKey != hexKey(e.Cloud.Public()) || key.KID != string(e.Cloud.KeyID()) {
		t.Fatalf("cloud key %+v", key)
	}
	if r := e.Do(t, "GET", "/metrics", "", nil); r.Status != 200 || !strings.Contains(string(r.Body), "outpost_test_metric") {
		t.Fatalf("metrics: %d %s", r.Status, r.Body)
	}
	wantError(t, e.Do(t, "GET", "/v1/nothing", e.Admin, nil), 404, "no endpoint", "docs/API.md")
	r := e.Do(t, "DELETE", "/v1/edges", e.Admin, nil)
	wantError(t, r, 405, "DELETE", "GET")
	if allow := r.Header.Get("Allow"); !strings.Contains(allow, "POST") {
		t.Errorf("Allow: %q", allow)
	}

	// Without a metrics handler there is no /metrics.
	e2 := MustEnv(t, envOptions{})
	wantError(t, e2.Do(t, "GET", "/metrics", "", nil), 404, "no endpoint")
}

func TestQuarantine(t *testing.T) {
	e := MustEnv(t, envOptions{})
	base := time.Date(2026, 2, 10, 9, 0, 0, 0, time.UTC)
	a := e.MustStream(t, "shop-a")
	appendTypes(t, a, base, "sale.completed", "sale.completed")
	// A segment signed by a key that is not shop-a's is quarantined.
	seg := a.Segment(1, 2)
	seg.Checkpoint = a.SignedBy(MustSigner(t)).Checkpoint(2)
	out, err := e.Ledger.Commit(context.Background(), []ledger.Input{{TopicEdge: "shop-a", Segment: seg}})
	if err != nil || out[0].Kind != ledger.KindQuarantined {
		t.Fatalf("commit: %v %+v", err, out)
	}

	var list struct {
		Entries []struct {
			ID           int64  `json:"id"`
			Edge         string `json:"edge"`
			Code         string `json:"code"`
			PayloadBytes int    `json:"payload_bytes"`
			Payload      []byte `json:"payload"`
		} `json:"entries"`
		Next int64 `json:"next"`
	}
	e.MustDo(t, 200, "GET", "/v1/quarantine?limit=10", e.Reader, nil, &list)
	if len(list.Entries) != 1 || list.Entries[0].Edge != "shop-a" || list.Entries[0].PayloadBytes == 0 ||
		list.Entries[0].Payload != nil || list.Next != list.Entries[0].ID {
		t.Fatalf("quarantine: %+v", list)
	}
	var one struct {
		ID      int64  `json:"id"`
		Payload []byte `json:"payload"`
	}
	e.MustDo(t, 200, "GET", fmt.Sprintf("/v1/quarantine/%d", list.Next), e.Reader, nil, &one)
	if one.ID != list.Next || len(one.Payload) != list.Entries[0].PayloadBytes {
		t.Fatalf("entry: id %d, %d payload bytes", one.ID, len(one.Payload))
	}
	if _, err := protocol.DecodeSegment(one.Payload); err != nil {
		t.Errorf("payload is not the segment: %v", err)
	}
	wantError(t, e.Do(t, "GET", fmt.Sprintf("/v1/quarantine/%d", list.Next+1), e.Reader, nil), 404, "not found")
	wantError(t, e.Do(t, "GET", "/v1/quarantine/zero", e.Reader, nil), 400, "positive integer")
	var rest struct {
		Entries []any `json:"entries"`
		Next    int64 `json:"next"`
	}
	e.MustDo(t, 200, "GET", fmt.Sprintf("/v1/quarantine?after=%d", list.Next), e.Reader, nil, &rest)
	if len(rest.Entries) != 0 || rest.Next != list.Next {
		t.Fatalf("past the end: %+v", rest)
	}
}
