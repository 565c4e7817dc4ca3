package edgeauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// Sentinel errors of a refused login. Callers branch on them with
// errors.Is; every refusal also wraps the underlying reason.
var (
	// ErrUnknownEdge: no such edge is registered.
	ErrUnknownEdge = errors.New("unknown edge")
	// ErrRevoked: the edge or the token's key is revoked.
	ErrRevoked = errors.New("revoked")
	// ErrReplay: the token's counter was spent already (a replayed token,
	// or an edge whose counter went back: see docs/OPERATIONS.md).
	ErrReplay = errors.New("broker token already used")
	// ErrRateLimited: too many failed logins lately from this source
	// address for this edge, or from this address for any edges; refused
	// without looking at the credentials.
	ErrRateLimited = errors.New("too many failed logins from this address")
	// ErrTooManySessions: the edge already holds MaxSessionsPerEdge
	// sessions on this broker process.
	ErrTooManySessions = errors.New("too many sessions for this edge")
)

// Defaults of Options.
const (
	DefaultMaxSessionsPerEdge = 4
	DefaultFailureBurst       = 10
	DefaultFailureRefill      = 6 * time.Second
	// The address's ceiling over all its edges: a hundred edges' budgets.
	// Many shops share an address behind a NAT (one carrier-grade NAT, one
	// head office's uplink), and each gets its own budget; one address
	// trying edge after edge is slowed to about 16 checks a second.
	DefaultAddressFailureBurst  = 100 * DefaultFailureBurst
	DefaultAddressFailureRefill = DefaultFailureRefill / 100
	DefaultNegativeTTL          = 30 * time.Second
	DefaultKeysTTL              = 30 * time.Second
	DefaultPollInterval         = time.Second
	DefaultLogBurst             = 20
	DefaultLogEvery             = time.Second
	// RevocationWindow is how far back each poll reads revocations; a
	// revocation is acted on once, however many polls see it.
	RevocationWindow = 5 * time.Minute
)

// Bounds on what the Authenticator remembers per source and per edge:
// past them a table starts over (forgetting budgets is safe, it only
// forgives).
const (
	maxSources  = 65536
	maxNegative = 65536
	maxKeys     = 65536
)

// Options configure an Authenticator. Zero values take the defaults above.
type Options struct {
	Store Store // required
	// Cluster is the cloud's part of every token's audience: the id of the
	// cloud's signing key, which edges pin at enrollment.
	Cluster string
	// AcceptV1 also accepts older edges' v1 tokens while they are upgraded
	// (protocol.VerifyBrokerTokenV1): spent once like v2, but valid on
	// either broker and only within ±10 minutes of this clock.
	AcceptV1 bool

	MaxSessionsPerEdge int           // sessions one edge may hold on this process
	FailureBurst       int           // failed logins a source address may make at once for one edge
	FailureRefill      time.Duration // then one more per this long
	// AddressFailureBurst and AddressFailureRefill are the same budget for
	// a source address over all the edges it logs in as: its ceiling.
	AddressFailureBurst  int
	AddressFailureRefill time.Duration
	NegativeTTL          time.Duration // how long an unknown or revoked edge is refused from memory
	// KeysTTL is how long an edge's keys, once looked up, verify its
	// tokens without another lookup, with a Store whose UseCounter checks
	// the edge and the key itself (CounterChecksKeys). A token signed by a
	// key that is not among them is checked against a fresh lookup.
	KeysTTL      time.Duration
	PollInterval time.Duration // how often revocations are read
	LogBurst     int           // refusal log lines at once
	LogEvery     time.Duration // then one per this long

	Now    func() time.Time
	Logger *slog.Logger
}

// Stats count what the Authenticator did since it started.
type Stats struct {
	Accepted     uint64 // logins accepted
	AcceptedV1   uint64 // of which with a v1 token (Options.AcceptV1)
	Refused      uint64 // logins refused, for any reason
	RateLimited  uint64 // of which refused for the source's failures, unchecked
	NegativeHits uint64 // of which refused from the negative cache, with no lookup
	Lookups      uint64 // key lookups in the Store
	Kicked       uint64 // sessions closed because of a revocation
	LogsDropped  uint64 // refusal log lines suppressed
}

