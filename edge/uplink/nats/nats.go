// Package nats is the uplink's NATS transport (nats.go and its jetstream
// package).
//
//   - Segments are published through JetStream to outpost.v1.edge.{edge}.seg
//     with Nats-Msg-Id set to the id the uplink gives
//     (protocol.Segment.MsgID: {edge}:{epoch}:{first}-{last}~{nack rewinds})
//     followed by ":" and a secret of this transport, 128 random bits drawn
//     in New. The server drops a resend inside its duplicate window while
//     the first copy is in the stream (after a reconnect or an ack
//     timeout, say: the cloud is only behind), and a resend after a nack
//     (the cloud consumed and refused the first copy) has a new id, so the
//     window never swallows the resend the cloud asked for. The
//     secret matters because JetStream's duplicate window is one for the
//     whole stream: without it, another edge could publish this edge's next
//     id first and have the real segment dropped. Nothing depends on the
//     window: the cloud's watermark is the real dedup.
//   - The PubAcks are counted in publish order (uplink.Accepter), so the
//     uplink's ack timeout starts when JetStream stored a segment.
//   - A hello is a request on outpost.v1.edge.{edge}.hello; the reply, the
//     cloud's signed receipt, is handed to onReply like any other reply.
//   - Receipts and nacks arrive on outpost.v1.edge.{edge}.rcpt, a core NATS
//     subscription: nothing is buffered for an edge that is away.
//
// Each session is one connection with reconnects turned off: when it drops,
// Lost is closed and the uplink connects again and says hello, so it always
// resumes from the cloud's watermark and never from receipts it may have
// missed while it was away.
//
// Credentials: by default the edge logs in with its edge id as user name and
// a fresh broker token for NATS (uplink.Tokens: one use, no clock needed)
// as password, which the cloud's embedded nats-server checks. For a NATS
// deployment of your own,
// give a user and password, a token, an nkey seed, or a .creds file, and TLS
// settings. Replies come to inboxes under protocol.NATSInboxPrefix(edge), so server
// permissions can confine each edge to its own subjects (see
// docs/TRANSPORTS.md).
package nats

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/edge/uplink"
	"github.com/outpost-edge/outpost/protocol"
)

// Options configure the transport. Of Token, NKeySeedFile, CredsFile and
// User/Password at most one kind may be set; with none, the edge logs in
// with its id and a broker token signed by Signer.
type Options struct {
	URL  string // nats://host:4222, tls://host:4222; several separated by commas
	Edge string
	// Tokens makes the broker tokens when no other credential is set
	// (*uplink.Tokens, with the counter file and the cloud's key id).
	Tokens uplink.TokenSource
	// Signer is used without Tokens: an in-memory uplink.Tokens with no
	// cloud key id in the audience (for tests).
	Signer *protocol.Signer

	User         string // default: the edge id
	Password     string // a static password instead of a broker token
	Token        string
	NKeySeedFile string
	CredsFile    string // a JWT and nkey seed (.creds)

	TLS      *tls.Config // takes precedence over the file settings below
	CAFile   string      // PEM roots to verify the server with
	CertFile string      // client certificate (PEM)
	KeyFile  string

	ConnectTimeout time.Duration // default 10s
	RequestTimeout time.Duration // wait for a hello's reply; default 10s
	PublishTimeout time.Duration // wait for a JetStream PubAck before calling the session lost; default 30s
	// DuplicateWindow is the stream's duplicate window: a publish with a
	// message id JetStream stored less than this long ago is dropped, so
	// the uplink does not resend a segment with the same id before it has
	// passed (uplink.Deduplicator). Default DefaultDuplicateWindow; a
	// window set longer than the stream's only delays a resend, a shorter
	// one wastes it (the doubling ack timeout sends it again later).
	DuplicateWindow time.Duration
	// OnCommand, when set, is given every message on the edge's own
	// command subject (outpost.v1.edge.{edge}.cmd, a core subscription made
	// in every session before the hello), in arrival order, from the
	// subscription's goroutine: it must not block. The bytes are untrusted
	// (ota.CommandGate checks them).
	OnCommand func(msg []byte)
	Now       func() time.Time
	Logger    *slog.Logger
}

// Transport implements uplink.Transport over NATS JetStream.
type Transport struct {
	o                             Options
	log                           *slog.Logger
	auth                          []natsgo.Option
	tokens                        bool // logs in with broker tokens
	segSubj, helloSubj, rcpt, cmd string

	// idSecret ends every Nats-Msg-Id this transport sends (see the
	// package doc).
	idSecret string

	mu      sync.Mutex
	nc      *natsgo.Conn
	js      jetstream.JetStream
	ended   *uplink.Ended
	onReply func([]byte)
	acks    *pubAcks
	wg      sync.WaitGroup // the session's PubAck watcher
	// accCh is signalled when a session's PubAck count moves (Accepter).
	accCh chan struct{}
}

