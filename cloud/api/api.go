package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/cloud/ledger"
	"github.com/outpost-edge/outpost/protocol"
)

// Roles of API tokens. An admin may do everything a reader may.
const (
	RoleAdmin  = "admin"
	RoleReader = "reader"
)

// MaxBodyBytes bounds a request body; every body of this API is small.
const MaxBodyBytes = 64 << 10

// ReadyTimeout bounds the checks behind GET /readyz.
const ReadyTimeout = 5 * time.Second

// RequestTimeout bounds the work behind one request (its database queries),
// so that a stuck database turns into 503s rather than requests that pile up.
const RequestTimeout = 30 * time.Second

// Options configure the API. Ledger and CloudPublicKey are required.
type Options struct {
	Ledger *ledger.Ledger
	// CloudPublicKey is the key receipts are signed with. POST /v1/enroll
	// and GET /v1/cloud-key return it, for edges to pin.
	CloudPublicKey ed25519.PublicKey
	// Signer is the cloud's signing key, whose public half is
	// CloudPublicKey (New fills that from it when it is nil). Proofs
	// (GET /v1/events/{edge}/{epoch}/{seq}/proof) are signed with it; when
	// it is nil, that endpoint answers 501.
	Signer *protocol.Signer
	// Ready adds readiness checks (the broker, say) to GET /readyz, after
	// the database's. Its error's text is shown to whoever asks /readyz.
	// May be nil.
	Ready func(ctx context.Context) error
	// Live, when not nil, makes GET /healthz (the liveness probe) fail
	// with its error: for a part that cannot recover without a restart
	// (an ingest that has not consumed for minutes). Keep it cheap and
	// free of the database. May be nil.
	Live func() error
	// Repository, when not nil, serves the OTA release repository at
	// GET /v1/ota/repo/{file...} (cloud/release.Server: it authenticates
	// edges by their own keys, not by bearer tokens). When nil that route
	// answers 404.
	Repository http.Handler
	// Metrics, when not nil, is served at GET /metrics without auth.
	Metrics http.Handler
	// Logger gets the access log and internal errors. Default slog.Default().
	Logger *slog.Logger
	// The live tail (GET /v1/events/stream): how often a caught-up stream
	// reads the ledger again (default DefaultStreamPoll), how long it may
	// be quiet before a heartbeat comment (DefaultStreamHeartbeat), how
	// many events it reads and sends at once (DefaultStreamBatch), how
	// long one write may take before the client is cut off
	// (DefaultStreamWriteTimeout), how long a client may stay behind the
	// ledger before it is sent a "slow" close event
	// (DefaultStreamMaxBehind), and how long a stream lasts at most
	// (DefaultStreamMaxDuration).
	StreamPoll, StreamHeartbeat, StreamWriteTimeout, StreamMaxBehind, StreamMaxDuration time.Duration
	StreamBatch                                                                         int
	// StreamAuthCheck is how often a live tail checks its token again,
	// whatever its traffic, so that a revoked token's stream ends within
	// it (default DefaultStreamAuthCheck).
	StreamAuthCheck time.Duration
	// StreamMax and StreamMaxPerToken bound the live tails open at once,
	// overall and per API token (defaults DefaultStreamMax and
	// DefaultStreamMaxPerToken). One more is refused: 503 over the overall
	// limit, 429 over the token's, both with Retry-After.
	StreamMax, StreamMaxPerToken int
	// StreamsDone, when closed, ends every live tail with a "shutdown"
	// close event (cloud serve closes it when the HTTP server shuts down,
	// which does not wait for streams otherwise). May be nil.
	StreamsDone <-chan struct{}
	// OpenAPI is the spec served at GET /openapi.yaml (docs/openapi.yaml,
	// embedded by cmd/cloud). When nil that route answers 404.
	OpenAPI []byte
	// Now is the clock for the expiry times the API reports. Default
	// time.Now. (The ledger's own clock decides expiry; give both the same.)
	Now func() time.Time
}

