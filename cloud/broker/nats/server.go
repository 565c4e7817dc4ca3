// Package nats is the cloud's embedded NATS server (nats-server with
// JetStream): with --nats-embedded, `cloud serve` runs one in-process, as
// cloud/broker/mqtt does for MQTT.
//
// Edges log in with their edge id as user name and a broker token as
// password (protocol.BrokerToken, checked by cloud/edgeauth: one use, this
// broker's audience, limits on failures and sessions, and sessions closed
// when the edge or key is revoked). Each edge is put in an account of its
// own (EdgeAccount) that imports only its own subjects from the global
// account, where the cloud and JetStream are, and gets EdgePermissions
// there: its own subjects and its own reply inboxes. So the replies to an
// edge's requests (JetStream PubAcks, hello receipts) reach only that edge,
// whatever reply subject it asks for. The cloud's own clients log in as
// protocol.InternalUser with a random per-process password and get
// InternalPermissions: no purge, no delete, no JetStream call ingest does
// not make.
package nats

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/outpost-edge/outpost/cloud/edgeauth"
	"github.com/outpost-edge/outpost/protocol"
)

// EdgePermissions are what an edge may do on NATS: publish its own
// segments, hellos and status, and subscribe to its own receipts,
// commands and reply inboxes (JetStream PubAcks and hello replies).
func EdgePermissions(edge string) *server.Permissions {
	subj := func(kind protocol.Kind) string { s, _ := protocol.EdgeSubject(edge, kind); return s }
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			subj(protocol.KindSegment), subj(protocol.KindHello), subj(protocol.KindStatus),
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			subj(protocol.KindReceipt), subj(protocol.KindCommand), protocol.NATSInboxPrefix(edge) + ".>",
		}},
	}
}

// InternalPermissions are what the cloud's own user (protocol.InternalUser)
// may publish on the embedded server: receipts and commands to edges,
// replies to edges' requests (hellos), and only the JetStream API calls
// that cloud ingest makes (stream and consumer info and create, pulls and
// acks). Purging or deleting a stream, a message or a consumer, and any
// other subject, are refused: a reply subject an edge chose can never make
// the cloud's user reach them, even if a bug in the consumer sent a reply
// there (it does not: cloud/ingest/nats answers a hello only to the edge's
// own inbox).
func InternalPermissions() *server.Permissions {
	return &server.Permissions{Publish: &server.SubjectPermission{
		Allow: []string{
			"outpost.v1.edge.*." + string(protocol.KindReceipt),
			"outpost.v1.edge.*." + string(protocol.KindCommand),
			protocol.NATSInboxFilter,
			// Replies to edges' requests: the server maps each back to the
			// requester's own account (see EdgeAccount).
			"_R_.>",
			"$JS.API.INFO",
			"$JS.API.STREAM.INFO.*",
			"$JS.API.STREAM.CREATE.*",
			"$JS.API.CONSUMER.INFO.*.*",
			"$JS.API.CONSUMER.CREATE.*.>",
			"$JS.API.CONSUMER.DURABLE.CREATE.*.*",
			"$JS.API.CONSUMER.MSG.NEXT.*.*",
			"$JS.ACK.>",
		},
		// Also denied by the allow list; named so that a widened allow
		// list cannot let them through.
		Deny: []string{
			"$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.MSG.DELETE.>",
			"$JS.API.STREAM.UPDATE.>", "$JS.API.CONSUMER.DELETE.>",
		},
	}}
}

// Options configure the embedded server.
type Options struct {
	Addr     string // host:port edges connect to, such as ":14222" (port 0 picks one)
	StoreDir string // JetStream's file storage; required
	TLS      *tls.Config
	// Auth checks edge logins and kicks sessions on revocation (shared
	// with the MQTT broker of the same process). Without it, Keys is used
	// with an in-memory edgeauth.KeysStore: counters are not shared with
	// other processes and nothing is revoked.
	Auth *edgeauth.Authenticator
	// Keys returns the active keys of an edge (an error for an unknown or
	// revoked edge); used only without Auth.
	Keys func(ctx context.Context, edge string) (protocol.Keys, error)
	// AuthTimeout is how long a connection may take to log in before the
	// server closes it; default DefaultAuthTimeout.
	AuthTimeout time.Duration
	Now         func() time.Time
	Logger      *slog.Logger
}

// Bounds on what a connection, before and after it logs in, can make the
// server hold. An unauthenticated connection can send only CONNECT (any
// other operation first is an authorization violation), of at most
// MaxControlLine bytes, for at most AuthTimeout: about 4 KiB for a few
// seconds, whatever it sends. After login, one message is at most
// protocol.NATSMaxPayload (advertised as max_payload), and what the server
// buffers for a client that does not read is at most MaxPending before it
// is cut off as a slow consumer.
const (
	// MaxControlLine caps a protocol line (CONNECT with its credentials,
	// PUB and SUB with their subjects): the server closes a connection whose
	// line grows past it. Broker tokens and Outpost subjects are far below.
	MaxControlLine = 4096
	// MaxPending caps the bytes the server queues for one client.
	MaxPending = 64 << 20
	// DefaultAuthTimeout is as long as the edge login's key lookup may take.
	DefaultAuthTimeout = 5 * time.Second
)

