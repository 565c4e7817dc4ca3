package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// streamPattern is the live tail's route. It is the one endpoint that is
// not bounded by RequestTimeout: it lasts until the client goes, the
// server shuts down, or StreamMaxDuration passes.
const streamPattern = "GET /v1/events/stream"

// Defaults of the live tail (Options.Stream*).
const (
	DefaultStreamPoll         = 500 * time.Millisecond
	DefaultStreamHeartbeat    = 15 * time.Second
	DefaultStreamBatch        = 100
	DefaultStreamWriteTimeout = 10 * time.Second
	DefaultStreamMaxBehind    = time.Minute
	DefaultStreamMaxDuration  = time.Hour
	DefaultStreamAuthCheck    = 15 * time.Second
	DefaultStreamMax          = 256
	DefaultStreamMaxPerToken  = 8
)

// streamRetryAfter is the Retry-After, in seconds, of a live tail refused
// for the limits on open tails.
const streamRetryAfter = 30

// tailCount counts the open live tails, overall and per token name.
type tailCount struct {
	mu      sync.Mutex
	total   int
	byToken map[string]int
}

// acquire takes a slot for one tail of token, or says which limit it is
// over: a 503 (the server's) or a 429 (the token's).
func (s *server) acquireTail(w http.ResponseWriter, token string) (release func(), err error) {
	c := &s.tails
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.total >= s.opts.StreamMax:
		w.Header().Set("Retry-After", strconv.Itoa(streamRetryAfter))
		return nil, errorf(http.StatusServiceUnavailable,
			"this server already serves %d live tails, its limit; retry after %d s, or page with GET /v1/events?after= instead",
			s.opts.StreamMax, streamRetryAfter)
	case c.byToken[token] >= s.opts.StreamMaxPerToken:
		w.Header().Set("Retry-After", strconv.Itoa(streamRetryAfter))
		return nil, errorf(http.StatusTooManyRequests,
			"token %q already has %d live tails open, its limit; close one (each browser tab holds one) or retry after %d s",
			token, s.opts.StreamMaxPerToken, streamRetryAfter)
	}
	if c.byToken == nil {
		c.byToken = map[string]int{}
	}
	c.total++
	c.byToken[token]++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.total--
		if c.byToken[token]--; c.byToken[token] == 0 {
			delete(c.byToken, token)
		}
	}, nil
}

// StreamRetry is the reconnection delay the live tail asks clients for
// (the SSE retry field), in milliseconds.
const StreamRetry = 2000

// streamClose is the data of the "close" event: why the server ends the
// stream, and where to resume.
type streamClose struct {
	Reason string `json:"reason"` // slow, shutdown, expired, unavailable, unauthorized
	Detail string `json:"detail"`
	// LastEventID is the pos of the last event sent (the cursor the
	// stream started from when none was sent): reconnect with it as
	// Last-Event-ID, or page on with GET /v1/events?after=.
	LastEventID int64 `json:"last_event_id"`
}

// eventStream serves GET /v1/events/stream: Server-Sent Events of committed
// events, with the filters of GET /v1/events, in commit (pos) order. Each
// event's id is its pos; a client that reconnects with Last-Event-ID (which
// browsers' EventSource send by themselves) resumes after it with no gap
// and no duplicate, because it reads through the same ledger read as
// /v1/events (ledger.Events), page after page from that cursor.
//
// Nothing is fanned out from the commit path: each client reads the ledger
// at its own pace, so a slow client never blocks commits, and what the
// server holds for it is one page (at most StreamBatch events) plus the
// socket's buffers. A client that stays behind the ledger's head (every
// page full) for StreamMaxBehind is sent a "close" event with reason "slow"
// and disconnected; one whose socket takes no bytes for StreamWriteTimeout
// is cut off (no event can reach it then). Both resume with Last-Event-ID.
func (s *server) eventStream(w http.ResponseWriter, r *http.Request) error {
	f, err := eventFilter(r)
	if err != nil {
		return err
	}
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 {
			return badRequest("header Last-Event-ID must be the id of an event of this stream (its pos, a non-negative integer), got %q", v)
		}
		f.After = n // it wins over after: it is where the client got to
	}
	f.Limit = s.opts.StreamBatch
	release, err := s.acquireTail(w, info(r).token)
	if err != nil {
		return err
	}
	defer release()
	// Read the first page before answering, so a database that is down is
	// an error answer rather than an empty stream.
	page, err := s.tenantEvents(r, f)
	if err != nil {
		return err
	}
	t := &tail{s: s, r: r, f: f, out: &sseWriter{w: w, rc: http.NewResponseController(w), timeout: s.opts.StreamWriteTimeout}}
	// The write deadline stays on the connection after the handler, and
	// net/http sets none of its own here (cloud serve has no WriteTimeout):
	// clear it, or a later request on the kept-alive connection would fail.
	defer func() { _ = t.out.rc.SetWriteDeadline(time.Time{}) }()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(&t.out.buf, "retry: %d\n: events after pos %d\n\n", StreamRetry, f.After)
	t.run(page)
	return nil
}