type server struct {
	opts     Options
	log      *slog.Logger
	cloudKID protocol.KeyID
	mux      *http.ServeMux
	tails    tailCount
}

// New returns the API's handler. It panics when opts.Ledger is nil or
// opts.CloudPublicKey is not an Ed25519 public key: both are wiring
// mistakes that no request could recover from.
func New(opts Options) http.Handler {
	if opts.Ledger == nil {
		panic("api.New: Options.Ledger is nil")
	}
	if opts.Signer != nil {
		if opts.CloudPublicKey == nil {
			opts.CloudPublicKey = opts.Signer.Public()
		}
		if !opts.Signer.Public().Equal(opts.CloudPublicKey) {
			panic("api.New: Options.Signer is not the key of Options.CloudPublicKey")
		}
	}
	if len(opts.CloudPublicKey) != ed25519.PublicKeySize {
		panic(fmt.Sprintf("api.New: Options.CloudPublicKey is %d bytes, want %d", len(opts.CloudPublicKey), ed25519.PublicKeySize))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	defaultDuration(&opts.StreamPoll, DefaultStreamPoll)
	defaultDuration(&opts.StreamHeartbeat, DefaultStreamHeartbeat)
	defaultDuration(&opts.StreamWriteTimeout, DefaultStreamWriteTimeout)
	defaultDuration(&opts.StreamMaxBehind, DefaultStreamMaxBehind)
	defaultDuration(&opts.StreamMaxDuration, DefaultStreamMaxDuration)
	defaultDuration(&opts.StreamAuthCheck, DefaultStreamAuthCheck)
	if opts.StreamMax <= 0 {
		opts.StreamMax = DefaultStreamMax
	}
	if opts.StreamMaxPerToken <= 0 {
		opts.StreamMaxPerToken = DefaultStreamMaxPerToken
	}
	if opts.StreamBatch <= 0 {
		opts.StreamBatch = DefaultStreamBatch
	}
	opts.StreamBatch = min(opts.StreamBatch, ledger.MaxLimit)
	s := &server{
		opts:     opts,
		log:      opts.Logger.With("component", "api"),
		cloudKID: protocol.KeyIDOf(opts.CloudPublicKey),
		mux:      http.NewServeMux(),
	}
	s.routes()
	return s
}

func defaultDuration(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// access says who may call an endpoint.
type access int

const (
	public access = iota // no bearer token
	reader               // role reader or admin
	admin                // role admin
)

// endpoint is one route of the API.
type endpoint struct {
	pattern string // a ServeMux pattern with its method
	need    access
	h       handlerFunc
	// params are the query parameters the endpoint reads; any other, or
	// one given twice, is a 400 (API.md: a typo is an error, never a
	// silently ignored filter). anyParams skips the check (/metrics, which
	// is promhttp's).
	params    []string
	anyParams bool
}

// endpoints lists the API's routes; docs/openapi.yaml and docs/API.md
// document each of them (docs_internal_test.go checks that).
func (s *server) endpoints() []endpoint {
	eps := []endpoint{
		{"GET /healthz", public, s.healthz, nil, false},
		{"GET /readyz", public, s.readyz, nil, false},
		{"GET /v1/cloud-key", public, s.cloudKey, nil, false},
		{"POST /v1/enroll", public, s.enroll, nil, false},

		{"GET /v1/streams", reader, s.streams, nil, false},
		{"GET /v1/streams/{edge}/{epoch}/records", admin, s.streamRecords, []string{"from", "limit"}, false},
		{"GET /v1/events", reader, s.events, []string{"edge", "type", "from", "to", "after", "limit", "store", "business_day"}, false},
		{"GET /v1/events/{edge}/{epoch}/{seq}/proof", reader, s.eventProof, nil, false},
		{streamPattern, reader, s.eventStream, []string{"edge", "type", "from", "to", "after", "store", "business_day"}, false},
		{"GET /openapi.yaml", public, s.openAPI, nil, false},
		{"GET /v1/quarantine", reader, s.quarantine, []string{"after", "limit"}, false},
		{"GET /v1/quarantine/{id}", reader, s.quarantineEntry, nil, false},

		{"GET /v1/edges", reader, s.listEdges, nil, false},
		{"GET /v1/edges/{id}", reader, s.getEdge, nil, false},
		{"POST /v1/edges", admin, s.addEdge, nil, false},
		{"POST /v1/edges/{id}/revoke", admin, s.revokeEdge, nil, false},
		{"POST /v1/edges/{id}/keys", admin, s.rotateKey, nil, false},
		{"POST /v1/edges/{id}/keys/{kid}/revoke", admin, s.revokeKey, nil, false},
		{"GET /v1/edges/{id}/commands", reader, s.edgeCommands, nil, false},
		{"POST /v1/tokens", admin, s.createEnrollToken, nil, false},
		{"POST /v1/api-tokens", admin, s.createAPIToken, nil, false},
		{"POST /v1/api-tokens/{name}/revoke", admin, s.revokeAPIToken, nil, false},

		{"GET /v1/tenants", reader, s.listTenants, nil, false},
		{"POST /v1/tenants", admin, s.addTenant, nil, false},
		{"GET /v1/stores", reader, s.listStores, []string{"tenant"}, false},
		{"POST /v1/stores", admin, s.addStore, nil, false},

		{"GET /v1/ota/repo/{file...}", public, s.otaRepo, nil, false},
	}
	eps = append(eps, s.reportEndpoints()...)
	eps = append(eps, s.rolloutEndpoints()...)
	if s.opts.Metrics != nil {
		eps = append(eps, endpoint{pattern: "GET /metrics", need: public, anyParams: true, h: func(w http.ResponseWriter, r *http.Request) error {
			s.opts.Metrics.ServeHTTP(w, r)
			return nil
		}})
	}
	return eps
}

func (s *server) routes() {
	for _, ep := range s.endpoints() {
		s.handle(ep)
	}
}

// handlerFunc is an endpoint: it writes its answer, or returns an error
// for serve to write.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *server) handle(ep endpoint) {
	s.mux.HandleFunc(ep.pattern, func(w http.ResponseWriter, r *http.Request) {
		if ep.pattern != streamPattern {
			ctx, cancel := context.WithTimeout(r.Context(), RequestTimeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		err := s.authorize(r, ep.need)
		if err == nil && !ep.anyParams {
			err = onlyParams(r, ep.params...)
		}
		if err == nil {
			err = s.serve(w, r, ep)
		}
		if err != nil {
			s.writeError(w, r, err)
		}
	})
}

// logInfo is what the handlers tell the access log; it travels in the
// request's context.
type logInfo struct {
	requestID string
	token     string // the API token's name, never its plaintext
	err       error  // an internal error, for the log only

	// scope is the token's tenant, or ledger.AllTenants for a global
	// token; set by authorize.
	scope string
	// led is the ledger a read endpoint reads through: ledger.ReadAs's,
	// bound to scope by row-level security. Nil outside reads.
	led *ledger.Ledger
	// edges are the ids of the edges of scope, read before the request's
	// read transaction: the second check (after row-level security) of
	// what a tenant's token is shown. Nil for a global token.
	edges map[string]bool
}

type logKey struct{}

func info(r *http.Request) *logInfo {
	if li, ok := r.Context().Value(logKey{}).(*logInfo); ok {
		return li
	}
	return &logInfo{}
}

// ServeHTTP logs each request and answers, in JSON, requests that match no
// endpoint (the ServeMux's own 404 and 405 answers are plain text).
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	li := &logInfo{requestID: newRequestID()}
	r = r.WithContext(context.WithValue(r.Context(), logKey{}, li))
	rec := &statusWriter{ResponseWriter: w}
	rec.Header().Set("X-Request-Id", li.requestID)

	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.unmatched(rec, r)
	} else {
		s.mux.ServeHTTP(rec, r)
	}

	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelError
	case r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics":
		level = slog.LevelDebug
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", status),
		slog.Duration("duration", time.Since(start)), slog.String("request_id", li.requestID),
		slog.String("remote", r.RemoteAddr),
	}
	if li.token != "" {
		attrs = append(attrs, slog.String("token", li.token))
	}
	if li.err != nil {
		attrs = append(attrs, slog.String("err", li.err.Error()))
	}
	s.log.LogAttrs(r.Context(), level, "request", attrs...)
}

