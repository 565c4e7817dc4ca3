package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/projection"
	"github.com/outpost-edge/outpost/cloud/projection/projectiontest"
	"github.com/outpost-edge/outpost/internal/keyfile"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/pos"
	"github.com/outpost-edge/outpost/protocol/proof"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
	"github.com/outpost-edge/outpost/simulator/traffic"
)

// chromiumPath finds the browser for the back-office tests: $OUTPOST_CHROMIUM,
// or chromium (Debian's package) on PATH or at /usr/bin/chromium.
func chromiumPath() string {
	if p := os.Getenv("OUTPOST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	return ""
}

// startBrowser starts one headless Chromium for the test, with a fresh
// profile and no network of its own (the flags keep it from calling home,
// which stalls it on a closed network). It is stopped when t ends.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		const msg = "no Chromium found (set OUTPOST_CHROMIUM, or install it: apt-get install -y chromium)"
		if os.Getenv("OUTPOST_REQUIRE_BROWSER") != "" {
			t.Fatal("OUTPOST_REQUIRE_BROWSER is set but " + msg)
		}
		t.Skip("browser tests skipped: " + msg)
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.Flag("metrics-recording-only", true), chromedp.Flag("no-pings", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first Do starts the browser, tied to the context it is given:
	// so ctx itself, not one with a deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium %s: %v", path, err)
	}
	return ctx
}

// user is one person at the browser: a browser context of their own
// (cookies included), so an admin and a reader do not share a session.
type user struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string // where screenshots go
}

func newUser(t *testing.T, browserCtx context.Context, base string) *user {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	u := &user{t: t, ctx: ctx, base: base, shot: t.ArtifactDir()}
	// The first Do opens the tab, tied to the context it is given: so ctx
	// itself, not one with a deadline that ends when the call does.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	return u
}

// do runs actions with a generous guard against a hang.
func (u *user) do(actions ...chromedp.Action[chromedp.Void]) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		u.t.Fatalf("browser: %v; %s", err, u.where())
	}
}

// where says where the browser is, for a failure message.
func (u *user) where() string {
	ctx, cancel := context.WithTimeout(u.ctx, 10*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "location unknown: " + err.Error()
	}
	html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	return "at " + loc + ":\n" + html
}

// navigate runs actions that load a new page (a click on a link, a form
// sent) and waits for that page's answer.
func (u *user) navigate(actions ...chromedp.Action[chromedp.Void]) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, 60*time.Second)
	defer cancel()
	if _, err := chromedp.RunResponse(ctx, actions...); err != nil {
		u.t.Fatalf("browser: %v; %s", err, u.where())
	}
}

func run[T any](u *user, a chromedp.Action[T]) T {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		u.t.Fatalf("browser: %v; %s", err, u.where())
	}
	return v
}

func (u *user) text(sel string) string {
	u.t.Helper()
	u.do(chromedp.WaitVisible(chromedp.CSS(sel)))
	return run(u, chromedp.Text(chromedp.CSS(sel)))
}

func (u *user) count(sel string) int {
	u.t.Helper()
	return run(u, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
}

// screenshot saves the page as name.png in the test's artifact dir and,
// when $OUTPOST_SCREENSHOTS names a directory (make screenshots), there.
func (u *user) screenshot(name string) {
	u.t.Helper()
	png := run(u, chromedp.FullScreenshot(100))
	for _, dir := range []string{u.shot, os.Getenv("OUTPOST_SCREENSHOTS")} {
		if dir == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			u.t.Fatal(err)
		}
	}
}

func (u *user) login(token string) {
	u.t.Helper()
	u.do(chromedp.Navigate(u.base+"/fleet"), chromedp.WaitVisible(chromedp.ID("token")))
	u.do(chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("edges")))
}

// download clicks the link sel and returns the file the browser saved.
func (u *user) download(sel string) []byte {
	u.t.Helper()
	dir := u.t.TempDir()
	bc := chromedp.FromContext(u.ctx).BrowserContextID
	if _, err := chromedp.CallBrowser(u.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, BrowserContextID: bc, DownloadPath: dir, EventsEnabled: ptrTo(true)}); err != nil {
		u.t.Fatal(err)
	}
	progress := chromedp.BrowserEvents(u.ctx, browser.DownloadProgress)
	u.do(chromedp.Click(chromedp.CSS(sel)))
	ctx, cancel := context.WithTimeout(u.ctx, 60*time.Second)
	defer cancel()
	for ev, err := range progress {
		if err != nil || ctx.Err() != nil {
			u.t.Fatalf("download %s: %v %v", sel, err, ctx.Err())
		}
		switch ev.State {
		case browser.DownloadProgressStateCompleted:
			b, err := os.ReadFile(filepath.Join(dir, ev.GUID))
			if err != nil {
				u.t.Fatal(err)
			}
			return b
		case browser.DownloadProgressStateCanceled:
			u.t.Fatalf("download %s canceled", sel)
		}
	}
	u.t.Fatalf("download %s: no progress", sel)
	return nil
}