var (
	_ uplink.Transport    = (*Transport)(nil)
	_ uplink.Accepter     = (*Transport)(nil)
	_ uplink.Deduplicator = (*Transport)(nil)
)

// pubAcks is a session's publishes whose PubAck has not come, oldest
// first, and how many came before them: one watcher per session waits for
// the oldest (publishAsync's error handler ends the session on an error,
// so the watcher only counts what JetStream took).
type pubAcks struct {
	mu       sync.Mutex
	queue    []jetstream.PubAckFuture
	more     chan struct{} // capacity 1
	accepted uint64
}

func (p *pubAcks) add(f jetstream.PubAckFuture) {
	p.mu.Lock()
	p.queue = append(p.queue, f)
	p.mu.Unlock()
	select {
	case p.more <- struct{}{}:
	default:
	}
}

func (p *pubAcks) oldest() (jetstream.PubAckFuture, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return nil, false
	}
	return p.queue[0], true
}

// watchAcks counts the session's PubAcks in publish order until the
// session ends or a publish fails.
func (t *Transport) watchAcks(p *pubAcks, ended *uplink.Ended) {
	for {
		f, ok := p.oldest()
		if !ok {
			select {
			case <-p.more:
				continue
			case <-ended.Done():
				return
			}
		}
		select {
		case <-f.Ok():
			p.mu.Lock()
			p.queue[0] = nil
			p.queue = p.queue[1:]
			p.accepted++
			p.mu.Unlock()
			select {
			case t.accCh <- struct{}{}:
			default:
			}
		case <-f.Err():
			return // publishFailed ends the session
		case <-ended.Done():
			return
		}
	}
}