// Authenticator checks broker logins and tracks the sessions they open.
type Authenticator struct {
	o   Options
	log *slog.Logger

	failures *limiter  // per source address and edge
	keys     *keyCache // nil unless the Store is a CounterChecksKeys
	sources  *limiter  // per source address
	negative *expiring
	logs     *logLimiter

	mu       sync.Mutex
	sessions map[string]map[*Session]struct{} // by edge

	accepted, acceptedV1, refused, rateLimited, negativeHits, lookups, kicked atomic.Uint64
}

// New returns an Authenticator; Run watches revocations.
func New(o Options) (*Authenticator, error) {
	if o.Store == nil {
		return nil, errors.New("edgeauth: Store is required")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxSessionsPerEdge, DefaultMaxSessionsPerEdge)
	def(&o.FailureBurst, DefaultFailureBurst)
	def(&o.AddressFailureBurst, DefaultAddressFailureBurst)
	defd(&o.AddressFailureRefill, DefaultAddressFailureRefill)
	def(&o.LogBurst, DefaultLogBurst)
	defd(&o.FailureRefill, DefaultFailureRefill)
	defd(&o.NegativeTTL, DefaultNegativeTTL)
	defd(&o.KeysTTL, DefaultKeysTTL)
	defd(&o.PollInterval, DefaultPollInterval)
	defd(&o.LogEvery, DefaultLogEvery)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var keys *keyCache
	if c, ok := o.Store.(CounterChecksKeys); ok && c.CounterChecksKeys() {
		keys = &keyCache{m: map[string]cachedKeys{}}
	}
	return &Authenticator{
		o:        o,
		keys:     keys,
		log:      o.Logger.With("component", "edgeauth"),
		failures: &limiter{burst: float64(o.FailureBurst), refill: o.FailureRefill, m: map[string]*bucket{}},
		sources:  &limiter{burst: float64(o.AddressFailureBurst), refill: o.AddressFailureRefill, m: map[string]*bucket{}},
		negative: &expiring{m: map[string]time.Time{}},
		logs:     &logLimiter{burst: float64(o.LogBurst), every: o.LogEvery, tokens: float64(o.LogBurst)},
		sessions: map[string]map[*Session]struct{}{},
	}, nil
}

// Audience is the audience tokens for broker must be signed for here.
func (a *Authenticator) Audience(broker string) string {
	return protocol.BrokerAudience(broker, a.o.Cluster)
}

// Login checks a login of edge with token on broker (protocol.BrokerMQTT
// or protocol.BrokerNATS) from source (the peer's address, host:port or
// host), and opens a Session. The error says why a login was refused; the
// Authenticator has logged it already (rate-limited).
func (a *Authenticator) Login(ctx context.Context, broker, edge, token, source string) (*Session, error) {
	s, err := a.login(ctx, broker, edge, token, hostOf(source))
	if err != nil {
		a.refused.Add(1)
		a.Refused(broker, edge, source, err)
		return nil, err
	}
	a.accepted.Add(1)
	return s, nil
}

