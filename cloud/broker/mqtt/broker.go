// Package mqtt is the cloud's embedded MQTT broker (mochi-mqtt): with no
// external broker configured, `cloud serve` runs one in-process, so one
// binary plus Postgres is a working cloud.
//
// Edges log in with their edge id as user name and a broker token as
// password: an Ed25519 signature by a registered, unrevoked key of that
// edge over this broker's audience and a counter that works once
// (protocol.BrokerToken), checked by cloud/edgeauth, which also limits
// failed logins and sessions and closes the sessions of revoked edges and
// keys (a kicked session's will is dropped). Each edge
// must use the client id "outpost-edge-{edge}" and is limited to its own
// topics: it may publish to outpost/v1/edge/{edge}/seg, .../hello and
// .../status, and subscribe to .../rcpt and .../cmd. A will is held to the
// same ACL (mochi publishes wills unchecked): one on a topic the edge may
// not publish to is dropped at login. The cloud's own ingest clients log
// in as an internal user with a random per-process password and may use
// every topic.
//
// What a connection can make the broker hold is bounded (limits.go): a
// packet is at most MaxPacketBytes (advertised in the MQTT 5 CONNACK), and
// before authentication a connection gets ConnectTimeout to send a CONNECT
// of at most MaxConnectBytes, checked from its fixed header before mochi
// allocates anything. With Options.TLS the edges' listener is TLS only
// (ServerTLS loads it, optionally requiring client certificates), and the
// cloud's own clients use a plain listener on 127.0.0.1 (InternalAddr).
// An edge that leaves more than MaxEdgeInflight receipts unacknowledged is
// disconnected (slow.go), so a stalled edge costs the broker a bounded
// amount of memory and never holds up the receipts of the others. The
// other way, the broker stops reading segments from edges while the
// cloud's ingest holds Options.MaxIngestHeld unacknowledged (hold.go), so
// a fleet that reconnects with backlogs costs the cloud a bounded amount
// of memory too, whatever its size: back-pressure, not drops.
package mqtt

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-edge/outpost/cloud/edgeauth"
	"github.com/outpost-edge/outpost/internal/mochiutil"
	"github.com/outpost-edge/outpost/internal/tlsconf"
	"github.com/outpost-edge/outpost/protocol"
)

// InternalUser is the user name of the cloud's own clients
// (protocol.InternalUser, the same on both embedded brokers).
const InternalUser = protocol.InternalUser

// EdgeClientPrefix starts every edge's MQTT client id.
const EdgeClientPrefix = "outpost-edge-"

// Options configure a Broker.
type Options struct {
	Addr string // listen address for edges, such as ":18830"
	// TLS, when set, serves the edges' listener over TLS (see ServerTLS),
	// and adds a plain listener on 127.0.0.1 for the cloud's own clients
	// (InternalAddr).
	TLS *tls.Config
	// Auth checks edge logins and kicks sessions on revocation (shared
	// with the NATS server of the same process). Without it, Keys is used
	// with an in-memory edgeauth.KeysStore: counters are not shared with
	// other processes and nothing is revoked.
	Auth *edgeauth.Authenticator
	// Keys returns the active keys of an edge (an error for an unknown or
	// revoked edge); used only without Auth.
	Keys func(ctx context.Context, edge string) (protocol.Keys, error)
	// ConnectTimeout is how long a new connection has to finish its TLS
	// handshake and send its CONNECT; default 10s. mochi sets no deadline
	// before the CONNECT, and replaces this one with the keepalive after.
	ConnectTimeout time.Duration
	// MaxIngestHeld is how many segments the cloud's own clients may hold
	// unacknowledged before the broker stops reading segments from edges
	// (hold.go); default DefaultMaxIngestHeld.
	MaxIngestHeld int
	Now           func() time.Time
	Logger        *slog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	srv          *mochi.Server
	addr         string
	internalAddr string
	password     string
	log          *slog.Logger
	auth         *edgeauth.Authenticator
	sessions     sync.Map // *mochi.Client -> *edgeauth.Session
	slowEdges    atomic.Uint64
	hold         *holdHook
}

