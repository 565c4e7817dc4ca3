package web_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/api"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/ledger/ledgertest"
	"github.com/outpost-edge/outpost/cloud/web"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/proof"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is the API and the pages on one server, on a fresh database.
type env struct {
	Ledger *ledger.Ledger
	Cloud  *protocol.Signer
	Server *httptest.Server
	Admin  string
	Reader string
}

func mustEnv(t *testing.T, pageSize int) *env {
	t.Helper()
	ctx := context.Background()
	pool := ledgertest.Pool(t, pgtest.New(t))
	if err := ledger.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	led := ledger.New(pool, ledger.Options{Logger: log})
	cloud := protocoltest.NewSigner(t)
	a := api.New(api.Options{Ledger: led, Signer: cloud, Logger: log})
	e := &env{Ledger: led, Cloud: cloud, Server: httptest.NewServer(web.New(web.Options{API: a, Ledger: led, Logger: log, PageSize: pageSize}))}
	t.Cleanup(e.Server.Close)
	var err error
	if e.Admin, err = led.CreateAPIToken(ctx, "root", api.RoleAdmin, ""); err != nil {
		t.Fatal(err)
	}
	if e.Reader, err = led.CreateAPIToken(ctx, "viewer", api.RoleReader, ""); err != nil {
		t.Fatal(err)
	}
	return e
}

// mustStream registers edge and commits n records of the given types
// (cycled) from its stream.
func (e *env) mustStream(t *testing.T, edge string, n int, mk func(seq uint64) protocol.Event) *protocoltest.Stream {
	t.Helper()
	s := protocoltest.NewStream(t, edge, protocoltest.NewSigner(t))
	if _, err := e.Ledger.AddEdge(context.Background(), edge, s.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		s.AddEvent("till-1", mk(s.Last()+1))
	}
	if n > 0 {
		out, err := e.Ledger.Commit(context.Background(), []ledger.Input{{TopicEdge: edge, Segment: s.Segment(1, uint64(n))}})
		if err != nil || out[0].Kind != ledger.KindCommitted {
			t.Fatalf("commit: %v %+v", err, out)
		}
	}
	return s
}

func sale(seq uint64) protocol.Event {
	body, _ := protocol.NewBody(map[string]any{"n": seq})
	return protocol.Event{ID: fmt.Sprintf("ev-%d", seq), Type: "sale.completed", TS: protocoltest.T0.Add(time.Duration(seq) * time.Millisecond), Body: body}
}

// browser is a cookie-keeping client that does not follow redirects, so
// tests see each answer.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (e *env) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: e.Server.URL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type page struct {
	Status int
	Header http.Header
	Body   string
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return page{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
}

func (b *browser) get(path string) page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.base+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values, origin string) page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	return b.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf returns the CSRF token of the first form on p.
func csrf(t *testing.T, p page) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no csrf field on the page:\n%s", p.Body)
	}
	return m[1]
}

// login signs b in with token and returns the fleet page.
func (b *browser) login(token string) page {
	b.t.Helper()
	lp := b.get("/login")
	p := b.post("/login", url.Values{"csrf": {csrf(b.t, lp)}, "token": {token}, "next": {"/fleet"}}, b.base)
	if p.Status != http.StatusSeeOther || p.Header.Get("Location") != "/fleet" {
		b.t.Fatalf("login: %d %v\n%s", p.Status, p.Header, p.Body)
	}
	return b.get("/fleet")
}

