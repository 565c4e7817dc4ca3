package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/internal/poll"
)

// TestRolloutsInBrowser: the Fleet page's releases and rollouts section in
// headless Chromium against a real `cloud serve` whose controller has
// assigned a rollout: its stage counts, then Pause, Resume (confirmed)
// and Abort (confirmed) as an admin clicks them.
func TestRolloutsInBrowser(t *testing.T) {
	bctx := startBrowser(t)
	url, conn, _ := mustEdgeDB(t, 0)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `UPDATE edges SET agent = 'outpost-edge/1.0.0 (linux/amd64)' WHERE id = 'shop-1'`); err != nil {
		t.Fatal(err)
	}
	admin, err := ledger.New(conn, ledger.Options{}).CreateAPIToken(ctx, "ops", "admin", "")
	if err != nil {
		t.Fatal(err)
	}
	repo, online := publishTestRelease(t, t.TempDir(), "2.0.0")
	serveCtx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	m, _ := startServe(t, serveCtx, &syncBuffer{}, "--database-url", url, "--log-level", "warn", "--release-dir", repo,
		"--release-online-keys", online, "--rollout-tick", "100ms")
	code, out, errs := cloudRun(t, "rollouts", "create", "--id", "r-browser", "--release", "2.0.0", "--to", "all", "--stages", "100%", "--database-url", url)
	if code != 0 {
		t.Fatalf("rollouts create: %s%s", out, errs)
	}
	poll.For(t, time.Minute, func() error {
		s, err := rollout.Get(ctx, conn, "r-browser", time.Now())
		if err != nil || len(s.Edges) != 1 || s.Edges[0].State != rollout.EdgeAssigned {
			return fmt.Errorf("rollout: %+v (%v)", s, err)
		}
		return nil
	})

	a := newUser(t, bctx, "http://"+m.APIAddr())
	a.login(admin)
	ro := `div.rollout[data-rollout="r-browser"]`
	if got := a.text(ro + " .state"); got != "running" {
		t.Fatalf("state %q", got)
	}
	if got := a.text(ro + " td.assigned"); got != "1" {
		t.Fatalf("assigned %q", got)
	}
	a.navigate(chromedp.Click(chromedp.CSS(ro + " button.pause-rollout")))
	if got := a.text("#done"); !strings.Contains(got, "r-browser is paused: paused by token ops") {
		t.Fatalf("after pause: %q", got)
	}
	// Resume and abort ask first: a "no" sends nothing.
	a.do(chromedp.Evaluate[chromedp.Void](`window.confirm = m => { window.asked = m; return false; }`),
		chromedp.Click(chromedp.CSS(ro+" button.resume-rollout")))
	if asked := run(a, chromedp.Evaluate[string](`window.asked || ""`)); !strings.Contains(asked, "Resume rollout r-browser?") {
		t.Fatalf("confirm asked %q", asked)
	}
	if s, _ := rollout.Get(ctx, conn, "r-browser", time.Now()); s.State != rollout.StatePaused {
		t.Fatalf("a resume answered no was sent: %s", s.State)
	}
	a.do(chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`))
	a.navigate(chromedp.Click(chromedp.CSS(ro + " button.resume-rollout")))
	if got := a.text(ro + " .state"); got != "running" {
		t.Fatalf("after resume: %q", got)
	}
	a.do(chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`))
	a.navigate(chromedp.Click(chromedp.CSS(ro + " button.abort-rollout")))
	if got := a.text(ro + " .state"); got != "aborted" {
		t.Fatalf("after abort: %q", got)
	}
	if n := a.count(ro + " button"); n != 0 {
		t.Fatalf("an aborted rollout offers %d buttons", n)
	}
}