func (a *Authenticator) login(ctx context.Context, broker, edge, token, src string) (*Session, error) {
	now := a.o.Now()
	// The budget is per address and edge, under a ceiling per address: one
	// shop failing over and over behind a NAT does not lock out the others
	// there, and one address trying many edges still runs out. A user name
	// that is not an edge id shares the address's "" edge, so a flood of
	// made-up names cannot grow the table by their length.
	nameErr := protocol.ValidateName("edge", edge)
	key := src + "\x00"
	if nameErr == nil {
		key += edge
	}
	if !a.sources.allow(src, now) {
		a.rateLimited.Add(1)
		return nil, fmt.Errorf("%w (%s, over all its edges): login not checked", ErrRateLimited, src)
	}
	if !a.failures.allow(key, now) {
		a.rateLimited.Add(1)
		return nil, fmt.Errorf("%w (%s) as edge %s: login not checked", ErrRateLimited, src, edge)
	}
	fail := func(err error) (*Session, error) {
		a.failures.fail(key, now)
		a.sources.fail(src, now)
		return nil, err
	}
	if nameErr != nil {
		return fail(fmt.Errorf("user name: %w", nameErr))
	}
	tok, err := protocol.ParseBrokerToken(token)
	v1 := a.o.AcceptV1 && errors.Is(err, protocol.ErrBrokerTokenVersion) && strings.HasPrefix(token, "v1.")
	if err != nil && !v1 {
		return fail(err)
	}
	if a.negative.has(edge, now) {
		a.negativeHits.Add(1)
		return fail(fmt.Errorf("edge %s is unknown or revoked (remembered for up to %s): %w", edge, a.o.NegativeTTL, ErrUnknownEdge))
	}
	verify := func(keys protocol.Keys) error {
		if v1 {
			var err error
			tok, err = protocol.VerifyBrokerTokenV1(edge, token, keys, now)
			return err
		}
		return tok.Verify(a.Audience(broker), edge, keys)
	}
	keys, cached := a.keys.get(edge, now)
	if !cached {
		var refused bool
		if keys, refused, err = a.lookup(ctx, edge, now); err != nil {
			if refused {
				return fail(err)
			}
			return nil, err
		}
	}
	err = verify(keys)
	if err != nil && cached {
		// Perhaps a key registered since the keys were looked up: look
		// again, once.
		a.keys.drop(edge)
		var refused bool
		if keys, refused, err = a.lookup(ctx, edge, now); err != nil {
			if refused {
				return fail(err)
			}
			return nil, err
		}
		err = verify(keys)
	}
	if err != nil {
		return fail(err)
	}
	s := &Session{Edge: edge, KID: tok.KID, Broker: broker, a: a}
	if err := a.register(s); err != nil {
		return nil, err
	}
	if err := a.o.Store.UseCounter(ctx, edge, tok.KID, tok.Counter); err != nil {
		a.remove(s)
		if !errors.Is(err, ErrReplay) {
			a.keys.drop(edge) // revoked, or gone: the next login looks again
		}
		if errors.Is(err, ErrReplay) || errors.Is(err, ErrRevoked) || errors.Is(err, ErrUnknownEdge) || errors.Is(err, protocol.ErrBadSignature) {
			return fail(err)
		}
		return nil, fmt.Errorf("spend the login counter of edge %s: %w", edge, err)
	}
	if s.Kicked() {
		return nil, fmt.Errorf("edge %s or key %s was revoked during the login: %w", edge, tok.KID, ErrRevoked)
	}
	if v1 {
		a.acceptedV1.Add(1)
	}
	return s, nil
}

// lookup reads edge's keys from the Store (and caches them, see
// Options.KeysTTL). refused says the error is the client's (an unknown or
// revoked edge), not the database's.
func (a *Authenticator) lookup(ctx context.Context, edge string, now time.Time) (keys protocol.Keys, refused bool, err error) {
	a.lookups.Add(1)
	keys, err = a.o.Store.EdgeKeys(ctx, edge)
	if errors.Is(err, ErrUnknownEdge) || errors.Is(err, ErrRevoked) {
		a.negative.add(edge, now.Add(a.o.NegativeTTL))
		return nil, true, err
	}
	if err != nil {
		// The database failing is not the client's fault.
		return nil, false, fmt.Errorf("look up the keys of edge %s: %w", edge, err)
	}
	a.keys.add(edge, keys, now.Add(a.o.KeysTTL))
	return keys, false, nil
}

// Refused logs a refused login (rate-limited); brokers call it for the
// refusals they decide themselves.
func (a *Authenticator) Refused(broker, edge, source string, err error) {
	ok, dropped := a.logs.allow(a.o.Now())
	if !ok {
		return
	}
	attrs := []any{"broker", broker, "edge", edge, "remote", source, "err", err}
	if dropped > 0 {
		attrs = append(attrs, "suppressed", dropped)
	}
	a.log.Warn("refused a broker login", attrs...)
}