func TestLoginCookieIsHttpOnlyStrict(t *testing.T) {
	e := mustEnv(t, 0)
	e.mustStream(t, "shop-1", 3, sale)
	b := e.browser(t)

	if p := b.get("/fleet"); p.Status != http.StatusSeeOther || !strings.HasPrefix(p.Header.Get("Location"), "/login?next=%2Ffleet") {
		t.Fatalf("signed out /fleet: %d %s", p.Status, p.Header.Get("Location"))
	}
	lp := b.get("/login")
	p := b.post("/login", url.Values{"csrf": {csrf(t, lp)}, "token": {e.Admin}}, "")
	if p.Status != http.StatusSeeOther {
		t.Fatalf("login: %d %s", p.Status, p.Body)
	}
	var session *http.Cookie
	for _, c := range (&http.Response{Header: p.Header}).Cookies() {
		if c.Name == web.SessionCookie {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/" || session.Secure {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over plain HTTP", session)
	}
	// Behind a TLS-terminating proxy that says so, the cookie is Secure.
	pb := e.browser(t)
	lp2 := pb.get("/login")
	req, _ := http.NewRequest(http.MethodPost, e.Server.URL+"/login",
		strings.NewReader(url.Values{"csrf": {csrf(t, lp2)}, "token": {e.Admin}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-Proto", "https")
	if p := pb.do(req); !strings.Contains(strings.Join(p.Header.Values("Set-Cookie"), "\n"), "; Secure") {
		t.Fatalf("behind TLS: %v", p.Header.Values("Set-Cookie"))
	}
	fp := b.get("/fleet")
	if fp.Status != 200 || !strings.Contains(fp.Body, `data-edge="shop-1"`) || !strings.Contains(fp.Body, "root (admin)") {
		t.Fatalf("fleet: %d\n%s", fp.Status, fp.Body)
	}
	if strings.Contains(fp.Body, e.Admin) {
		t.Fatal("the page shows the API token")
	}
	if csp := fp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("CSP %q", csp)
	}

	// Signing out ends the session: the cookie is cleared.
	out := b.post("/logout", url.Values{"csrf": {csrf(t, fp)}}, "")
	if out.Status != http.StatusSeeOther || !strings.HasPrefix(out.Header.Get("Location"), "/login") {
		t.Fatalf("logout: %d %s", out.Status, out.Body)
	}
	if p := b.get("/fleet"); p.Status != http.StatusSeeOther {
		t.Fatalf("after logout /fleet: %d", p.Status)
	}
}

func TestLoginRefusals(t *testing.T) {
	e := mustEnv(t, 0)
	revoked, err := e.Ledger.CreateAPIToken(context.Background(), "gone", api.RoleReader, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Ledger.RevokeAPIToken(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		form   func(csrf string) url.Values
		status int
		says   string
	}{
		{"unknown token", func(c string) url.Values { return url.Values{"csrf": {c}, "token": {"opat_nope"}} }, 401, "unknown or revoked"},
		{"no token", func(c string) url.Values { return url.Values{"csrf": {c}} }, 400, "Enter an API token"},
		{"no csrf", func(string) url.Values { return url.Values{"token": {e.Admin}} }, 403, "security token"},
		{"wrong csrf", func(string) url.Values { return url.Values{"csrf": {"forged"}, "token": {e.Admin}} }, 403, "security token"},
		{"revoked token", func(c string) url.Values { return url.Values{"csrf": {c}, "token": {revoked}} }, 401, "unknown or revoked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := e.browser(t)
			p := b.post("/login", tc.form(csrf(t, b.get("/login"))), "")
			if p.Status != tc.status || !strings.Contains(p.Body, tc.says) {
				t.Fatalf("status %d, want %d saying %q:\n%s", p.Status, tc.status, tc.says, p.Body)
			}
			if strings.Contains(strings.Join(p.Header.Values("Set-Cookie"), ";"), web.SessionCookie+"=o") {
				t.Fatal("a refused login set a session cookie")
			}
		})
	}
}

func TestFormsNeedCSRFAndOwnOrigin(t *testing.T) {
	e := mustEnv(t, 0)
	e.mustStream(t, "shop-1", 1, sale)
	b := e.browser(t)
	fp := b.login(e.Admin)
	tok := csrf(t, fp)

	for _, tc := range []struct {
		name   string
		form   url.Values
		origin string
		says   string
	}{
		{"no csrf", url.Values{}, "", "security token"},
		{"forged csrf", url.Values{"csrf": {"x" + tok}}, "", "security token"},
		{"other site", url.Values{"csrf": {tok}}, "https://evil.example", "another site"},
	} {
		p := b.post("/fleet/shop-1/revoke", tc.form, tc.origin)
		if p.Status != http.StatusForbidden || !strings.Contains(p.Body, tc.says) {
			t.Fatalf("%s: status %d, want 403 saying %q:\n%s", tc.name, p.Status, tc.says, p.Body)
		}
	}
	if ed, _ := e.Ledger.GetEdge(context.Background(), "shop-1"); ed.Status != ledger.StatusActive {
		t.Fatalf("edge is %s after refused forms", ed.Status)
	}
	p := b.post("/fleet/shop-1/revoke", url.Values{"csrf": {tok}}, e.Server.URL)
	if p.Status != http.StatusSeeOther {
		t.Fatalf("revoke: %d\n%s", p.Status, p.Body)
	}
	if ed, _ := e.Ledger.GetEdge(context.Background(), "shop-1"); ed.Status != ledger.StatusRevoked {
		t.Fatalf("edge is %s after revoke", ed.Status)
	}
	if done := b.get(p.Header.Get("Location")); !strings.Contains(done.Body, "Edge shop-1 is revoked") {
		t.Fatalf("no confirmation:\n%s", done.Body)
	}
}

func TestReaderIsOfferedNoAdminAction(t *testing.T) {
	e := mustEnv(t, 0)
	s := e.mustStream(t, "shop-1", 2, sale)
	b := e.browser(t)
	fp := b.login(e.Reader)
	if !strings.Contains(fp.Body, `data-edge="shop-1"`) {
		t.Fatalf("reader does not see the edge:\n%s", fp.Body)
	}
	if strings.Contains(fp.Body, `class="admin`) || strings.Contains(fp.Body, "inline admin") || strings.Contains(fp.Body, "Revoke edge") {
		t.Fatalf("reader is offered admin actions:\n%s", fp.Body)
	}
	// A forged action with the reader's own valid CSRF token: the API
	// refuses it, with its reason.
	p := b.post("/fleet/shop-1/revoke", url.Values{"csrf": {csrf(t, fp)}}, "")
	if p.Status != http.StatusForbidden || !strings.Contains(p.Body, "needs role") {
		t.Fatalf("reader revoke: %d\n%s", p.Status, p.Body)
	}
	if ed, _ := e.Ledger.GetEdge(context.Background(), "shop-1"); ed.Status != ledger.StatusActive {
		t.Fatalf("edge is %s after a reader's revoke", ed.Status)
	}
	// The event page: decoded record, but no stored bytes or checkpoint.
	ev := b.get("/events/1")
	if ev.Status != 200 || !strings.Contains(ev.Body, "ev-1") || strings.Contains(ev.Body, `id="raw"`) || !strings.Contains(ev.Body, "shown to admins") {
		t.Fatalf("reader event page: %d\n%s", ev.Status, ev.Body)
	}
	_ = s
}

func TestEventPageChecksItsCheckpoint(t *testing.T) {
	e := mustEnv(t, 0)
	s := e.mustStream(t, "shop-1", 5, sale)
	b := e.browser(t)
	b.login(e.Admin)
	p := b.get("/events/2")
	if p.Status != 200 {
		t.Fatalf("event: %d\n%s", p.Status, p.Body)
	}
	for _, want := range []string{"ev-2", `id="raw"`, "signature verifies against the edge", "4 records from this one",
		string(s.Signer.KeyID()), fmt.Sprintf("/proof/shop-1/%s/2", s.Stream.Epoch)} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("event page does not show %q", want)
		}
	}
	// The proof link downloads the API's proof as the session's token.
	pp := b.get(fmt.Sprintf("/proof/shop-1/%s/2", s.Stream.Epoch))
	if pp.Status != 200 || !strings.HasPrefix(pp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("proof: %d %v\n%s", pp.Status, pp.Header, pp.Body)
	}
	if res, err := proof.Verify([]byte(pp.Body), proof.Options{CloudKey: e.Cloud.Public()}); err != nil || res.Record.Seq != 2 {
		t.Fatalf("downloaded proof: %v", err)
	}
	if p := b.get(fmt.Sprintf("/proof/shop-1/%s/x", s.Stream.Epoch)); p.Status != 400 {
		t.Fatalf("bad seq: %d", p.Status)
	}
	// The check is made, not assumed: a stored record altered between the
	// event and its checkpoint breaks it, and the page says where.
	if _, err := e.Ledger.DB().Exec(context.Background(),
		`UPDATE ledger SET raw = overlay(raw placing '\x00'::bytea from length(raw) - 2 for 1) WHERE seq = 4`); err != nil {
		t.Fatal(err)
	}
	if p := b.get("/events/2"); !strings.Contains(p.Body, "chain from this event to the signed head does not hold") ||
		!strings.Contains(p.Body, "seq 4") || strings.Contains(p.Body, "signature verifies against") {
		t.Fatalf("altered chain not reported:\n%s", p.Body)
	}
	// A missing event is a 404 with a reason; a bad pos a 400.
	if p := b.get("/events/99"); p.Status != 404 || !strings.Contains(p.Body, "No ledger event at position 99") {
		t.Fatalf("missing event: %d\n%s", p.Status, p.Body)
	}
	if p := b.get("/events/x"); p.Status != 400 {
		t.Fatalf("bad pos: %d", p.Status)
	}
}