// Start starts the broker and its listener.
func Start(opts Options) (*Broker, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxIngestHeld <= 0 {
		opts.MaxIngestHeld = DefaultMaxIngestHeld
	}
	auth, err := authenticator(opts)
	if err != nil {
		return nil, err
	}
	pw := make([]byte, 24)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	log := opts.Logger.With("component", "broker")
	b := &Broker{password: hex.EncodeToString(pw), log: log, auth: auth}
	// mochi logs every connection at info; keep its own log to warnings,
	// without its line per refused login (edgeauth logs those,
	// rate-limited). The logger is given once, to New: mochi hands it to
	// its hooks there, so replacing srv.Log afterwards would leave them on
	// another logger.
	mlog := slog.New(levelHandler{slog.LevelWarn, quietRefusals{log.With("lib", "mochi").Handler()}})
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxPacketBytes
	b.srv = mochi.New(&mochi.Options{InlineClient: true, Logger: mlog, Capabilities: caps})
	if err := b.srv.AddHook(&authHook{b: b, o: opts}, nil); err != nil {
		return nil, err
	}
	if err := b.srv.AddHook(&willHook{log: log}, nil); err != nil {
		return nil, err
	}
	if err := b.srv.AddHook(&limitHook{}, nil); err != nil {
		return nil, err
	}
	if err := b.srv.AddHook(&slowHook{b: b}, nil); err != nil {
		return nil, err
	}
	b.hold = newHoldHook(b, opts.MaxIngestHeld)
	if err := b.srv.AddHook(b.hold, nil); err != nil {
		return nil, err
	}
	if b.addr, err = b.listen("edges", opts.Addr, opts.TLS, opts.ConnectTimeout); err != nil {
		return nil, err
	}
	b.internalAddr = b.addr
	if opts.TLS != nil {
		// The cloud's own ingest clients, in this process, connect over
		// loopback without TLS (they have no client certificate).
		if b.internalAddr, err = b.listen("internal", "127.0.0.1:0", nil, opts.ConnectTimeout); err != nil {
			return nil, err
		}
	}
	// mochi's Serve starts the listeners' goroutines and returns.
	if err := b.srv.Serve(); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("broker: serve: %w", err)
	}
	log.Info("embedded MQTT broker listening", "addr", b.addr)
	return b, nil
}

func (b *Broker) listen(id, addr string, conf *tls.Config, timeout time.Duration) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("broker: listen on %s: %w", addr, err)
	}
	if conf != nil {
		ln = tls.NewListener(ln, conf)
	}
	l := mochiutil.NewListener(id, limitListener{ln, timeout})
	if err := b.srv.AddListener(l); err != nil {
		_ = ln.Close()
		return "", fmt.Errorf("broker: listen on %s: %w", addr, err)
	}
	return l.Address(), nil
}

// Addr is the edges' listener's address (host:port).
func (b *Broker) Addr() string { return b.addr }

// InternalAddr is where the cloud's own clients connect: Addr, or with
// TLS a plain listener on 127.0.0.1.
func (b *Broker) InternalAddr() string { return b.internalAddr }

// ServerTLS loads the TLS configuration of the edges' listener: a
// certificate and its key (PEM files), and when clientCAFile is not empty,
// the CAs that must have signed every edge's client certificate (a client
// without one is refused in the handshake). The broker token is checked
// either way: the certificate proves the edge's host, the token its key.
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	return tlsconf.Server(certFile, keyFile, clientCAFile)
}

// InternalPassword is the per-process password of InternalUser.
func (b *Broker) InternalPassword() string { return b.password }

// closeTimeout bounds Close: a connection still in its CONNECT ends by
// Options.ConnectTimeout (10s by default) at the latest.
const closeTimeout = 30 * time.Second

// Close stops the broker: it stops accepting, disconnects every client and
// waits for them, then closes mochi, without mochi's Close deadlock
// (mochi-mqtt/server#488; internal/mochiutil, shared with the edge's
// intake).
func (b *Broker) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return mochiutil.Shutdown(ctx, b.srv, []string{"edges", "internal"}, nil)
}

type authHook struct {
	mochi.HookBase
	b *Broker
	o Options
}

func (h *authHook) ID() string { return "outpost-edge-auth" }

func (h *authHook) Provides(x byte) bool {
	return bytes.Contains([]byte{mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnDisconnect}, []byte{x})
}

func (h *authHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	if user == InternalUser {
		return subtle.ConstantTimeCompare(pk.Connect.Password, []byte(h.b.password)) == 1
	}
	if cl.ID != EdgeClientPrefix+user {
		h.b.auth.Refused(protocol.BrokerMQTT, user, cl.Net.Remote,
			fmt.Errorf("client id %q, want %q", cl.ID, EdgeClientPrefix+user))
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := h.b.auth.Login(ctx, protocol.BrokerMQTT, user, string(pk.Connect.Password), cl.Net.Remote)
	if err != nil {
		return false
	}
	h.b.sessions.Store(cl, s)
	s.OnKick(func() { h.b.kick(cl) })
	return true
}

func (h *authHook) OnDisconnect(cl *mochi.Client, _ error, _ bool) {
	if s, ok := h.b.sessions.LoadAndDelete(cl); ok {
		s.(*edgeauth.Session).Release()
	}
}

func (h *authHook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	return allowed(string(cl.Properties.Username), topic, write)
}

// allowed is the ACL: what user may publish (write) or subscribe to.
func allowed(user, topic string, write bool) bool {
	if user == InternalUser {
		return true
	}
	t, err := protocol.ParseTopic(topic)
	if err != nil || t.Scope != protocol.ScopeEdge || t.ID != user {
		return false
	}
	if write {
		return t.Kind == protocol.KindSegment || t.Kind == protocol.KindHello || t.Kind == protocol.KindStatus
	}
	return t.Kind == protocol.KindReceipt || t.Kind == protocol.KindCommand
}

// levelHandler drops records below a level.
type levelHandler struct {
	min slog.Level
	slog.Handler
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h levelHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return levelHandler{h.min, h.Handler.WithAttrs(a)}
}

func (h levelHandler) WithGroup(n string) slog.Handler {
	return levelHandler{h.min, h.Handler.WithGroup(n)}
}