func (a *Authenticator) register(s *Session) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.sessions[s.Edge]
	if len(m) >= a.o.MaxSessionsPerEdge {
		for o := range m { // forget sessions whose connection is gone
			if !o.alive() {
				delete(m, o)
			}
		}
	}
	if len(m) >= a.o.MaxSessionsPerEdge {
		return fmt.Errorf("edge %s holds %d sessions already (limit %d): %w", s.Edge, len(m), a.o.MaxSessionsPerEdge, ErrTooManySessions)
	}
	if m == nil {
		m = map[*Session]struct{}{}
		a.sessions[s.Edge] = m
	}
	m[s] = struct{}{}
	return nil
}

func (a *Authenticator) remove(s *Session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if m := a.sessions[s.Edge]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(a.sessions, s.Edge)
		}
	}
}

// Sessions returns how many sessions edge holds on this process.
func (a *Authenticator) Sessions(edge string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.sessions[edge])
}

// Kick closes the sessions of edge on this process: all of them when kid
// is empty, else those that logged in with key kid. It returns how many.
func (a *Authenticator) Kick(edge string, kid protocol.KeyID) int {
	var hit []*Session
	a.mu.Lock()
	for s := range a.sessions[edge] {
		if kid == "" || s.KID == kid {
			hit = append(hit, s)
			delete(a.sessions[edge], s)
		}
	}
	if len(a.sessions[edge]) == 0 {
		delete(a.sessions, edge)
	}
	a.mu.Unlock()
	for _, s := range hit {
		s.kick()
	}
	a.kicked.Add(uint64(len(hit)))
	return len(hit)
}