// Accepted is how many of the session's segment publishes JetStream has
// acknowledged, in publish order (uplink.Accepter): a PubAck means the
// segment is stored in the stream (or was there already, under the same
// Nats-Msg-Id), so the uplink's ack timeout measures the cloud from it.
func (t *Transport) Accepted() uint64 {
	t.mu.Lock()
	p := t.acks
	t.mu.Unlock()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// AcceptedChanged receives after Accepted moves.
func (t *Transport) AcceptedChanged() <-chan struct{} { return t.accCh }

// DuplicateWindow is Options.DuplicateWindow (uplink.Deduplicator).
func (t *Transport) DuplicateWindow() time.Duration { return t.o.DuplicateWindow }

// Sentinel errors.
var (
	// ErrNotConnected is returned by Hello and Publish outside a session.
	ErrNotConnected = errors.New("nats uplink: not connected")
	// ErrTooLarge is returned by Publish for a segment the server's
	// max_payload cannot carry; lower the edge's --segment-bytes.
	ErrTooLarge = errors.New("nats uplink: segment exceeds the server's max_payload")
)

// DefaultDuplicateWindow is Options.DuplicateWindow's default: the
// duplicate window of the stream the cloud creates (cloud/ingest/nats
// DefaultDuplicates).
const DefaultDuplicateWindow = 2 * time.Minute

// headerRoom is what a segment's message adds to its payload: the
// Nats-Msg-Id header and the protocol line.
const headerRoom = 256

// New checks opts and returns a transport.
func New(opts Options) (*Transport, error) {
	if opts.URL == "" {
		return nil, errors.New("nats uplink: a server URL is required")
	}
	seg, err := protocol.EdgeSubject(opts.Edge, protocol.KindSegment)
	if err != nil {
		return nil, fmt.Errorf("nats uplink: %w", err)
	}
	hello, _ := protocol.EdgeSubject(opts.Edge, protocol.KindHello)
	rcpt, _ := protocol.EdgeSubject(opts.Edge, protocol.KindReceipt)
	cmd, _ := protocol.EdgeSubject(opts.Edge, protocol.KindCommand)
	kinds := 0
	for _, set := range []bool{opts.Token != "", opts.NKeySeedFile != "", opts.CredsFile != "", opts.Password != ""} {
		if set {
			kinds++
		}
	}
	if kinds > 1 {
		return nil, errors.New("nats uplink: give only one of a password, a token, an nkey seed or a creds file")
	}
	if kinds == 0 && opts.Tokens == nil {
		if opts.Signer == nil {
			return nil, errors.New("nats uplink: need the edge key (for a broker token) or a NATS credential")
		}
		opts.Tokens, _ = uplink.OpenTokens(uplink.TokenOptions{Signer: opts.Signer, Edge: opts.Edge, Now: opts.Now})
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = 30 * time.Second
	}
	if opts.DuplicateWindow <= 0 {
		opts.DuplicateWindow = DefaultDuplicateWindow
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("nats uplink: message id secret: %w", err)
	}
	t := &Transport{o: opts, log: opts.Logger.With("component", "uplink-nats"), segSubj: seg, helloSubj: hello, rcpt: rcpt, cmd: cmd,
		idSecret: hex.EncodeToString(secret), accCh: make(chan struct{}, 1)}
	user := opts.User
	if user == "" {
		user = opts.Edge
	}
	switch {
	case opts.Token != "":
		t.auth = append(t.auth, natsgo.Token(opts.Token))
	case opts.NKeySeedFile != "":
		o, err := natsgo.NkeyOptionFromSeed(opts.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats uplink: nkey seed %s: %w", opts.NKeySeedFile, err)
		}
		t.auth = append(t.auth, o)
	case opts.CredsFile != "":
		t.auth = append(t.auth, natsgo.UserCredentials(opts.CredsFile))
	case opts.Password != "":
		t.auth = append(t.auth, natsgo.UserInfo(user, opts.Password))
	default:
		// A fresh token at every connect: each works once.
		t.tokens = true
		t.auth = append(t.auth, natsgo.UserInfoHandler(func() (string, string) {
			tok, err := opts.Tokens.Token(protocol.BrokerNATS)
			if err != nil {
				t.log.Error("nats uplink: cannot make a broker token", "err", err)
			}
			return user, tok
		}))
	}
	switch {
	case opts.TLS != nil:
		t.auth = append(t.auth, natsgo.Secure(opts.TLS))
	default:
		if opts.CAFile != "" {
			t.auth = append(t.auth, natsgo.RootCAs(opts.CAFile))
		}
		if opts.CertFile != "" || opts.KeyFile != "" {
			if opts.CertFile == "" || opts.KeyFile == "" {
				return nil, errors.New("nats uplink: a client certificate needs both the certificate and the key file")
			}
			t.auth = append(t.auth, natsgo.ClientCert(opts.CertFile, opts.KeyFile))
		}
	}
	return t, nil
}

// refusal says what a refused login means.
func (t *Transport) refusal() string {
	if tk, ok := t.o.Tokens.(*uplink.Tokens); ok && t.tokens {
		return tk.Refusal(protocol.BrokerNATS)
	}
	return "the server refused the configured NATS credentials"
}

// Connect opens a connection, without reconnects, and subscribes to the
// receipt subject, and to the command subject when OnCommand is set.
func (t *Transport) Connect(ctx context.Context, onReply func([]byte)) error {
	ended := uplink.NewEnded()
	opts := append([]natsgo.Option{
		natsgo.Name("outpost-edge-" + t.o.Edge),
		natsgo.CustomInboxPrefix(protocol.NATSInboxPrefix(t.o.Edge)),
		natsgo.NoReconnect(),
		natsgo.Timeout(t.o.ConnectTimeout),
		natsgo.PingInterval(20 * time.Second),
		natsgo.MaxPingsOutstanding(3),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if err != nil { // nil when the uplink closed it
				t.log.Warn("nats uplink connection lost", "err", err)
			}
			ended.End()
		}),
		natsgo.ClosedHandler(func(*natsgo.Conn) { ended.End() }),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			// Permission violations and slow consumer reports land here.
			t.log.Warn("nats uplink: server reported an error", "err", err)
		}),
	}, t.auth...)

	type result struct {
		nc  *natsgo.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := natsgo.Connect(t.o.URL, opts...)
		done <- result{nc, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return ctx.Err()
	}
	if r.err != nil {
		if errors.Is(r.err, natsgo.ErrAuthorization) {
			return fmt.Errorf("connect to %s: %w: %s", t.o.URL, r.err, t.refusal())
		}
		return fmt.Errorf("connect to %s: %w", t.o.URL, r.err)
	}
	nc := r.nc
	if _, err := nc.Subscribe(t.rcpt, func(m *natsgo.Msg) { onReply(m.Data) }); err != nil {
		nc.Close()
		return fmt.Errorf("subscribe %s: %w", t.rcpt, err)
	}
	if on := t.o.OnCommand; on != nil {
		if _, err := nc.Subscribe(t.cmd, func(m *natsgo.Msg) { on(m.Data) }); err != nil {
			nc.Close()
			return fmt.Errorf("subscribe %s: %w", t.cmd, err)
		}
	}
	// The round trip makes sure the subscriptions are in place (and
	// allowed) before the hello that asks for a receipt (and commands) on
	// them.
	if err := nc.FlushTimeout(t.o.ConnectTimeout); err != nil {
		nc.Close()
		return fmt.Errorf("subscribe %s: %w", t.rcpt, err)
	}
	if err := nc.LastError(); err != nil {
		nc.Close()
		return fmt.Errorf("subscribe %s: %w", t.rcpt, err)
	}
	// One handler per session owns every publish's outcome: no goroutine
	// waits on each segment's future.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(t.o.PublishTimeout),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *natsgo.Msg, err error) { t.publishFailed(ended, m, err) }))
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	acks := &pubAcks{more: make(chan struct{}, 1)}
	t.mu.Lock()
	t.nc, t.js, t.ended, t.onReply, t.acks = nc, js, ended, onReply, acks
	t.mu.Unlock()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.watchAcks(acks, ended)
	}()
	t.log.Debug("nats uplink connected", "server", nc.ConnectedUrlRedacted(), "max_payload", nc.MaxPayload())
	return nil
}

