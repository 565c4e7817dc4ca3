package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outpost-edge/outpost/cloud/api"
	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/internal/pgtest"
	"github.com/outpost-edge/outpost/internal/poll"
	"github.com/outpost-edge/outpost/protocol/protocoltest"
)

// streamEnv is an API over a connection pool, so that streams, commits and
// other requests can run at once (env's single connection cannot).
type streamEnv struct {
	Ledger *ledger.Ledger
	Server *httptest.Server
	Reader string
	Done   chan struct{} // closing it ends every stream (Options.StreamsDone)
}

func mustStreamEnv(tb testing.TB, tune func(*api.Options)) *streamEnv {
	tb.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.New(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	if err := ledger.Migrate(ctx, pool); err != nil {
		tb.Fatal(err)
	}
	e := &streamEnv{Ledger: ledger.New(pool, ledger.Options{}), Done: make(chan struct{})}
	o := api.Options{Ledger: e.Ledger, Signer: MustSigner(tb), StreamsDone: e.Done,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if tune != nil {
		tune(&o)
	}
	e.Server = httptest.NewServer(api.New(o))
	tb.Cleanup(e.Server.Close)
	if e.Reader, err = e.Ledger.CreateAPIToken(ctx, "viewer", api.RoleReader, ""); err != nil {
		tb.Fatal(err)
	}
	return e
}

// sseEvent is one event read from a stream; comments are events with
// name ":" (and their text as data).
type sseEvent struct {
	ID, Name, Data string
}

// sseClient reads one stream.
type sseClient struct {
	resp   *http.Response
	events chan sseEvent
	err    chan error
}

// openStream starts GET /v1/events/stream with query and lastID (none when
// empty) and reads its events in a goroutine.
func (e *streamEnv) openStream(tb testing.TB, query, lastID string) *sseClient {
	tb.Helper()
	req, err := http.NewRequest("GET", e.Server.URL+"/v1/events/stream"+query, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.Reader)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := e.Server.Client().Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tb.Fatalf("stream: status %d, Content-Type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	c := &sseClient{resp: resp, events: make(chan sseEvent, 1024), err: make(chan error, 1)}
	go func() {
		defer close(c.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Name != "" {
					c.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ": "):
				c.events <- sseEvent{Name: ":", Data: strings.TrimPrefix(line, ": ")}
			case strings.HasPrefix(line, "id: "):
				ev.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.Name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.Data = strings.TrimPrefix(line, "data: ")
			case strings.HasPrefix(line, "retry: "):
			default:
				c.err <- fmt.Errorf("stream line %q is not SSE", line)
				return
			}
		}
		c.err <- sc.Err()
	}()
	tb.Cleanup(func() { resp.Body.Close() })
	return c
}

// next returns the next event (not comment), failing tb when the stream
// ends or nothing comes within a generous timeout.
func (c *sseClient) next(tb testing.TB) sseEvent {
	tb.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				tb.Fatalf("stream ended: %v", <-c.err)
			}
			if ev.Name != ":" {
				return ev
			}
		case <-timeout:
			tb.Fatal("no stream event within 60s")
		}
	}
}

// seen tracks the events a reader of several streams got.
type seen struct {
	seqs    []uint64
	lastPos int64
}

// take checks an "event" event (pos after the last one) and records it.
func (s *seen) take(tb testing.TB, ev sseEvent) {
	tb.Helper()
	if ev.Name != "event" {
		tb.Fatalf("got %q event %s, want an event", ev.Name, ev.Data)
	}
	var got ledger.Event
	if err := json.Unmarshal([]byte(ev.Data), &got); err != nil {
		tb.Fatalf("event data %s: %v", ev.Data, err)
	}
	if ev.ID != strconv.FormatInt(got.Pos, 10) {
		tb.Fatalf("event id %q, pos %d", ev.ID, got.Pos)
	}
	if got.Pos <= s.lastPos {
		tb.Fatalf("pos %d after pos %d: a duplicate or out of order", got.Pos, s.lastPos)
	}
	s.lastPos = got.Pos
	s.seqs = append(s.seqs, got.Seq)
}