// Run reads revocations every PollInterval until ctx ends and kicks the
// sessions of what was revoked, on whichever broker holds them. Revoked
// edges also go into the negative cache.
func (a *Authenticator) Run(ctx context.Context) error {
	t := time.NewTicker(a.o.PollInterval)
	defer t.Stop()
	seen := map[int64]time.Time{}
	for ticks := 0; ; ticks++ {
		a.poll(ctx, seen)
		if ticks%30 == 29 {
			a.prune()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (a *Authenticator) poll(ctx context.Context, seen map[int64]time.Time) {
	revs, err := a.o.Store.RecentRevocations(ctx, RevocationWindow)
	if err != nil {
		if ctx.Err() == nil {
			if ok, _ := a.logs.allow(a.o.Now()); ok {
				a.log.Error("could not read revocations; sessions of edges revoked meanwhile stay open until this recovers", "err", err)
			}
		}
		return
	}
	now := a.o.Now()
	for _, r := range revs {
		if _, ok := seen[r.ID]; ok {
			continue
		}
		seen[r.ID] = now
		a.keys.drop(r.Edge)
		if r.KID == "" {
			a.negative.add(r.Edge, now.Add(a.o.NegativeTTL))
		}
		if n := a.Kick(r.Edge, r.KID); n > 0 {
			a.log.Info("closed the broker sessions of a revocation", "edge", r.Edge, "kid", string(r.KID), "sessions", n)
		}
	}
	for id, at := range seen {
		if now.Sub(at) > 2*RevocationWindow {
			delete(seen, id)
		}
	}
}

// prune forgets sessions whose connection ended without a Release. The
// liveness checks (a broker lookup each) run outside the lock, so that
// logins do not wait for them.
func (a *Authenticator) prune() {
	a.mu.Lock()
	var all []*Session
	for _, m := range a.sessions {
		for s := range m {
			all = append(all, s)
		}
	}
	a.mu.Unlock()
	for _, s := range all {
		if !s.alive() {
			a.remove(s)
		}
	}
}

// Stats returns the counters.
func (a *Authenticator) Stats() Stats {
	return Stats{
		Accepted: a.accepted.Load(), AcceptedV1: a.acceptedV1.Load(), Refused: a.refused.Load(), RateLimited: a.rateLimited.Load(),
		NegativeHits: a.negativeHits.Load(), Lookups: a.lookups.Load(), Kicked: a.kicked.Load(),
		LogsDropped: a.logs.droppedTotal(),
	}
}

// Session is one accepted login, held by the broker until its connection
// ends.
type Session struct {
	Edge   string
	KID    protocol.KeyID
	Broker string

	a       *Authenticator
	mu      sync.Mutex
	onKick  func()
	aliveFn func() bool
	kicked  bool
}

// OnKick sets what closes the session's connection. If the session was
// kicked already (a revocation during the login), f runs at once.
func (s *Session) OnKick(f func()) {
	s.mu.Lock()
	s.onKick = f
	kicked := s.kicked
	s.mu.Unlock()
	if kicked && f != nil {
		f()
	}
}

// SetAlive sets how to tell that the connection still exists, for brokers
// that cannot call Release when it ends.
func (s *Session) SetAlive(f func() bool) {
	s.mu.Lock()
	s.aliveFn = f
	s.mu.Unlock()
}

// Kicked reports whether a revocation closed the session.
func (s *Session) Kicked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kicked
}

// Release ends the session: its connection is gone.
func (s *Session) Release() { s.a.remove(s) }

func (s *Session) kick() {
	s.mu.Lock()
	s.kicked = true
	f := s.onKick
	s.mu.Unlock()
	if f != nil {
		f()
	}
}

func (s *Session) alive() bool {
	s.mu.Lock()
	f := s.aliveFn
	s.mu.Unlock()
	return f == nil || f()
}

// hostOf returns the host of a host:port (or the string itself).
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// limiter is a token bucket of failures per source.
type limiter struct {
	burst  float64
	refill time.Duration
	mu     sync.Mutex
	m      map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func (l *limiter) get(src string, now time.Time) *bucket {
	b := l.m[src]
	if b == nil {
		if len(l.m) >= maxSources {
			l.m = map[string]*bucket{}
		}
		b = &bucket{tokens: l.burst, at: now}
		l.m[src] = b
		return b
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+float64(d)/float64(l.refill))
		b.at = now
	}
	return b
}

func (l *limiter) allow(src string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.get(src, now).tokens >= 1
}

func (l *limiter) fail(src string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.get(src, now)
	b.tokens = max(0, b.tokens-1)
}

// keyCache holds edges' keys for Options.KeysTTL. Its methods do nothing
// on a nil cache (a Store whose UseCounter does not check keys).
type keyCache struct {
	mu sync.Mutex
	m  map[string]cachedKeys
}

type cachedKeys struct {
	keys  protocol.Keys
	until time.Time
}

func (c *keyCache) get(edge string, now time.Time) (protocol.Keys, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.m[edge]
	if ok && !now.Before(k.until) {
		delete(c.m, edge)
		return nil, false
	}
	return k.keys, ok
}

func (c *keyCache) add(edge string, keys protocol.Keys, until time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxKeys {
		c.m = map[string]cachedKeys{}
	}
	c.m[edge] = cachedKeys{keys, until}
}

func (c *keyCache) drop(edge string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.m, edge)
	c.mu.Unlock()
}

// expiring is a set of strings with expiry times.
type expiring struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (e *expiring) has(k string, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	until, ok := e.m[k]
	if ok && !now.Before(until) {
		delete(e.m, k)
		return false
	}
	return ok
}

func (e *expiring) add(k string, until time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.m) >= maxNegative {
		e.m = map[string]time.Time{}
	}
	e.m[k] = until
}

// logLimiter is a token bucket of log lines that counts what it drops.
type logLimiter struct {
	burst   float64
	every   time.Duration
	mu      sync.Mutex
	tokens  float64
	at      time.Time
	dropped int    // since the last line logged
	total   uint64 // ever
}

// allow reports whether a line may be logged now and how many were
// dropped since the last one.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.at.IsZero() {
		if d := now.Sub(l.at); d > 0 {
			l.tokens = min(l.burst, l.tokens+float64(d)/float64(l.every))
		}
	}
	l.at = now
	if l.tokens < 1 {
		l.dropped++
		l.total++
		return false, 0
	}
	l.tokens--
	n := l.dropped
	l.dropped = 0
	return true, n
}

func (l *logLimiter) droppedTotal() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
