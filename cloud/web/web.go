package web

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
)

// Cookie names.
const (
	SessionCookie = "outpost_session" // the API token, HttpOnly
	LoginCookie   = "outpost_login"   // the login form's CSRF double-submit value
)

// SessionTTL is how long the browser keeps a session cookie. The token's
// own revocation ends a session at once: every page checks it.
const SessionTTL = 12 * time.Hour

// DefaultPageSize is the rows per page of every list.
const DefaultPageSize = 50

// MaxCSVRows bounds one CSV download; the page says so where a list can be
// longer (the API pages through the rest).
const MaxCSVRows = 10000

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure the web page. API and Ledger are required.
type Options struct {
	// API is the cloud API's handler (api.New). Every page reads through
	// it and every action is one of its POSTs; paths the page does not
	// serve are passed to it unchanged.
	API http.Handler
	// Ledger is used only for ledger.AuthAPIToken: to tell the signed-in
	// token's name and role, the way the API tells them.
	Ledger *ledger.Ledger
	// Logger gets a line per page request. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock shown on the pages. Default time.Now.
	Now func() time.Time
	// PageSize is the rows per page. Default DefaultPageSize.
	PageSize int
}

type server struct {
	opts   Options
	log    *slog.Logger
	mux    *http.ServeMux
	tmpl   map[string]*template.Template
	static http.Handler
}

// New returns the handler for the whole listener: the pages under /, and
// the API for every path the pages do not own. It panics when opts.API or
// opts.Ledger is nil, or a template does not parse: wiring mistakes.
func New(opts Options) http.Handler {
	if opts.API == nil || opts.Ledger == nil {
		panic("web.New: Options.API and Options.Ledger are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err)
	}
	s := &server{opts: opts, log: opts.Logger.With("component", "web"), mux: http.NewServeMux(),
		tmpl: parseTemplates(), static: http.StripPrefix("/static/", http.FileServerFS(sub))}
	s.routes()
	return s
}

func (s *server) routes() {
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/today", http.StatusSeeOther)
	})
	s.mux.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		s.static.ServeHTTP(w, r)
	})
	s.mux.HandleFunc("GET /login", s.loginPage)
	s.mux.HandleFunc("POST /login", s.login)
	s.mux.HandleFunc("POST /logout", s.page(s.logout))

	s.mux.HandleFunc("GET /today", s.page(s.today))
	s.mux.HandleFunc("GET /today/live", s.page(s.live))
	s.mux.HandleFunc("GET /stores/{store}/{day}", s.page(s.storeDay))
	s.mux.HandleFunc("GET /reconciliation", s.page(s.reconciliation))
	s.mux.HandleFunc("GET /inventory", s.page(s.inventory))
	s.mux.HandleFunc("GET /inventory/movements", s.page(s.movements))
	s.mux.HandleFunc("GET /reports/{name}", s.page(s.reportCSV))

	s.mux.HandleFunc("GET /fleet", s.page(s.fleet))
	s.mux.HandleFunc("GET /fleet/edges.csv", s.page(s.fleetEdgesCSV))
	s.mux.HandleFunc("GET /fleet/streams.csv", s.page(s.fleetStreamsCSV))
	s.mux.HandleFunc("POST /fleet/{id}/revoke", s.page(s.revokeEdge))
	s.mux.HandleFunc("POST /fleet/{id}/keys", s.page(s.rotateKey))
	s.mux.HandleFunc("POST /fleet/{id}/keys/{kid}/revoke", s.page(s.revokeKey))
	s.mux.HandleFunc("POST /fleet/rollouts/{id}/{action}", s.page(s.rolloutAction))

	s.mux.HandleFunc("GET /events", s.page(s.events))
	s.mux.HandleFunc("GET /events.csv", s.page(s.eventsCSV))
	s.mux.HandleFunc("GET /events/{pos}", s.page(s.event))
	s.mux.HandleFunc("GET /proof/{edge}/{epoch}/{seq}", s.page(s.proof))

	s.mux.HandleFunc("GET /quarantine", s.page(s.quarantine))
	s.mux.HandleFunc("GET /quarantine.csv", s.page(s.quarantineCSV))
	s.mux.HandleFunc("GET /quarantine/{id}", s.page(s.quarantineEntry))
}