// TestHostileStringsAreEscapedAndDefused: what a device chose (event ids,
// bodies) is shown as text, and a CSV cell that a spreadsheet would run as
// a formula is defused.
func TestHostileStringsAreEscapedAndDefused(t *testing.T) {
	e := mustEnv(t, 0)
	e.mustStream(t, "shop-1", 1, func(seq uint64) protocol.Event {
		body, _ := protocol.NewBody(map[string]any{"note": "<img src=x onerror=alert(1)>"})
		return protocol.Event{ID: "=HYPERLINK(\"http://x\")", Type: "sale.completed", TS: protocoltest.T0, Body: body}
	})
	b := e.browser(t)
	b.login(e.Admin)
	p := b.get("/events/1")
	if strings.Contains(p.Body, "<img src=x") || !strings.Contains(p.Body, "&lt;img src=x") {
		t.Fatalf("body not escaped:\n%s", p.Body)
	}
	c := b.get("/events.csv")
	rows, err := csv.NewReader(strings.NewReader(c.Body)).ReadAll()
	if err != nil || len(rows) != 2 {
		t.Fatalf("csv: %v %q", err, c.Body)
	}
	if id := rows[1][6]; id != `'=HYPERLINK("http://x")` {
		t.Fatalf("csv id cell %q: want it defused with a leading apostrophe", id)
	}
}