// tail is one live-tail stream: its filter, whose After is the pos of the
// last event sent, and its writer.
type tail struct {
	s           *server
	r           *http.Request
	f           ledger.Filter
	out         *sseWriter
	lastSent    time.Time
	lastAuth    time.Time // when the token was last checked
	behindSince time.Time // since when every page came back full; zero when caught up
}

// now is a channel that is always ready: the wait of a stream that is
// catching up.
var now = func() <-chan time.Time { c := make(chan time.Time); close(c); return c }()

// run sends page and the pages after it until the stream ends.
func (t *tail) run(page ledger.Page) {
	ctx := t.r.Context()
	expire := time.NewTimer(t.s.opts.StreamMaxDuration)
	defer expire.Stop()
	t.lastSent = time.Now()
	t.lastAuth = t.lastSent // the handler checked it just now
	for {
		if !t.send(page) {
			return
		}
		full := len(page.Events) == t.f.Limit
		switch {
		case !full:
			t.behindSince = time.Time{}
		case t.behindSince.IsZero():
			t.behindSince = time.Now()
		case time.Since(t.behindSince) >= t.s.opts.StreamMaxBehind:
			t.close("slow", fmt.Sprintf("this client stayed behind the ledger for %v; reconnect with Last-Event-ID to resume, "+
				"or catch up with GET /v1/events?after=%d", t.s.opts.StreamMaxBehind, t.f.After))
			return
		}
		// Catching up, read on at once (a shutdown or expiry still wins
		// within a page or two); caught up, wait for the next poll.
		wait := now
		if !full {
			wait = time.After(t.s.opts.StreamPoll)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.s.opts.StreamsDone:
			t.close("shutdown", "the server is shutting down; reconnect with Last-Event-ID to resume")
			return
		case <-expire.C:
			t.close("expired", fmt.Sprintf("streams last at most %v; reconnect with Last-Event-ID to resume", t.s.opts.StreamMaxDuration))
			return
		case <-wait:
		}
		// The token is checked again every StreamAuthCheck, whether
		// events flow or not (a heartbeat alone would never come while
		// they do).
		if time.Since(t.lastAuth) >= t.s.opts.StreamAuthCheck && !t.reauthorize() {
			return
		}
		if !full && !t.heartbeat() {
			return
		}
		var err error
		if page, err = t.s.tenantEvents(t.r, t.f); err != nil {
			if ctx.Err() == nil {
				info(t.r).err = err
				t.close("unavailable", "the ledger cannot be read now; reconnect with Last-Event-ID to resume")
			}
			return
		}
	}
}

// send writes page's events (and whatever else is buffered). It reports
// false when the client is gone or did not take them within the write
// timeout.
func (t *tail) send(page ledger.Page) bool {
	for _, ev := range page.Events {
		t.out.event("event", strconv.FormatInt(ev.Pos, 10), ev)
	}
	if len(page.Events) > 0 {
		t.f.After = page.Next
	}
	if t.out.buf.Len() == 0 {
		return true
	}
	if err := t.out.flush(); err != nil {
		t.s.log.Info("stream client gone or too slow to take its events", "request_id", info(t.r).requestID,
			"last_event_id", t.f.After, "err", err)
		return false
	}
	t.lastSent = time.Now()
	return true
}