// check fails tb unless the seqs seen are exactly 1..n in order.
func (s *seen) check(tb testing.TB, n int) {
	tb.Helper()
	if len(s.seqs) != n {
		tb.Fatalf("saw %d events, want %d", len(s.seqs), n)
	}
	for i, q := range s.seqs {
		if q != uint64(i+1) {
			tb.Fatalf("event %d is seq %d: a gap or duplicate (%v)", i, q, s.seqs)
		}
	}
}

// TestEventStreamResume: while segments keep being committed, a stream is
// cut twice (by the client, then by the server) and resumed with
// Last-Event-ID; the reader sees every event once, in order.
func TestEventStreamResume(t *testing.T) {
	e := mustStreamEnv(t, func(o *api.Options) { o.StreamPoll = 20 * time.Millisecond; o.StreamBatch = 7 })
	const n, segSize = 240, 8
	s := protocoltest.NewStream(t, "edge-s", MustSigner(t)).AddN(t, n)
	if _, err := e.Ledger.AddEdge(context.Background(), "edge-s", s.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	commitErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for first := uint64(1); first <= n; first += segSize {
			out, err := e.Ledger.Commit(context.Background(), []ledger.Input{{TopicEdge: "edge-s", Segment: s.Segment(first, first+segSize-1)}})
			if err == nil && out[0].Kind != ledger.KindCommitted {
				err = fmt.Errorf("commit %d: %v %s", first, out[0].Kind, out[0].Reason)
			}
			if err != nil {
				commitErr <- err
				return
			}
		}
		commitErr <- nil
	}()
	t.Cleanup(wg.Wait)

	var got seen
	c := e.openStream(t, "?edge=edge-s", "")
	for len(got.seqs) < 40 {
		got.take(t, c.next(t))
	}
	c.resp.Body.Close() // the client goes away mid-stream

	c = e.openStream(t, "?edge=edge-s", strconv.FormatInt(got.lastPos, 10))
	for len(got.seqs) < 120 {
		got.take(t, c.next(t))
	}
	e.Server.CloseClientConnections() // the server drops it mid-stream

	// Resume, with after=0 in the query, which Last-Event-ID overrides.
	c = e.openStream(t, "?edge=edge-s&after=0", strconv.FormatInt(got.lastPos, 10))
	for len(got.seqs) < n {
		got.take(t, c.next(t))
	}
	if err := <-commitErr; err != nil {
		t.Fatal(err)
	}
	got.check(t, n)

	// Caught up, the stream stays open and quiet; closing StreamsDone ends
	// it with a close event saying where to resume.
	close(e.Done)
	ev := c.next(t)
	var cl struct {
		Reason      string `json:"reason"`
		LastEventID int64  `json:"last_event_id"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &cl); err != nil || ev.Name != "close" || cl.Reason != "shutdown" || cl.LastEventID != got.lastPos {
		t.Fatalf("got %q %s (%v), want close for shutdown at %d", ev.Name, ev.Data, err, got.lastPos)
	}
}

// TestEventStreamSlowClient: a client that stays behind the ledger is sent
// a "slow" close event naming where to resume, and resuming from it loses
// nothing.
func TestEventStreamSlowClient(t *testing.T) {
	// StreamMaxBehind of 1ns: the second full page in a row closes the
	// stream, so each connection carries two pages.
	e := mustStreamEnv(t, func(o *api.Options) { o.StreamBatch = 5; o.StreamMaxBehind = time.Nanosecond })
	const n = 43
	s := protocoltest.NewStream(t, "edge-slow", MustSigner(t)).AddN(t, n)
	if _, err := e.Ledger.AddEdge(context.Background(), "edge-slow", s.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	if out, err := e.Ledger.Commit(context.Background(), []ledger.Input{{TopicEdge: "edge-slow", Segment: s.Segment(1, n)}}); err != nil || out[0].Kind != ledger.KindCommitted {
		t.Fatalf("commit: %v %v", err, out)
	}
	var got seen
	closes := 0
	last := ""
	for len(got.seqs) < n {
		c := e.openStream(t, "", last)
		for {
			ev := c.next(t)
			if ev.Name == "close" {
				var cl struct {
					Reason      string `json:"reason"`
					Detail      string `json:"detail"`
					LastEventID int64  `json:"last_event_id"`
				}
				if err := json.Unmarshal([]byte(ev.Data), &cl); err != nil || cl.Reason != "slow" || cl.LastEventID != got.lastPos ||
					!strings.Contains(cl.Detail, "Last-Event-ID") {
					t.Fatalf("close %s (%v), want reason slow at %d", ev.Data, err, got.lastPos)
				}
				closes++
				last = strconv.FormatInt(cl.LastEventID, 10)
				c.resp.Body.Close()
				break
			}
			got.take(t, ev)
			if len(got.seqs) == n {
				break
			}
		}
	}
	got.check(t, n)
	if closes == 0 {
		t.Fatal("the slow client was never closed")
	}
}

func TestEventStreamHeartbeatAndRevokedToken(t *testing.T) {
	e := mustStreamEnv(t, func(o *api.Options) {
		o.StreamPoll = 10 * time.Millisecond
		o.StreamHeartbeat = 20 * time.Millisecond
		o.StreamAuthCheck = 20 * time.Millisecond
	})
	c := e.openStream(t, "?type=sale.completed", "")
	heartbeats := 0
	hang := time.After(60 * time.Second) // a hang guard, not a timing check
	for heartbeats < 2 {
		select {
		case ev, ok := <-c.events:
			if !ok {
				t.Fatalf("stream ended: %v", <-c.err)
			}
			if ev.Name == ":" && strings.HasPrefix(ev.Data, "heartbeat ") {
				heartbeats++
			}
		case <-hang:
			t.Fatalf("%d heartbeats within 60s, want 2", heartbeats)
		}
	}
	if err := e.Ledger.RevokeAPIToken(context.Background(), "viewer"); err != nil {
		t.Fatal(err)
	}
	ev := c.next(t)
	if ev.Name != "close" || !strings.Contains(ev.Data, `"reason":"unauthorized"`) {
		t.Fatalf("got %q %s, want a close for the revoked token", ev.Name, ev.Data)
	}
}

// TestEventStreamRevokedWhileEventsFlow: a token revoked while commits
// keep the stream busy (so no heartbeat is ever due) still has its stream
// ended with an "unauthorized" close event, within the auth check period.
func TestEventStreamRevokedWhileEventsFlow(t *testing.T) {
	e := mustStreamEnv(t, func(o *api.Options) {
		o.StreamPoll = 5 * time.Millisecond
		o.StreamHeartbeat = time.Hour // never due: only the auth check can end it
		o.StreamAuthCheck = 50 * time.Millisecond
		o.StreamBatch = 3
	})
	const n, segSize = 4000, 2
	s := protocoltest.NewStream(t, "edge-r", MustSigner(t)).AddN(t, n)
	if _, err := e.Ledger.AddEdge(context.Background(), "edge-r", s.Signer.Public()); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // commits go on until the test ends
		defer wg.Done()
		for first := uint64(1); first <= n; first += segSize {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := e.Ledger.Commit(context.Background(), []ledger.Input{{TopicEdge: "edge-r", Segment: s.Segment(first, first+segSize-1)}}); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })

	c := e.openStream(t, "?edge=edge-r", "")
	var got seen
	for len(got.seqs) < 10 {
		got.take(t, c.next(t))
	}
	if err := e.Ledger.RevokeAPIToken(context.Background(), "viewer"); err != nil {
		t.Fatal(err)
	}
	for { // events may still come until the next check; then the close
		ev := c.next(t)
		if ev.Name == "close" {
			if !strings.Contains(ev.Data, `"reason":"unauthorized"`) || !strings.Contains(ev.Data, "revoked") {
				t.Fatalf("close %s, want reason unauthorized naming the revoked token", ev.Data)
			}
			break
		}
		got.take(t, ev)
		if len(got.seqs) >= n {
			t.Fatalf("the stream sent all %d events after its token was revoked", n)
		}
	}
	select {
	case _, ok := <-c.events:
		if ok {
			t.Fatal("the stream went on after its close event")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the stream did not end within 60s of its close event")
	}
}

// TestEventStreamLimits: one tail more than a token's limit is a 429, one
// more than the server's is a 503, both with Retry-After and a message
// saying what to do; a closed tail frees its slot.
func TestEventStreamLimits(t *testing.T) {
	e := mustStreamEnv(t, func(o *api.Options) { o.StreamMaxPerToken = 2; o.StreamMax = 3 })
	other, err := e.Ledger.CreateAPIToken(context.Background(), "other", api.RoleReader, "")
	if err != nil {
		t.Fatal(err)
	}
	try := func(tok string) response {
		t.Helper()
		req, _ := http.NewRequest("GET", e.Server.URL+"/v1/events/stream", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := e.Server.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	}
	a1 := e.openStream(t, "", "")
	e.openStream(t, "", "")
	r := try(e.Reader)
	wantError(t, r, http.StatusTooManyRequests, `token "viewer" already has 2 live tails open`)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// The other token has its own allowance, up to the server's limit.
	o := *e
	o.Reader = other
	o.openStream(t, "", "")
	r = try(other)
	wantError(t, r, http.StatusServiceUnavailable, "already serves 3 live tails")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	// Closing one frees its slot (once the server has noticed).
	a1.resp.Body.Close()
	poll.Until(t, 60*time.Second, "the closed tail's slot to be freed", func() bool {
		req, _ := http.NewRequest("GET", e.Server.URL+"/v1/events/stream", nil)
		req.Header.Set("Authorization", "Bearer "+e.Reader)
		resp, err := e.Server.Client().Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func TestEventStreamRefusals(t *testing.T) {
	e := mustStreamEnv(t, nil)
	for _, tc := range []struct {
		name, query, lastID, want string
		status                    int
	}{
		{"bad Last-Event-ID", "", "abc", "Last-Event-ID", http.StatusBadRequest},
		{"limit is not a stream parameter", "?limit=5", "", "parameter limit", http.StatusBadRequest},
		{"bad type", "?type=Sale", "", "parameter type", http.StatusBadRequest},
		{"no token", "", "", "missing bearer token", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.Server.URL+"/v1/events/stream"+tc.query, nil)
			if tc.status != http.StatusUnauthorized {
				req.Header.Set("Authorization", "Bearer "+e.Reader)
			}
			if tc.lastID != "" {
				req.Header.Set("Last-Event-ID", tc.lastID)
			}
			resp, err := e.Server.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			r := response{Status: resp.StatusCode, Header: resp.Header, Body: b}
			wantError(t, r, tc.status, tc.want)
		})
	}
}

func TestEventStreamExpires(t *testing.T) {
	e := mustStreamEnv(t, func(o *api.Options) {
		o.StreamPoll = 10 * time.Millisecond
		o.StreamMaxDuration = 50 * time.Millisecond
	})
	ev := e.openStream(t, "?after=7", "").next(t)
	if ev.Name != "close" || !strings.Contains(ev.Data, `"reason":"expired"`) || !strings.Contains(ev.Data, `"last_event_id":7`) {
		t.Fatalf("got %q %s, want a close for an expired stream at 7", ev.Name, ev.Data)
	}
}