// ServeHTTP serves the pages, and passes every other path to the API.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.opts.API.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	rec := &statusWriter{ResponseWriter: w}
	h := rec.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	s.mux.ServeHTTP(rec, r)
	level := slog.LevelInfo
	if strings.HasPrefix(r.URL.Path, "/static/") {
		level = slog.LevelDebug
	}
	if rec.status >= 500 {
		level = slog.LevelError
	}
	s.log.LogAttrs(r.Context(), level, "page", slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", rec.code()), slog.Duration("duration", time.Since(start)), slog.String("remote", r.RemoteAddr))
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader passes on the first status only: a handler that writes an
// error after its answer has started (a live tail that ends) cannot
// change what was sent.
func (w *statusWriter) WriteHeader(status int) {
	if w.status != 0 {
		return
	}
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// session is the signed-in user of one request.
type session struct {
	token  string // the API token's plaintext: only ever sent to the API
	Name   string // the token's name
	Role   string
	Tenant string
	CSRF   string // the CSRF token of this session's forms
}

// Admin tells whether to offer admin actions. The API decides; this only
// keeps a reader from being offered what it would refuse.
func (s *session) Admin() bool { return s.Role == "admin" }

// pageFunc is a page or an action of a signed-in user: it writes its
// answer, or returns an error for page to show.
type pageFunc func(w http.ResponseWriter, r *http.Request, sess *session) error

// page wraps a pageFunc with the session check (a request without a valid
// session goes to /login) and, for POSTs, the CSRF and Origin checks.
func (s *server) page(f pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(SessionCookie)
		if err != nil || c.Value == "" {
			s.toLogin(w, r, "")
			return
		}
		t, err := s.opts.Ledger.AuthAPIToken(r.Context(), c.Value)
		switch {
		case errors.Is(err, ledger.ErrTokenUnknown), errors.Is(err, ledger.ErrRevoked):
			clearCookie(w, r, SessionCookie)
			s.toLogin(w, r, "Your API token is unknown or was revoked; sign in with another one.")
			return
		case err != nil:
			s.log.Error("check session token", "err", err)
			s.renderError(w, r, nil, http.StatusServiceUnavailable, "Cannot check your API token now (the database is unavailable); retry later.")
			return
		}
		sess := &session{token: c.Value, Name: t.Name, Role: t.Role, Tenant: t.Tenant, CSRF: csrfFor(c.Value)}
		if r.Method == http.MethodPost {
			if msg := checkPost(r, sess.CSRF); msg != "" {
				s.renderError(w, r, sess, http.StatusForbidden, msg)
				return
			}
		}
		if err := f(w, r, sess); err != nil {
			s.fail(w, r, sess, err)
		}
	}
}

// toLogin sends the browser to the login page, back here afterwards.
func (s *server) toLogin(w http.ResponseWriter, r *http.Request, msg string) {
	q := url.Values{}
	if r.Method == http.MethodGet {
		q.Set("next", r.URL.RequestURI())
	}
	if msg != "" {
		q.Set("m", msg)
	}
	http.Redirect(w, r, "/login?"+q.Encode(), http.StatusSeeOther)
}

// csrfFor is the CSRF token of a session: an HMAC keyed by its API token,
// so a page cannot forge it without the (HttpOnly) token, and every
// replica can check it without shared state.
func csrfFor(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("outpost web csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkPost checks a POST's CSRF field against want, and its Origin
// (when the browser sends one) against the page's own host. It returns
// what is wrong, for the user, or "".
func checkPost(r *http.Request, want string) string {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return fmt.Sprintf("This form was sent from another site (%s); the back office accepts forms only from its own pages. Go back, reload the page and send it again.", o)
		}
	}
	if err := r.ParseForm(); err != nil {
		return "The form could not be read: " + err.Error()
	}
	got := r.PostForm.Get("csrf")
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return "The form's security token is missing or stale (the page was opened before you signed in again). Reload the page and send the form again."
	}
	return ""
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, ttl time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: int(ttl / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r)})
}

func clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: overTLS(r)})
}

// overTLS tells whether the browser reached us over TLS: directly, or
// through a proxy that says so (X-Forwarded-Proto: https). Trusting the
// header can only make the cookie stricter (Secure), never weaker.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// safeNext keeps a post-login redirect on this site: a path that starts
// with one slash and holds no backslash, space or control character
// (browsers drop tabs and newlines from URLs and read \ as /, so
// "/\t/evil.example" would leave the site).
func safeNext(next string) string {
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") {
		return "/today"
	}
	for i := 0; i < len(next); i++ {
		if c := next[i]; c <= ' ' || c == 0x7f || c == '\\' {
			return "/today"
		}
	}
	return next
}

type loginData struct {
	CSRF    string
	Next    string
	Message string
}

func (s *server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.renderLogin(w, r, http.StatusOK, r.URL.Query().Get("next"), r.URL.Query().Get("m"))
}