// reauthorize checks the token again; when it no longer passes (revoked,
// or its role changed) it sends the "unauthorized" close event and reports
// false.
func (t *tail) reauthorize() bool {
	if err := t.s.authorize(t.r, reader); err != nil {
		status, msg := statusOf(err)
		if status == http.StatusServiceUnavailable { // the token could not be checked
			info(t.r).err = err
			t.close("unavailable", msg+"; reconnect with Last-Event-ID to resume")
		} else {
			t.close("unauthorized", msg)
		}
		return false
	}
	t.lastAuth = time.Now()
	return true
}

// heartbeat sends a comment when nothing was sent for StreamHeartbeat. It
// reports false when the stream has ended.
func (t *tail) heartbeat() bool {
	if time.Since(t.lastSent) < t.s.opts.StreamHeartbeat {
		return true
	}
	fmt.Fprintf(&t.out.buf, ": heartbeat %s\n\n", time.Now().UTC().Format(time.RFC3339))
	return t.send(ledger.Page{})
}

// close sends the close event saying why the stream ends and where to
// resume.
func (t *tail) close(reason, detail string) {
	t.out.event("close", "", streamClose{Reason: reason, Detail: detail, LastEventID: t.f.After})
	_ = t.out.flush()
}

// sseWriter buffers one batch of events and writes it under a deadline.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     bytes.Buffer
}

// event appends one event: its id (none when empty), name and JSON data.
func (s *sseWriter) event(name, id string, data any) {
	if id != "" {
		fmt.Fprintf(&s.buf, "id: %s\n", id)
	}
	b, err := json.Marshal(data)
	if err != nil {
		panic(fmt.Sprintf("api: encode stream event: %v", err)) // our own types only
	}
	// JSON has no raw newlines, so the data is one line.
	fmt.Fprintf(&s.buf, "event: %s\ndata: %s\n\n", name, b)
}

// flush writes the buffer and flushes it to the client within the write
// timeout.
func (s *sseWriter) flush() error {
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	_, err := s.w.Write(s.buf.Bytes())
	s.buf.Reset()
	if err == nil {
		err = s.rc.Flush()
	}
	return err
}

// eventFilter reads the filters of GET /v1/events and GET
// /v1/events/stream from the query.
func eventFilter(r *http.Request) (ledger.Filter, error) {
	q := r.URL.Query()
	var f ledger.Filter
	var err error
	if f.Edge = q.Get("edge"); f.Edge != "" {
		if err := checkEdgeID("parameter edge", f.Edge); err != nil {
			return f, err
		}
	}
	if f.Type = q.Get("type"); f.Type != "" {
		if err := validateTypeParam(f.Type); err != nil {
			return f, err
		}
	}
	if f.From, err = parseTime(r, "from"); err != nil {
		return f, err
	}
	if f.To, err = parseTime(r, "to"); err != nil {
		return f, err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return f, badRequest("parameter to must be after from (from is inclusive, to exclusive)")
	}
	if f.After, err = parseCursor(r, "after"); err != nil {
		return f, err
	}
	if f.Store = q.Get("store"); f.Store != "" {
		if err := protocol.ValidateName("store", f.Store); err != nil {
			return f, badRequest("parameter store: %v", err)
		}
	}
	if f.BusinessDay = q.Get("business_day"); f.BusinessDay != "" {
		if _, err := time.Parse(ledger.DayLayout, f.BusinessDay); err != nil {
			return f, badRequest("parameter business_day must be a business day as YYYY-MM-DD, such as 2026-03-01, got %q", f.BusinessDay)
		}
		if f.Store == "" {
			return f, badRequest("parameter business_day needs parameter store (the events of one store's day); for every store, page by time with from and to")
		}
	}
	return f, nil
}