func ptrTo[T any](v T) *T { return &v }

// cloudPub is the public key of serve's cloud key, for proofs.
func cloudPub(t *testing.T, m *Main) ed25519.PublicKey {
	t.Helper()
	k, err := keyfile.Load(filepath.Join(m.Config.DataDir, "cloud.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k.Public().(ed25519.PublicKey)
}

// apiGet GETs path from the API with a bearer token into v.
func apiGet(t *testing.T, base, token, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// TestBackOfficeInBrowser drives the back office in headless Chromium
// against a real `cloud serve` (private Postgres, embedded MQTT broker)
// that an edge sent real segments of the simulator's till traffic to:
// sign-in, every page, the admin actions, a CSV download checked against
// the API, the figures checked against the till's own tally, a reader who
// is offered no admin action, and the pages with scripts off.
func TestBackOfficeInBrowser(t *testing.T) {
	bctx := startBrowser(t)
	url, conn, stream := mustEdgeDB(t, 0)
	ctx := context.Background()
	led := ledger.New(conn, ledger.Options{})
	admin, err := led.CreateAPIToken(ctx, "ops", "admin", "")
	if err != nil {
		t.Fatal(err)
	}
	reader, err := led.CreateAPIToken(ctx, "finance", "reader", "")
	if err != nil {
		t.Fatal(err)
	}
	spare := protocoltest.NewSigner(t)
	if _, err := led.AddEdge(ctx, "shop-2", spare.Public()); err != nil {
		t.Fatal(err)
	}

	// Tenants: acme owns store S-001, served by shop-1; bravo owns B-001,
	// served by shop-2. Their readers see only their own.
	for _, tn := range []struct{ tenant, store, edge string }{{"acme", "S-001", "shop-1"}, {"bravo", "B-001", "shop-2"}} {
		if _, err := led.AddTenant(ctx, tn.tenant, "Tenant "+tn.tenant); err != nil {
			t.Fatal(err)
		}
		if _, err := led.AddStore(ctx, ledger.Store{Tenant: tn.tenant, ID: tn.store, Name: "Store " + tn.store, TimeZone: "UTC", Currency: "EUR"}); err != nil {
			t.Fatal(err)
		}
		if err := led.SetEdgeTenant(ctx, tn.edge, tn.tenant, tn.store); err != nil {
			t.Fatal(err)
		}
	}
	acmeReader, err := led.CreateAPIToken(ctx, "acme-finance", "reader", "acme")
	if err != nil {
		t.Fatal(err)
	}
	bravoReader, err := led.CreateAPIToken(ctx, "bravo-finance", "reader", "bravo")
	if err != nil {
		t.Fatal(err)
	}

	// Traffic: shop-1's till T1 is the simulator's (simulator/traffic,
	// seed 13): 40 events of today (the business day the till declares),
	// mostly sales with several lines, discounts, tax and mixed tenders,
	// and some voids, returns and stock received, sent in 4 segments over
	// MQTT; then one segment signed with a key the cloud does not know
	// (quarantined). The figures checked below are the till's own tally
	// of what it sent (its Z report), not numbers written here.
	// The pages' "today" is pinned to the test's start: the day stays the
	// one the tills declare even when the test runs across midnight.
	t0 := time.Now().UTC()
	webClock = func() time.Time { return t0 }
	t.Cleanup(func() { webClock = time.Now })
	today := t0.Format(ledger.DayLayout)
	till := traffic.New(traffic.Options{Seed: 13, Store: "S-001", Device: "T1", Kind: traffic.Till, Currency: "EUR",
		TaxIncluded: true, BusinessDay: today})
	var sent []protocol.Event // what the till sent, in order
	send := func(ev protocol.Event) {
		stream.AddEvent("till-1", ev)
		sent = append(sent, ev)
	}
	addEvents := func(n int) {
		for range n {
			send(till.Next(time.Now().Add(-time.Duration(60-len(sent)) * time.Minute)))
		}
	}
	// addSales sends the till's next events up to and including its n-th
	// next sale.
	addSales := func(n int) {
		for want := till.Totals().Sales.Count + int64(n); till.Totals().Sales.Count < want; {
			addEvents(1)
		}
	}
	addEvents(40)
	firstSale := sent[0]
	if firstSale.Type != pos.TypeSaleCompleted || till.Totals().Sales.Count < 20 {
		t.Fatalf("seed 13 no longer starts with a sale (%s) or makes mostly sales (%d of 40): choose another seed",
			firstSale.Type, till.Totals().Sales.Count)
	}
	z40 := till.Totals()
	t.Logf("till T1 (seed 13) sent %d events: %d sales, %d returns, %d voids, net %s EUR", len(sent), z40.Sales.Count,
		z40.Returns.Count, z40.Voids.Count, pos.FormatMinor(z40.Net, "EUR"))
	var firstTxn pos.Transaction
	if err := pos.Decode(firstSale.Type, firstSale.Body, &firstTxn); err != nil {
		t.Fatal(err)
	}
	// txnsShown is the Today page's transaction count and collected total
	// for S-001 as the till tallied them: sales, and sales − returns −
	// voids with tax (its Z's net).
	txnsShown := func() (string, string) {
		z := till.Totals()
		return fmt.Sprint(z.Sales.Count), pos.FormatMinor(z.Net, "EUR") + " EUR"
	}
	logs := &syncBuffer{}
	serveCtx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	m, _ := startServe(t, serveCtx, logs, "--database-url", url, "--log-level", "warn")
	base := "http://" + m.APIAddr()
	edge := mustMQTTEdge(t, m, stream)
	for first := uint64(1); first <= 40; first += 10 {
		edge.publish(first, first+9)
	}
	edge.waitReceipted(40, logs)
	// (Committed through the ledger rather than published: the MQTT
	// edge's receipt handler takes a nack for a failure.)
	stream.AddN(t, 2)
	bad := stream.SignedBy(protocoltest.NewSigner(t)).Segment(41, 42)
	if _, err := led.Commit(ctx, []ledger.Input{{TopicEdge: "shop-1", Segment: bad}}); err != nil {
		t.Fatal(err)
	}
	poll.For(t, 60*time.Second, func() error {
		var q struct {
			Entries []json.RawMessage `json:"entries"`
		}
		apiGet(t, base, admin, "/v1/quarantine", &q)
		if len(q.Entries) != 1 {
			return fmt.Errorf("%d quarantine entries, want 1", len(q.Entries))
		}
		return nil
	})

	var pg ledger.Page
	apiGet(t, base, admin, "/v1/events?limit=1000", &pg)
	if len(pg.Events) < 2 {
		t.Fatalf("%d events committed", len(pg.Events))
	}
	first, second := pg.Events[0].Pos, pg.Events[1].Pos // positions are the ledger's, not 1, 2, ...

	t.Run("admin", func(t *testing.T) {
		a := newUser(t, bctx, base)
		a.login(admin)
		if who := a.text("#who"); who != "ops (admin)" {
			t.Fatalf("signed in as %q", who)
		}
		if got := a.text(`tr.edge[data-edge="shop-1"] td.lag`); !strings.HasPrefix(got, "0") {
			t.Errorf("shop-1 lag %q, want 0", got)
		}
		if n := a.count("form.admin"); n == 0 {
			t.Fatal("admin is offered no action")
		}
		a.screenshot("fleet")

		// Add a key to shop-2, then revoke the edge (confirm answered yes).
		next := protocoltest.NewSigner(t)
		a.do(chromedp.SendKeys(chromedp.CSS(`tr.edge[data-edge="shop-2"] form.rotate input[name=public_key]`), hex.EncodeToString(next.Public())))
		a.navigate(chromedp.Submit(chromedp.CSS(`tr.edge[data-edge="shop-2"] form.rotate`)))
		if got := a.text("#done"); !strings.Contains(got, "new key "+string(next.KeyID())) {
			t.Fatalf("after adding a key: %q", got)
		}
		// app.js asks confirm() first: a "no" sends nothing, a "yes" does.
		revoke := chromedp.CSS(`tr.edge[data-edge="shop-2"] button.revoke-edge`)
		a.do(chromedp.Evaluate[chromedp.Void](`window.confirm = m => { window.asked = m; return false; }`), chromedp.Click(revoke))
		if asked := run(a, chromedp.Evaluate[string](`window.asked || ""`)); !strings.Contains(asked, "Revoke edge shop-2?") {
			t.Fatalf("confirm asked %q", asked)
		}
		if e, _ := led.GetEdge(ctx, "shop-2"); e.Status != ledger.StatusActive {
			t.Fatal("a revoke answered no was sent")
		}
		a.do(chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`))
		a.navigate(chromedp.Click(revoke))
		if got := a.text("#done"); !strings.Contains(got, "shop-2 is revoked") {
			t.Fatalf("after revoking: %q", got)
		}
		if e, _ := led.GetEdge(ctx, "shop-2"); e.Status != ledger.StatusRevoked || len(e.Keys) != 2 {
			t.Fatalf("shop-2 is %s with %d keys, want revoked with 2", e.Status, len(e.Keys))
		}

		// Events: the list, its CSV against the API, then one event.
		a.do(chromedp.Click(chromedp.CSS(`nav a[href="/events"]`)), chromedp.WaitVisible(chromedp.ID("events")))
		a.screenshot("events")
		rows, err := csv.NewReader(bytes.NewReader(a.download("#events-csv"))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(pg.Events)+1 || len(pg.Events) != 40 {
			t.Fatalf("CSV has %d rows, the API %d events (want 40)", len(rows)-1, len(pg.Events))
		}
		for i, ev := range pg.Events {
			r := rows[i+1]
			if r[0] != fmt.Sprint(ev.Pos) || r[4] != fmt.Sprint(ev.Seq) || r[6] != ev.ID || r[11] != ev.Hash.String() || r[12] != string(ev.Body) {
				t.Fatalf("CSV row %d %q differs from the API's event %+v", i+1, r, ev)
			}
		}
		a.do(chromedp.Click(chromedp.CSS(`#events a.pos`)), chromedp.WaitVisible(chromedp.ID("record")))
		if got := a.text("#cp-check"); !strings.Contains(got, "signature verifies") {
			t.Fatalf("checkpoint check: %q", got)
		}
		if got := a.text("#body"); !strings.Contains(got, fmt.Sprintf(`"txn": %q`, firstTxn.Txn)) {
			t.Fatalf("body: %q", got)
		}
		a.screenshot("event")
		// The proof link downloads the API's proof file as this session;
		// it verifies offline against the cloud's key, and not once a byte
		// is changed.
		file := a.download("#proof")
		cloudKey, err := keyfile.Load(filepath.Join(m.Config.DataDir, "cloud.key"))
		if err != nil {
			t.Fatal(err)
		}
		opts := proof.Options{CloudKey: cloudKey.Public().(ed25519.PublicKey)}
		res, err := proof.Verify(file, opts)
		if err != nil {
			t.Fatalf("downloaded proof (%d bytes) does not verify: %v", len(file), err)
		}
		if res.Record.Seq != pg.Events[0].Seq || res.Hash != pg.Events[0].Hash {
			t.Fatalf("proof is of seq %d %s, want the event's %d %s", res.Record.Seq, res.Hash, pg.Events[0].Seq, pg.Events[0].Hash)
		}
		file[len(file)/2] ^= 1
		if _, err := proof.Verify(file, opts); err == nil {
			t.Fatal("a proof with a byte changed verifies")
		}

		// Quarantine: the refused segment and why.
		a.do(chromedp.Click(chromedp.CSS(`nav a[href="/quarantine"]`)), chromedp.WaitVisible(chromedp.ID("quarantine")))
		if got := a.text("#quarantine td.reason"); !strings.Contains(strings.ToLower(got), "key") {
			t.Errorf("quarantine reason %q does not name the key", got)
		}
		a.screenshot("quarantine")
		a.do(chromedp.Click(chromedp.CSS(`#quarantine td.num a`)), chromedp.WaitVisible(chromedp.ID("entry")))

		a.do(chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
		a.screenshot("login")
		a.do(chromedp.Navigate(base+"/fleet"), chromedp.WaitVisible(chromedp.ID("token")))
	})

	t.Run("reports and live tail", func(t *testing.T) {
		a := newUser(t, bctx, base)
		a.login(admin)
		a.navigate(chromedp.Navigate(base + "/today"))
		store := `#stores tr.store[data-store="S-001"]`
		wantTxns, wantCollected := txnsShown()
		if got := a.text(store + " td.txns"); got != wantTxns {
			t.Fatalf("Today shows %q transactions for S-001, want %s", got, wantTxns)
		}
		if got := a.text(store + " td.net + td"); got != wantCollected {
			t.Fatalf("Today shows %q collected for S-001, want the till's %s", got, wantCollected)
		}
		a.screenshot("today")
		// Its CSV, downloaded, is the API's CSV of the same report.
		got := a.download("#sales-csv")
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/reports/sales?from="+today+"&to="+today+"&limit=1000", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Accept", "text/csv")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, want) || !bytes.Contains(got, []byte("S-001")) {
			t.Fatalf("Today's CSV:\n%s\nthe API's:\n%s", got, want)
		}
		// The page follows the live tail: the till's next events through 3
		// more sales (and the two non-POS records quarantined earlier, now
		// sent signed) change its figures with no reload (the marker set
		// here survives).
		a.do(chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`))
		poll.For(t, 30*time.Second, func() error {
			if s := run(a, chromedp.Evaluate[string](`(document.getElementById("live-state") || {}).textContent || ""`)); s != "live" {
				return fmt.Errorf("live state %q", s)
			}
			return nil
		})
		addSales(3)
		edge.publish(41, stream.Last())
		wantTxns, _ = txnsShown()
		poll.For(t, 60*time.Second, func() error {
			got := run(a, chromedp.Evaluate[string](`(document.querySelector(`+fmt.Sprintf("%q", store+" td.txns")+`) || {}).textContent || ""`))
			if strings.TrimSpace(got) != wantTxns {
				return fmt.Errorf("Today shows %q transactions for S-001, want %s", got, wantTxns)
			}
			return nil
		})
		if !run(a, chromedp.Evaluate[bool](`window.notReloaded === true`)) {
			t.Fatal("the Today page reloaded instead of updating in place")
		}

		// Store and day, drilled from Today, then a till's Z or the events.
		a.navigate(chromedp.Click(chromedp.CSS(store + " td a")))
		a.do(chromedp.WaitVisible(chromedp.ID("summary")))
		if n := a.count("#hours svg rect.bar"); n == 0 {
			t.Error("no by-hour bars")
		}
		// Net sales by day: 14 bars up to today's (the current one, with
		// the API's net of the day), 13 empty days before it, each bar a
		// link to its day.
		var days ledger.Report[ledger.SalesRow]
		apiGet(t, base, admin, "/v1/reports/sales?store=S-001&from="+t0.AddDate(0, 0, -13).Format(ledger.DayLayout)+"&to="+today, &days)
		if len(days.Rows) != 1 {
			t.Fatalf("the API's sales of S-001's last 14 days: %+v", days.Rows)
		}
		if n, empty := a.count("#days svg a rect.bar"), a.count(`#days svg a[href^="/stores/S-001/"] rect.bar[width="0"]`); n != 14 || empty != 13 {
			t.Errorf("by-day chart: %d linked bars (%d empty), want 14 (13)", n, empty)
		}
		if got := run(a, chromedp.Evaluate[string](`(document.querySelector(`+fmt.Sprintf("%q", `#days svg a[href="/stores/S-001/`+today+`"] rect.bar.current title`)+`) || {}).textContent || ""`)); !strings.HasSuffix(got, ": "+days.Rows[0].NetSales.Decimal+" EUR, "+wantTxns+" sales") {
			t.Errorf("today's by-day bar says %q, want the API's net %s EUR of %s sales", got, days.Rows[0].NetSales.Decimal, wantTxns)
		}
		a.screenshot("store-day")

		// The till closes: the simulator's Z report of all it sent makes
		// the day match. Click through till → its Z event → the proof.
		z, ok := till.Close(time.Now())
		if !ok {
			t.Fatal("the till made no Z report")
		}
		send(z)
		from := stream.Last()
		edge.publish(from, from)
		poll.For(t, 60*time.Second, func() error {
			a.navigate(chromedp.Reload())
			if n := a.count(`#tills tr.till.match a.z`); n != 1 {
				return fmt.Errorf("%d matching tills with a Z link", n)
			}
			return nil
		})
		a.navigate(chromedp.Click(chromedp.CSS(`#tills tr.till.match a.z`)))
		a.do(chromedp.WaitVisible(chromedp.ID("record")))
		if got := a.text("#record"); !strings.Contains(got, pos.TypeTillClosed) {
			t.Fatalf("the Z link shows %q", got)
		}
		if res, err := proof.Verify(a.download("#proof"), proof.Options{CloudKey: cloudPub(t, m)}); err != nil || res.Record.Type != pos.TypeTillClosed {
			t.Fatalf("the Z's proof: %v", err)
		}
		// A retry of sale 1 under a new event id (a duplicate), and till T2
		// closing with a Z of a sale the ledger never got (pending).
		ghost := projectiontest.Txn(today, "T2-0001", "EUR", false, 0, "cash", 0, projectiontest.Line("sku-0", 1000, 500, 0, 0))
		ghost.Store, ghost.Terminal = "S-001", "T2"
		z2 := projectiontest.ZOf(t, pos.TillKey{Store: "S-001", Terminal: "T2", BusinessDay: today, Currency: "EUR"},
			projection.Record{Record: protocol.Record{Type: pos.TypeSaleCompleted, Body: projectiontest.MustBody(t, ghost)}})
		stream.AddEvent("till-1", protocol.Event{ID: "sale-1-retry", Type: pos.TypeSaleCompleted, TS: time.Now(), Body: firstSale.Body})
		stream.AddEvent("till-2", protocol.Event{ID: "z2-" + today, Type: pos.TypeTillClosed, TS: time.Now(), Body: projectiontest.MustBody(t, z2)})
		edge.publish(from+1, stream.Last())
		poll.For(t, 60*time.Second, func() error {
			a.navigate(chromedp.Navigate(base + "/reconciliation"))
			if n := a.count(`#recon tr.till.pending`) + a.count(`#duplicates a`); n < 2 {
				return fmt.Errorf("reconciliation shows %d of the pending till and the duplicate", n)
			}
			return nil
		})
		if got := a.text("#duplicates"); !strings.Contains(got, "sale-1-retry") {
			t.Fatalf("duplicates: %q", got)
		}
		a.screenshot("reconciliation")
		a.navigate(chromedp.Navigate(base + "/inventory?store=S-001"))
		a.do(chromedp.WaitVisible(chromedp.ID("inventory")))
		a.screenshot("inventory")
	})

	t.Run("tenants", func(t *testing.T) {
		for _, c := range []struct {
			token, mine, theirs, theirEdge string
		}{{acmeReader, "S-001", "B-001", "shop-2"}, {bravoReader, "B-001", "S-001", "shop-1"}} {
			u := newUser(t, bctx, base)
			u.login(c.token)
			for _, path := range []string{"/today", "/fleet", "/events", "/reconciliation", "/inventory", "/quarantine"} {
				u.navigate(chromedp.Navigate(base + path))
				html := run(u, chromedp.Evaluate[string](`document.body.innerText`))
				if strings.Contains(html, c.theirs) || strings.Contains(html, c.theirEdge) {
					t.Errorf("%s sees %s or %s on %s:\n%s", c.mine, c.theirs, c.theirEdge, path, html)
				}
				if path == "/today" && !strings.Contains(html, c.mine) {
					t.Errorf("%s does not see its own store on /today:\n%s", c.mine, html)
				}
			}
		}
	})

	t.Run("reader", func(t *testing.T) {
		r := newUser(t, bctx, base)
		r.login(reader)
		if n := r.count("form.admin") + r.count("button.danger") + r.count("form.rotate"); n != 0 {
			t.Fatalf("reader is offered %d admin controls", n)
		}
		if got := r.text(`tr.edge[data-edge="shop-1"] td:first-child`); got != "shop-1" {
			t.Fatalf("reader sees %q", got)
		}
		r.do(chromedp.Navigate(fmt.Sprintf("%s/events/%d", base, first)), chromedp.WaitVisible(chromedp.ID("record")))
		if n := r.count("#raw") + r.count("#checkpoint"); n != 0 {
			t.Fatal("reader is shown the admin-only stored bytes")
		}
	})

	t.Run("no scripts", func(t *testing.T) {
		n := newUser(t, bctx, base)
		if _, err := chromedp.Call(n.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
			t.Fatal(err)
		}
		n.login(admin)
		n.do(chromedp.Navigate(fmt.Sprintf("%s/events/%d", base, second)), chromedp.WaitVisible(chromedp.ID("cp-check")))
		if got := n.text("#cp-check"); !strings.Contains(got, "signature verifies") {
			t.Fatalf("checkpoint check with scripts off: %q", got)
		}
	})
}