func (t *Transport) session() (*natsgo.Conn, jetstream.JetStream, func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nc, t.js, t.ended.End
}

// Hello sends a hello as a request and hands the reply to onReply, so the
// uplink takes it like a receipt on the rcpt subject. It returns once the
// reply is in, or with an error when no cloud answers (the server tells at
// once when nobody subscribes to the subject).
func (t *Transport) Hello(ctx context.Context, hello []byte) error {
	nc, _, _ := t.session()
	t.mu.Lock()
	onReply := t.onReply
	t.mu.Unlock()
	if nc == nil {
		return ErrNotConnected
	}
	rctx, cancel := context.WithTimeout(ctx, t.o.RequestTimeout)
	defer cancel()
	m, err := nc.RequestWithContext(rctx, t.helloSubj, hello)
	if errors.Is(err, natsgo.ErrNoResponders) {
		return fmt.Errorf("hello on %s: no cloud is answering hellos: %w", t.helloSubj, err)
	}
	if err != nil {
		return fmt.Errorf("hello on %s: %w", t.helloSubj, err)
	}
	onReply(m.Data)
	return nil
}

// Publish hands a segment to JetStream without waiting for its PubAck:
// many segments are in flight at once. A PubAck that is an error (no stream
// for the subject, the stream is full) or that does not come within
// PublishTimeout ends the session; the uplink reconnects with backoff and
// resends from the cloud's watermark.
func (t *Transport) Publish(ctx context.Context, seg []byte, msgID string) error {
	nc, js, markLost := t.session()
	if nc == nil {
		return ErrNotConnected
	}
	id := msgID + ":" + t.idSecret
	if max := nc.MaxPayload(); max > 0 && int64(len(seg)+len(id)+headerRoom) > max {
		return fmt.Errorf("%w: %d bytes, max_payload %d", ErrTooLarge, len(seg), max)
	}
	f, err := js.PublishAsync(t.segSubj, seg, jetstream.WithMsgID(id))
	if err != nil {
		markLost()
		return fmt.Errorf("publish %s: %w", t.segSubj, err)
	}
	t.mu.Lock()
	acks := t.acks
	t.mu.Unlock()
	if acks != nil {
		acks.add(f)
	}
	return nil
}

// publishFailed is the session's JetStream async error handler: a PubAck
// that is an error, or none within PublishTimeout, ends the session (the
// uplink reconnects and resends from the cloud's watermark).
func (t *Transport) publishFailed(session *uplink.Ended, m *natsgo.Msg, err error) {
	id := ""
	if m != nil {
		id = m.Header.Get(jetstream.MsgIDHeader)
	}
	select {
	case <-session.Done():
		// The session ended first; its publishes are abandoned.
		t.log.Debug("nats uplink publish abandoned with its session", "msg_id", id, "err", err)
		return
	default:
	}
	if errors.Is(err, natsgo.ErrNoResponders) {
		err = fmt.Errorf("no JetStream stream takes %s (is the cloud's stream set up?): %w", t.segSubj, err)
	}
	t.log.Warn("nats uplink publish not acknowledged", "msg_id", id, "err", err)
	session.End()
}

// Lost is closed when the session ends.
func (t *Transport) Lost() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ended.Done()
}

// Close ends the session. Unacknowledged publishes are abandoned: the
// next session resends from the cloud's watermark.
func (t *Transport) Close() error {
	nc, _, markLost := t.session()
	if nc != nil {
		nc.Close()
	}
	markLost()
	t.wg.Wait()
	t.mu.Lock()
	t.nc, t.js, t.acks = nil, nil, nil
	t.mu.Unlock()
	return nil
}
