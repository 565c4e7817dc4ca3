package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/cloud/rollout"
	"github.com/outpost-edge/outpost/firmware"
	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// mustRollout makes a rollout of release 1.1.0 to shop-1 and shop-2
// (stages 1,100%), has the controller assign its first stage, and has
// that edge roll back with a reason (through a ledger that folds the OTA
// state, as cloud serve's does). It returns the rollout's id.
func (e *env) mustRollout(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	pool := e.Ledger.DB()
	led := ledger.New(pool, ledger.Options{Projections: []ledger.Projection{rollout.Projection{}}})
	streams := map[string]*protocoltest.Stream{}
	for _, id := range []string{"shop-1", "shop-2"} {
		s := protocoltest.NewStream(t, id, protocoltest.NewSigner(t))
		if _, err := led.AddEdge(ctx, id, s.Signer.Public()); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `UPDATE edges SET agent = 'outpost-edge/1.0.0 (linux/amd64)' WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		streams[id] = s
	}
	id, err := rollout.Create(ctx, pool, rollout.Spec{ID: "r-web", Release: "1.1.0", To: "all", Stages: "1,100%", MaxFailures: "1"})
	if err != nil {
		t.Fatal(err)
	}
	c := &rollout.Controller{DB: pool, Commands: rollout.CommandQueue{Signer: e.Cloud}, Targets: func(context.Context) (map[string]firmware.Custom, error) {
		return map[string]firmware.Custom{"edge-1.1.0-linux-amd64": {Version: "1.1.0", Release: 11, Channel: "stable", Arch: "linux/amd64"}}, nil
	}}
	if err := c.Step(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := rollout.Get(ctx, pool, id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var first rollout.EdgeStatus
	for _, ed := range st.Edges {
		if ed.Stage == 0 {
			first = ed
		}
	}
	s := streams[first.Edge]
	for i, ev := range []struct{ kind, reason string }{
		{"command_accepted", fmt.Sprintf("command %d", first.Seq)}, {"installed", ""}, {"rolled_back", "health <b>failed</b>: intake did not listen"},
	} {
		body, _ := protocol.NewBody(map[string]any{"version": "1.1.0", "release": 11, "target": first.Target, "reason": ev.reason})
		s.AddEvent(protocol.EdgeDevice, protocol.Event{ID: fmt.Sprintf("ota-%d", i), Type: "ota." + ev.kind, TS: time.Now().UTC().Truncate(time.Millisecond), Body: body})
	}
	out, err := led.Commit(ctx, []ledger.Input{{TopicEdge: first.Edge, Segment: s.Segment(1, s.Last())}})
	if err != nil || out[0].Kind != ledger.KindCommitted {
		t.Fatalf("commit: %v %+v", err, out)
	}
	return id
}

// TestFleetRollouts: the Fleet page's releases and rollouts section shows
// each stage's counts and the rolled back edges' reasons (escaped), offers
// an admin pause, resume and abort (CSRF-checked forms, as every form),
// and offers a reader none.
func TestFleetRollouts(t *testing.T) {
	e := mustEnv(t, 0)
	id := e.mustRollout(t)
	rb := e.browser(t)
	fp := rb.login(e.Reader)
	for _, want := range []string{`data-rollout="r-web"`, `Release 1.1.0`, `<span class="state">running</span>`,
		`<td class="num rolled-back">1</td>`, `<td class="num assigned">1</td>`, "health &lt;b&gt;failed&lt;/b&gt;: intake did not listen",
		"failures 1, it pauses above 1"} {
		if !strings.Contains(fp.Body, want) {
			t.Fatalf("fleet page lacks %q:\n%s", want, fp.Body)
		}
	}
	if strings.Contains(fp.Body, "pause-rollout") || strings.Contains(fp.Body, "<b>failed") {
		t.Fatalf("reader page offers a pause or shows raw HTML:\n%s", fp.Body)
	}
	if p := rb.post("/fleet/rollouts/"+id+"/pause", url.Values{"csrf": {csrf(t, fp)}}, ""); p.Status != http.StatusForbidden || !strings.Contains(p.Body, "needs role") {
		t.Fatalf("reader pause: %d\n%s", p.Status, p.Body)
	}

	b := e.browser(t)
	fp = b.login(e.Admin)
	if !strings.Contains(fp.Body, `action="/fleet/rollouts/r-web/pause"`) || !strings.Contains(fp.Body, `action="/fleet/rollouts/r-web/abort"`) ||
		strings.Contains(fp.Body, `action="/fleet/rollouts/r-web/resume"`) {
		t.Fatalf("admin page of a running rollout:\n%s", fp.Body)
	}
	if p := b.post("/fleet/rollouts/"+id+"/pause", url.Values{}, ""); p.Status != http.StatusForbidden || !strings.Contains(p.Body, "security token") {
		t.Fatalf("pause without csrf: %d\n%s", p.Status, p.Body)
	}
	tok := csrf(t, fp)
	for _, step := range []struct{ action, state, button string }{
		{"pause", "paused", "resume"}, {"resume", "running", "pause"}, {"abort", "aborted", ""},
	} {
		p := b.post("/fleet/rollouts/"+id+"/"+step.action, url.Values{"csrf": {tok}}, e.Server.URL)
		if p.Status != http.StatusSeeOther {
			t.Fatalf("%s: %d\n%s", step.action, p.Status, p.Body)
		}
		page := b.get(p.Header.Get("Location"))
		if !strings.Contains(page.Body, "Rollout r-web is ") || !strings.Contains(page.Body, `<span class="state">`+step.state+`</span>`) {
			t.Fatalf("after %s:\n%s", step.action, page.Body)
		}
		if step.button != "" && !strings.Contains(page.Body, `action="/fleet/rollouts/r-web/`+step.button+`"`) {
			t.Fatalf("after %s no %s button:\n%s", step.action, step.button, page.Body)
		}
		if step.button == "" && strings.Contains(page.Body, `action="/fleet/rollouts/r-web/`) {
			t.Fatalf("an aborted rollout offers actions:\n%s", page.Body)
		}
	}
	if p := b.post("/fleet/rollouts/"+id+"/explode", url.Values{"csrf": {tok}}, ""); p.Status != http.StatusNotFound {
		t.Fatalf("unknown action: %d\n%s", p.Status, p.Body)
	}
	if p := b.post("/fleet/rollouts/"+id+"/resume", url.Values{"csrf": {tok}}, ""); p.Status != http.StatusConflict || !strings.Contains(p.Body, "finished") {
		t.Fatalf("resume of an aborted rollout: %d\n%s", p.Status, p.Body)
	}
}