func (s *server) renderLogin(w http.ResponseWriter, r *http.Request, status int, next, msg string) {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	v := base64.RawURLEncoding.EncodeToString(b)
	setCookie(w, r, LoginCookie, v, time.Hour)
	s.render(w, r, status, "login", nil, "Sign in", loginData{CSRF: v, Next: safeNext(next), Message: msg})
}

// login checks the token the way the pages will use it: by asking the API
// for the fleet's streams with it, so a token the API refuses (unknown,
// revoked, or one it cannot scope) is refused here with the API's reason.
func (s *server) login(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(LoginCookie)
	if err != nil || c.Value == "" {
		s.renderLogin(w, r, http.StatusForbidden, "", "Your browser did not send the login form's cookie back; allow cookies for this site and try again.")
		return
	}
	if msg := checkPost(r, c.Value); msg != "" {
		s.renderLogin(w, r, http.StatusForbidden, r.PostForm.Get("next"), msg)
		return
	}
	next := r.PostForm.Get("next")
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if tok == "" {
		s.renderLogin(w, r, http.StatusBadRequest, next, "Enter an API token (from an admin: cloud tokens create --name NAME).")
		return
	}
	sess := &session{token: tok}
	if err := s.getJSON(r, sess, "/v1/streams", nil, &struct{}{}); err != nil {
		status, msg := http.StatusServiceUnavailable, "Cannot check the token now; retry later."
		var ae *apiError
		if errors.As(err, &ae) {
			status, msg = ae.Status, "The API refuses this token: "+ae.Msg
		}
		s.renderLogin(w, r, status, next, msg)
		return
	}
	clearCookie(w, r, LoginCookie)
	setCookie(w, r, SessionCookie, tok, SessionTTL)
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

func (s *server) logout(w http.ResponseWriter, r *http.Request, _ *session) error {
	clearCookie(w, r, SessionCookie)
	http.Redirect(w, r, "/login?m="+url.QueryEscape("Signed out."), http.StatusSeeOther)
	return nil
}

// apiError is a non-2xx answer of the API, with its own message.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("API %d: %s", e.Status, e.Msg) }

// apiResponse is an answer of the API, recorded in memory.
type apiResponse struct {
	status int
	header http.Header
	body   bytes.Buffer
}

func (a *apiResponse) Header() http.Header { return a.header }
func (a *apiResponse) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	return a.body.Write(b)
}
func (a *apiResponse) WriteHeader(status int) {
	if a.status == 0 {
		a.status = status
	}
}

// call makes one request to the API in-process, as the session's token.
func (s *server) call(r *http.Request, sess *session, method, path string, q url.Values, body any) (*apiResponse, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(r.Context(), method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("api request %s %s: %w", method, path, err)
	}
	req.RemoteAddr = r.RemoteAddr
	req.Host = r.Host
	req.Header.Set("Authorization", "Bearer "+sess.token)
	req.Header.Set("User-Agent", "outpost-web")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp := &apiResponse{header: http.Header{}}
	s.opts.API.ServeHTTP(resp, req)
	if resp.status == 0 {
		resp.status = http.StatusOK
	}
	if resp.status >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(resp.body.Bytes(), &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(resp.body.String())
		}
		return resp, &apiError{Status: resp.status, Msg: e.Error}
	}
	return resp, nil
}

// getJSON GETs path from the API and decodes its JSON answer into v.
func (s *server) getJSON(r *http.Request, sess *session, path string, q url.Values, v any) error {
	resp, err := s.call(r, sess, http.MethodGet, path, q, nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(resp.body.Bytes(), v); err != nil {
		return fmt.Errorf("decode the API's answer to GET %s: %w", path, err)
	}
	return nil
}

// fail shows err: an API refusal with the API's status and message, a
// web-side refusal (userError) with its own, anything else as internal.
func (s *server) fail(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	var ae *apiError
	var ue *userError
	switch {
	case errors.As(err, &ae):
		s.renderError(w, r, sess, ae.Status, ae.Msg)
	case errors.As(err, &ue):
		s.renderError(w, r, sess, ue.status, ue.msg)
	case errors.Is(err, context.Canceled):
	default:
		s.log.Error("page", "path", r.URL.Path, "err", err)
		s.renderError(w, r, sess, http.StatusInternalServerError, "Internal error; the cloud's log has the details.")
	}
}

// userError is a refusal the page itself makes (a bad page parameter).
type userError struct {
	status int
	msg    string
}

func (e *userError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &userError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &userError{status: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
}