// TestListsPaginateAndCSVMatchesAPI: the events list pages with the API's
// cursor, and the CSV holds the same rows as GET /v1/events.
func TestListsPaginateAndCSVMatchesAPI(t *testing.T) {
	e := mustEnv(t, 2)
	e.mustStream(t, "shop-1", 5, sale)
	e.mustStream(t, "shop-2", 1, sale)
	e.mustStream(t, "shop-3", 0, sale)
	b := e.browser(t)
	fp := b.login(e.Reader)

	// Fleet: 3 edges, 2 a page.
	if !strings.Contains(fp.Body, `data-edge="shop-1"`) || strings.Contains(fp.Body, `data-edge="shop-3"`) || !strings.Contains(fp.Body, `href="/fleet?after=shop-2"`) {
		t.Fatalf("fleet page 1:\n%s", fp.Body)
	}
	if p := b.get("/fleet?after=shop-2"); !strings.Contains(p.Body, `data-edge="shop-3"`) || strings.Contains(p.Body, `id="next"`) {
		t.Fatalf("fleet page 2:\n%s", p.Body)
	}
	// Events: 6, 2 a page, following the next links.
	var seen []string
	next := "/events"
	posRE := regexp.MustCompile(`class="pos" href="/events/(\d+)"`)
	nextRE := regexp.MustCompile(`id="next" href="([^"]+)"`)
	for i := 0; next != "" && i < 10; i++ {
		p := b.get(strings.ReplaceAll(next, "&amp;", "&"))
		for _, m := range posRE.FindAllStringSubmatch(p.Body, -1) {
			seen = append(seen, m[1])
		}
		next = ""
		if m := nextRE.FindStringSubmatch(p.Body); m != nil {
			next = m[1]
		}
	}
	if strings.Join(seen, ",") != "1,2,3,4,5,6" {
		t.Fatalf("pages showed %v", seen)
	}
	if p := b.get("/events?edge=shop-1&bogus=1"); p.Status != 400 || !strings.Contains(p.Body, "bogus") {
		t.Fatalf("unknown parameter: %d", p.Status)
	}

	c := b.get("/events.csv?edge=shop-1")
	rows, err := csv.NewReader(strings.NewReader(c.Body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.Server.URL+"/v1/events?edge=shop-1", nil)
	req.Header.Set("Authorization", "Bearer "+e.Reader)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pg ledger.Page
	if err := json.NewDecoder(resp.Body).Decode(&pg); err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(pg.Events)+1 || len(pg.Events) != 5 {
		t.Fatalf("csv has %d rows, API %d events", len(rows)-1, len(pg.Events))
	}
	for i, ev := range pg.Events {
		r := rows[i+1]
		if r[0] != fmt.Sprint(ev.Pos) || r[2] != ev.Edge || r[4] != fmt.Sprint(ev.Seq) || r[6] != ev.ID || r[11] != ev.Hash.String() {
			t.Errorf("csv row %d %v differs from the API's %+v", i, r, ev)
		}
	}
}

// TestOtherPathsGoToTheAPI: the pages own their paths only.
func TestOtherPathsGoToTheAPI(t *testing.T) {
	e := mustEnv(t, 0)
	for path, want := range map[string]int{"/v1/streams": 401, "/nope": 404, "/v1/cloud-key": 200} {
		resp, err := http.Get(e.Server.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s: %d %s, want %d JSON from the API", path, resp.StatusCode, resp.Header.Get("Content-Type"), want)
		}
	}
}

// TestFleetShowsAgentFromHello: the software an edge named in its hello is
// on the Fleet page (escaped) and in the edges CSV, as in GET /v1/edges.
func TestFleetShowsAgentFromHello(t *testing.T) {
	e := mustEnv(t, 0)
	s := e.mustStream(t, "shop-1", 1, sale)
	e.mustStream(t, "shop-2", 0, sale)
	const agent = "outpost-edge/0.7.1 (linux/arm64) <script>"
	if _, err := e.Ledger.NoteHello(context.Background(), protocol.Hello{V: 2, Edge: "shop-1", Epoch: s.Stream.Epoch, Seq: 1, Agent: agent}); err != nil {
		t.Fatal(err)
	}
	b := e.browser(t)
	fp := b.login(e.Reader)
	if !strings.Contains(fp.Body, "<code>outpost-edge/0.7.1 (linux/arm64) &lt;script&gt;</code>") || strings.Contains(fp.Body, "arm64) <script>") {
		t.Fatalf("fleet page does not show the agent, escaped:\n%s", fp.Body)
	}
	if !strings.Contains(fp.Body, "unknown (no hello named it)") {
		t.Fatalf("fleet page does not say shop-2's software is unknown:\n%s", fp.Body)
	}
	rows, err := csv.NewReader(strings.NewReader(b.get("/fleet/edges.csv").Body)).ReadAll()
	if err != nil || len(rows) != 3 || rows[0][6] != "agent" || rows[1][6] != agent || rows[2][6] != "" {
		t.Fatalf("edges csv: %v %q", err, rows)
	}
	req, _ := http.NewRequest("GET", e.Server.URL+"/v1/edges/shop-1", nil)
	req.Header.Set("Authorization", "Bearer "+e.Reader)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Agent   string     `json:"agent"`
		AgentAt *time.Time `json:"agent_at"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || got.Agent != agent || got.AgentAt == nil {
		t.Fatalf("GET /v1/edges/shop-1: %+v %v, want agent %q", got, err, agent)
	}
}

// TestFleetLagSparkline: once the scheduled audit has sampled lag twice,
// Fleet draws each current stream's history, served by GET /v1/streams as
// lag_history; before that it says there is none yet.
func TestFleetLagSparkline(t *testing.T) {
	e := mustEnv(t, 0)
	e.mustStream(t, "shop-1", 2, sale)
	b := e.browser(t)
	if fp := b.login(e.Reader); !strings.Contains(fp.Body, "no history yet") || strings.Contains(fp.Body, `class="sparkline"`) {
		t.Fatalf("fleet before any sample:\n%s", fp.Body)
	}
	for range 2 {
		if _, err := e.Ledger.SampleLag(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if fp := b.get("/fleet"); !strings.Contains(fp.Body, `<svg class="sparkline"`) || !strings.Contains(fp.Body, "lag over the last 2 samples") {
		t.Fatalf("fleet after two samples has no sparkline:\n%s", fp.Body)
	}
	req, _ := http.NewRequest("GET", e.Server.URL+"/v1/streams", nil)
	req.Header.Set("Authorization", "Bearer "+e.Reader)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Streams []struct {
			LagHistory []struct {
				At  time.Time `json:"at"`
				Lag uint64    `json:"lag"`
			} `json:"lag_history"`
		} `json:"streams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || len(got.Streams) != 1 || len(got.Streams[0].LagHistory) != 2 {
		t.Fatalf("GET /v1/streams: %+v %v, want one stream with 2 samples", got, err)
	}
}