// unmatched answers a request that matches no pattern: 405 when the path
// exists with another method, else 404.
func (s *server) unmatched(w http.ResponseWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	probe := &headerProbe{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		allow := probe.header.Get("Allow")
		w.Header().Set("Allow", allow)
		s.writeError(w, r, errorf(http.StatusMethodNotAllowed,
			"method %s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow))
		return
	}
	s.writeError(w, r, errorf(http.StatusNotFound, "no endpoint %s %s; docs/API.md lists them", r.Method, r.URL.Path))
}

// headerProbe records what the ServeMux's own fallback handler would
// answer, discarding its body.
type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header         { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *headerProbe) WriteHeader(status int)      { p.status = status }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer (for
// /metrics handlers that flush).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// authorize checks the bearer token against what the endpoint needs.
func (s *server) authorize(r *http.Request, need access) error {
	if need == public {
		return nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return errorf(http.StatusUnauthorized, "missing bearer token: %s", adviceAPIToken)
	}
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return errorf(http.StatusUnauthorized, "the Authorization header must be \"Bearer <token>\"; %s", adviceAPIToken)
	}
	t, err := s.opts.Ledger.AuthAPIToken(r.Context(), tok)
	if err != nil {
		return &authError{err: err}
	}
	info(r).token = t.Name
	info(r).scope = ledger.AllTenants
	if t.Tenant != "" {
		info(r).scope = t.Tenant
	}
	switch {
	case t.Role == RoleAdmin:
	case t.Role == RoleReader && need == reader:
	case t.Role == RoleReader:
		return errorf(http.StatusForbidden, "token %q has role %q, and this needs role %q; ask an admin to do it, or for an admin token",
			t.Name, t.Role, RoleAdmin)
	default:
		return errorf(http.StatusForbidden, "token %q has role %q, which this API does not know (it knows %q and %q); ask an admin for a new token",
			t.Name, t.Role, RoleAdmin, RoleReader)
	}
	return nil
}

// writeJSON writes v as the answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // answers are JSON, never HTML; keep "<token>" readable
	if err := enc.Encode(v); err != nil {
		// Only our own response types are encoded; they always encode.
		panic(fmt.Sprintf("api: encode response: %v", err))
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store") // answers may hold tokens, and are live state
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type errorBody struct {
	Error string `json:"error"`
}

func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := statusOf(err)
	if status >= 500 {
		info(r).err = err
		if status == http.StatusInternalServerError {
			msg += " (request " + info(r).requestID + ")"
		}
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="outpost"`)
	}
	writeJSON(w, status, errorBody{Error: msg})
}

// decode reads a JSON request body into v: at most MaxBodyBytes, one JSON
// object, no unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.Decode(&struct{}{}) != io.EOF {
			return badRequest("request body must hold one JSON object and nothing after it")
		}
		return nil
	}
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", MaxBodyBytes)
	case errors.Is(err, io.EOF):
		return badRequest("request body is empty; send a JSON object")
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("request body is not valid JSON: %v", err)
	case errors.As(err, &te):
		return badRequest("request body: field %q must be a JSON %s", te.Field, te.Type.Kind())
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest("request body: %s (docs/API.md lists the fields)", strings.TrimPrefix(err.Error(), "json: "))
	}
	return badRequest("request body: %v", err)
}

// otaRepo hands the request to the release repository, which checks the
// edge's signed Authorization header itself.
func (s *server) otaRepo(w http.ResponseWriter, r *http.Request) error {
	if s.opts.Repository == nil {
		return errorf(http.StatusNotFound, "this cloud serves no release repository (cloud serve --release-dir)")
	}
	s.opts.Repository.ServeHTTP(w, r)
	return nil
}