// Broker is a running embedded nats-server with JetStream.
type Broker struct {
	srv      *server.Server
	password string
	log      *slog.Logger
	auth     *edgeauth.Authenticator

	accMu sync.Mutex // serializes making an edge's account and its imports
}

// Start starts nats-server in this process, with JetStream on file
// storage under StoreDir, and edge authentication: an edge logs in with its
// id as user name and a broker token as password, and gets
// EdgePermissions. The cloud's own clients log in as protocol.InternalUser
// with InternalPassword.
func Start(o Options) (*Broker, error) {
	if (o.Auth == nil && o.Keys == nil) || o.StoreDir == "" {
		return nil, errors.New("nats server: Auth (or Keys) and StoreDir are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.AuthTimeout <= 0 {
		o.AuthTimeout = DefaultAuthTimeout
	}
	host, portStr, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("nats server: listen address %q: %w", o.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats server: listen address %q: bad port", o.Addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	pw := make([]byte, 24)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	log := o.Logger.With("component", "nats-server")
	auth := o.Auth
	if auth == nil {
		if auth, err = edgeauth.New(edgeauth.Options{Store: edgeauth.KeysStore(o.Keys), Now: o.Now, Logger: o.Logger}); err != nil {
			return nil, err
		}
	}
	s := &Broker{password: hex.EncodeToString(pw), log: log, auth: auth}
	opts := &server.Options{
		ServerName: "outpost-cloud",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		// A segment of protocol.MaxSegmentBytes and its headers must fit.
		MaxPayload:     protocol.NATSMaxPayload,
		MaxControlLine: MaxControlLine,
		MaxPending:     MaxPending,
		AuthTimeout:    o.AuthTimeout.Seconds(),
		// The cloud handles its own signals (two-stage shutdown).
		NoSigs:                     true,
		CustomClientAuthentication: confined{s, &edgeAuth{s: s, o: o}},
		// nats-server sends a client its first PING about 2 s after the
		// connection opens, and nats.go, which has sent CONNECT and PING
		// and reads the answer expecting PONG, ends the handshake on it
		// ("nats: expected 'PONG', got 'PING'"). A login is checked on the
		// client's read loop (signature, then the counter spent in
		// Postgres), so in a storm, where the counter's UPDATE waits behind
		// commits, a login slower than 2 s failed however long the client
		// would have waited, and the client tried again with a new login.
		// The first PING comes after PingInterval instead; the client's
		// own connect timeout decides how long a login may take.
		DisableShortFirstPing: true,
	}
	if o.TLS != nil {
		opts.TLSConfig = o.TLS
		opts.TLS = true
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	if err := exportEdgeSubjects(srv.GlobalAccount()); err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	srv.SetLoggerV2(slogLogger{log}, false, false, false)
	s.srv = srv // before Start: Check uses it for the first login
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats server: not ready to listen on %s (is the port taken? see the log)", o.Addr)
	}
	log.Info("embedded NATS server with JetStream listening", "addr", s.Addr(), "store", o.StoreDir)
	return s, nil
}

// Addr is the client listener's address (host:port).
func (s *Broker) Addr() string { return s.srv.Addr().String() }

// ClientURL is a URL for clients on this host.
func (s *Broker) ClientURL() string { return s.srv.ClientURL() }

// InternalPassword is the per-process password of protocol.InternalUser.
func (s *Broker) InternalPassword() string { return s.password }

// InProcessConn connects to the server without the network
// (nats.InProcessServer).
func (s *Broker) InProcessConn() (net.Conn, error) { return s.srv.InProcessConn() }

// Close shuts the server down and waits for it.
func (s *Broker) Close() error {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	return nil
}

type edgeAuth struct {
	s *Broker
	o Options
}

// Check implements server.Authentication.
func (a *edgeAuth) Check(c server.ClientAuthentication) bool {
	co := c.GetOpts()
	user := co.Username
	if user == protocol.InternalUser {
		if subtle.ConstantTimeCompare([]byte(co.Password), []byte(a.s.password)) != 1 {
			a.s.auth.Refused(protocol.BrokerNATS, user, addr(c), errors.New("wrong password for the cloud's internal user"))
			return false
		}
		c.RegisterUser(&server.User{Username: user})
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := a.s.auth.Login(ctx, protocol.BrokerNATS, user, co.Password, addr(c))
	if err != nil {
		return false
	}
	srv, cid := a.s.srv, c.GetID()
	// nats-server has no callback when a connection ends: the session asks
	// whether the connection is still there when it needs to know.
	sess.SetAlive(func() bool {
		cz, err := srv.Connz(&server.ConnzOptions{CID: cid})
		return err == nil && len(cz.Conns) > 0
	})
	sess.OnKick(func() { _ = srv.DisconnectClientByID(cid) })
	c.RegisterUser(&server.User{Username: user, Permissions: EdgePermissions(user)})
	return true
}

// confined puts every client the check lets in where it belongs: the
// cloud's internal user in the global account (where JetStream is) with
// InternalPermissions, and each edge in an account of its own (EdgeAccount)
// with its EdgePermissions.
type confined struct {
	s *Broker
	server.Authentication
}

func (a confined) Check(c server.ClientAuthentication) bool {
	return a.Authentication.Check(&confinedClient{ClientAuthentication: c, s: a.s})
}

type confinedClient struct {
	server.ClientAuthentication
	s *Broker
}

func (c *confinedClient) RegisterUser(u *server.User) {
	if u.Username == protocol.InternalUser {
		u.Permissions, u.Account = InternalPermissions(), nil
	} else if acc, err := c.s.edgeAccount(u.Username); err != nil {
		c.s.log.Error("could not make a NATS account for an edge; it gets its permissions but shares the global account", "edge", u.Username, "err", err)
	} else {
		u.Account = acc
	}
	c.ClientAuthentication.RegisterUser(u)
}

// EdgeAccount is the name of an edge's own account on the embedded server.
//
// Each edge is alone in its account, which imports from the global account
// (the cloud's, with JetStream) only that edge's subjects: its seg, hello
// and status as services, its rcpt and cmd as streams. So every reply an
// edge's request gets (a JetStream PubAck, a hello's receipt) is delivered
// in the edge's own account, to whatever reply subject it chose: it can
// reach no one but the edge itself. Permissions alone cannot do that: they
// limit the subjects a client publishes to and subscribes on, not the
// reply subjects it asks others to answer on. An account is made at the
// edge's first login and kept while the server runs (about 20 KB each).
func EdgeAccount(edge string) string { return "outpost-edge-" + edge }

func exportEdgeSubjects(g *server.Account) error {
	for _, k := range []protocol.Kind{protocol.KindSegment, protocol.KindHello, protocol.KindStatus} {
		if err := g.AddServiceExport("outpost.v1.edge.*."+string(k), nil); err != nil {
			return fmt.Errorf("export %s: %w", k, err)
		}
	}
	for _, k := range []protocol.Kind{protocol.KindReceipt, protocol.KindCommand} {
		if err := g.AddStreamExport("outpost.v1.edge.*."+string(k), nil); err != nil {
			return fmt.Errorf("export %s: %w", k, err)
		}
	}
	return nil
}

// edgeAccount returns the edge's account, made with its imports the first
// time the edge logs in.
func (s *Broker) edgeAccount(edge string) (*server.Account, error) {
	s.accMu.Lock()
	defer s.accMu.Unlock()
	acc, isNew := s.srv.LookupOrRegisterAccount(EdgeAccount(edge))
	if !isNew {
		return acc, nil
	}
	g := s.srv.GlobalAccount()
	for _, k := range []protocol.Kind{protocol.KindSegment, protocol.KindHello, protocol.KindStatus} {
		subj, err := protocol.EdgeSubject(edge, k)
		if err == nil {
			err = acc.AddServiceImport(g, subj, subj)
		}
		if err != nil {
			return nil, fmt.Errorf("import %s for edge %s: %w", k, edge, err)
		}
	}
	for _, k := range []protocol.Kind{protocol.KindReceipt, protocol.KindCommand} {
		subj, err := protocol.EdgeSubject(edge, k)
		if err == nil {
			err = acc.AddStreamImport(g, subj, "")
		}
		if err != nil {
			return nil, fmt.Errorf("import %s for edge %s: %w", k, edge, err)
		}
	}
	return acc, nil
}

func addr(c server.ClientAuthentication) string {
	if a := c.RemoteAddress(); a != nil {
		return a.String()
	}
	return ""
}

// slogLogger adapts slog to nats-server's Logger. Notices are info: the
// server says little at that level once it runs.
type slogLogger struct{ l *slog.Logger }

func (l slogLogger) Noticef(f string, v ...any) { l.l.Info(fmt.Sprintf(f, v...)) }
func (l slogLogger) Warnf(f string, v ...any)   { l.l.Warn(fmt.Sprintf(f, v...)) }
func (l slogLogger) Fatalf(f string, v ...any)  { l.l.Error(fmt.Sprintf(f, v...)) }
func (l slogLogger) Errorf(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	if strings.Contains(msg, server.ErrAuthentication.Error()) {
		// One per refused login: edgeauth logs those with the reason,
		// rate-limited, so that a CONNECT flood is not a log flood.
		l.l.Debug(msg)
		return
	}
	l.l.Error(msg)
}
func (l slogLogger) Debugf(f string, v ...any) { l.l.Debug(fmt.Sprintf(f, v...)) }
func (l slogLogger) Tracef(f string, v ...any) { l.l.Debug(fmt.Sprintf(f, v...)) }
