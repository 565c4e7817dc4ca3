package nats

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-edge/outpost/cloud/ingest"
	"github.com/outpost-edge/outpost/protocol"
)

// Options configure a Consumer.
type Options struct {
	URL string // nats://host:4222; several, separated by commas, for a cluster
	// InProcess, when set, connects to a server in this process (the
	// embedded one) instead of URL.
	InProcess natsgo.InProcessConnProvider

	// Credentials: at most one kind.
	User         string
	Password     string
	Token        string
	NKeySeedFile string
	CredsFile    string

	TLS      *tls.Config // takes precedence over the file settings below
	CAFile   string
	CertFile string
	KeyFile  string

	Stream   StreamOptions
	Consumer ConsumerOptions
	// Fetch is how many messages this process asks for at a time (and at
	// most buffers); default 128, at most Consumer.MaxAckPending.
	Fetch int
	// HelloGroup is the queue group that answers hellos; default the
	// consumer's name.
	HelloGroup string
	// IsolatedReplies says the server delivers every reply to an edge's
	// request inside that edge's own account, as the embedded server
	// (cloud/broker/nats) does: a hello then arrives with a service-import
	// reply subject (_R_.…), which no client can choose, and is answered.
	// Otherwise a hello is answered only when its reply subject is the
	// edge's own inbox (protocol.IsNATSInbox).
	IsolatedReplies bool

	Service *ingest.Service
	Logger  *slog.Logger
}

// Consumer feeds an ingest.Service from a JetStream durable pull consumer
// and answers hellos. It is the ingest.Replier of what it delivers.
type Consumer struct {
	o   Options
	log *slog.Logger

	mu    sync.Mutex
	nc    *natsgo.Conn
	cons  jetstream.Consumer
	ready bool

	acks    chan jetstream.Msg
	closing chan struct{}

	// hellos runs the hello handlers, at most MaxHellos at once; Run waits
	// for them. helloMu orders TryGo before Wait: once hellosDone is set,
	// no handler starts.
	helloMu    sync.Mutex
	hellos     errgroup.Group
	hellosDone bool

	heldMu sync.Mutex // guards held; never held with mu
	held   map[jetstream.Msg]struct{}

	redelivered, ackErrs, helloErrs, kept, badReplies, helloDrops, hellosAnswered atomic.Uint64
	badReplyLogged                                                                atomic.Int64 // unix nanos of the last log line about one
}

var (
	_ ingest.Replier          = (*Consumer)(nil)
	_ ingest.CommandPublisher = (*Consumer)(nil)
)

// Stats are counters for metrics.
type Stats struct {
	Redelivered uint64 `json:"redelivered"` // messages delivered more than once
	AckErrors   uint64 `json:"ack_errors"`  // double acks the server did not confirm (the message comes again)
	Hellos      uint64 `json:"hellos"`      // hellos answered
	HelloErrors uint64 `json:"hello_errors"`
	InProgress  uint64 `json:"in_progress"` // in-progress marks sent for messages held (keepalive)
	// BadReplySubjects counts hellos not answered because their reply
	// subject was missing or not the sending edge's own inbox (an attack,
	// or a client without the edge's inbox prefix).
	BadReplySubjects uint64 `json:"bad_reply_subjects"`
	// HellosDropped counts hellos that came while MaxHellos were being
	// answered; the edge asks again after its hello timeout.
	HellosDropped uint64 `json:"hellos_dropped"`
}

// serviceReplyPrefix starts the reply subjects nats-server makes for a
// request that crossed a service import. Clients cannot use such a reply
// subject themselves (the server refuses it as reserved).
const serviceReplyPrefix = "_R_."

// FetchBytes bounds the bytes of the messages a Consumer has asked for and
// not yet received.
const FetchBytes = 32 << 20

// MaxHellos is how many hellos one Consumer answers at once (each is a
// database read and a signature).
const MaxHellos = 64

// New checks opts and fills in defaults.
func New(opts Options) (*Consumer, error) {
	if (opts.URL == "" && opts.InProcess == nil) || opts.Service == nil {
		return nil, errors.New("nats ingest: a server URL (or an in-process server) and Service are required")
	}
	if err := opts.Stream.fill(); err != nil {
		return nil, err
	}
	opts.Consumer.fill()
	if opts.Fetch <= 0 {
		opts.Fetch = 128
	}
	opts.Fetch = min(opts.Fetch, opts.Consumer.MaxAckPending)
	if opts.HelloGroup == "" {
		opts.HelloGroup = opts.Consumer.Name
	}
	kinds := 0
	for _, set := range []bool{opts.Token != "", opts.NKeySeedFile != "", opts.CredsFile != "", opts.User != "" || opts.Password != ""} {
		if set {
			kinds++
		}
	}
	if kinds > 1 {
		return nil, errors.New("nats ingest: give only one of a user and password, a token, an nkey seed or a creds file")
	}
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("nats ingest: a client certificate needs both the certificate and the key file")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Consumer{
		o:       opts,
		log:     opts.Logger.With("component", "ingest-nats", "stream", opts.Stream.Name, "consumer", opts.Consumer.Name),
		acks:    make(chan jetstream.Msg, opts.Consumer.MaxAckPending),
		closing: make(chan struct{}),
		held:    map[jetstream.Msg]struct{}{},
	}
	c.hellos.SetLimit(MaxHellos)
	return c, nil
}

func (c *Consumer) connOptions() ([]natsgo.Option, error) {
	o := c.o
	opts := []natsgo.Option{
		natsgo.Name("outpost-cloud-ingest"),
		// The cloud keeps its connection: reconnect forever, and retry the
		// first connect too, so a server that starts after the cloud is
		// found.
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(time.Second),
		natsgo.RetryOnFailedConnect(true),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if err != nil {
				c.log.Warn("ingest lost the NATS server; reconnecting", "err", err)
			}
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			c.log.Info("ingest reconnected to NATS", "server", nc.ConnectedUrlRedacted())
		}),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			c.log.Warn("NATS reported an error", "err", err)
		}),
	}
	if o.InProcess != nil {
		opts = append(opts, natsgo.InProcessServer(o.InProcess))
	}
	switch {
	case o.Token != "":
		opts = append(opts, natsgo.Token(o.Token))
	case o.NKeySeedFile != "":
		no, err := natsgo.NkeyOptionFromSeed(o.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats ingest: nkey seed %s: %w", o.NKeySeedFile, err)
		}
		opts = append(opts, no)
	case o.CredsFile != "":
		opts = append(opts, natsgo.UserCredentials(o.CredsFile))
	case o.User != "" || o.Password != "":
		opts = append(opts, natsgo.UserInfo(o.User, o.Password))
	}
	switch {
	case o.TLS != nil:
		opts = append(opts, natsgo.Secure(o.TLS))
	default:
		if o.CAFile != "" {
			opts = append(opts, natsgo.RootCAs(o.CAFile))
		}
		if o.CertFile != "" {
			opts = append(opts, natsgo.ClientCert(o.CertFile, o.KeyFile))
		}
	}
	return opts, nil
}

// Run connects, sets up the stream and consumer, answers hellos and feeds
// segments to the service until ctx ends. It returns an error at once when
// the stream or consumer exists with other settings (ErrMismatch); other
// failures are retried with backoff.
func (c *Consumer) Run(ctx context.Context) error {
	opts, err := c.connOptions()
	if err != nil {
		return err
	}
	url := c.o.URL
	if c.o.InProcess != nil {
		url = ""
	}
	nc, err := natsgo.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("nats ingest: connect to %s: %w", c.o.URL, err)
	}
	c.mu.Lock()
	c.nc = nc
	c.mu.Unlock()

	var wg sync.WaitGroup
	defer func() {
		c.stopHellos()
		close(c.closing)
		wg.Wait()
		nc.Close()
	}()

	hsub, err := nc.QueueSubscribe(protocol.HelloFilterNATS, c.o.HelloGroup, func(m *natsgo.Msg) { c.onHello(ctx, m) })
	if err != nil {
		return fmt.Errorf("nats ingest: subscribe %s: %w", protocol.HelloFilterNATS, err)
	}
	defer func() { _ = hsub.Unsubscribe() }()

	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.acker()
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.keepalive()
	}()

	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		cons, err := c.setup(ctx, js)
		if errors.Is(err, ErrMismatch) {
			c.log.Error("cannot use the NATS stream", "err", err)
			return err
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			d := min(10*time.Second, 250*time.Millisecond<<min(attempt, 6))
			c.log.Warn("NATS stream or consumer not ready; retrying", "err", err, "retry_in", d)
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
			continue
		}
		attempt = 0
		c.consume(ctx, cons)
		c.setReady(nil)
	}
	return nil
}

func (c *Consumer) setup(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	s, created, err := EnsureStream(sctx, js, c.o.Stream)
	if err != nil {
		return nil, err
	}
	if created {
		c.log.Info("created the NATS stream", "subjects", c.o.Stream.Subjects, "retention", c.o.Stream.Retention,
			"max_age", c.o.Stream.MaxAge, "replicas", c.o.Stream.Replicas)
	}
	cons, created, err := EnsureConsumer(sctx, s, c.o.Consumer)
	if err != nil {
		return nil, err
	}
	if created {
		c.log.Info("created the NATS consumer", "ack_wait", c.o.Consumer.AckWait, "max_ack_pending", c.o.Consumer.MaxAckPending)
	}
	return cons, nil
}

func (c *Consumer) setReady(cons jetstream.Consumer) {
	c.mu.Lock()
	c.cons, c.ready = cons, cons != nil
	c.mu.Unlock()
}

// consume pulls until ctx ends or the iterator stops (the consumer was
// deleted, say), when Run sets it up again.
func (c *Consumer) consume(ctx context.Context, cons jetstream.Consumer) {
	// The byte bound keeps what the server sends this connection ahead of
	// its reads well under the server's max_pending (64 MiB by default),
	// which would cut it off as a slow consumer.
	it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(c.o.Fetch, FetchBytes))
	if err != nil {
		c.log.Warn("could not pull from the NATS consumer", "err", err)
		return
	}
	defer it.Stop()
	c.setReady(cons)
	c.log.Info("ingest consuming from NATS", "fetch", c.o.Fetch)
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("NATS consumer stopped; setting it up again", "err", err)
			}
			return
		}
		if md, err := m.Metadata(); err == nil && md.NumDelivered > 1 {
			c.redelivered.Add(1)
		}
		t, err := protocol.ParseSubject(m.Subject())
		if err != nil || t.Scope != protocol.ScopeEdge || t.Kind != protocol.KindSegment {
			c.log.Warn("dropped a message on an unexpected subject", "subject", m.Subject())
			_ = m.Term()
			continue
		}
		c.hold(m, true)
		d := ingest.Delivery{TopicEdge: t.ID, Payload: m.Data(), Replier: c, Ack: c.ackFunc(m)}
		if err := c.o.Service.Handle(ctx, d); err != nil {
			c.hold(m, false)
			return // shutting down: not acked, so redelivered
		}
	}
}

// ackFunc is a Delivery's Ack: it hands the message to the ackers, so a
// worker does not wait a round trip per message. When the consumer is
// closing, the message is left unacked and comes again after AckWait.
func (c *Consumer) ackFunc(m jetstream.Msg) func() {
	return func() {
		c.hold(m, false)
		select {
		case c.acks <- m:
		case <-c.closing:
		}
	}
}

func (c *Consumer) hold(m jetstream.Msg, held bool) {
	c.heldMu.Lock()
	if held {
		c.held[m] = struct{}{}
	} else {
		delete(c.held, m)
	}
	c.heldMu.Unlock()
}

// keepalive tells the server, three times per AckWait, that the messages
// this process holds are in progress (queued, being committed, or a gap
// waiting for its fill). So AckWait can be short: it is how long the
// segments of a process that died wait for another process, not how long
// a live one may take.
func (c *Consumer) keepalive() {
	t := time.NewTicker(c.o.Consumer.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-c.closing:
			return
		case <-t.C:
		}
		c.heldMu.Lock()
		ms := make([]jetstream.Msg, 0, len(c.held))
		for m := range c.held {
			ms = append(ms, m)
		}
		c.heldMu.Unlock()
		for _, m := range ms {
			if m.InProgress() == nil { // an error means it was acked meanwhile, or the connection is down
				c.kept.Add(1)
			}
		}
	}
}

func (c *Consumer) acker() {
	for {
		select {
		case m := <-c.acks:
			c.doubleAck(context.Background(), m)
		case <-c.closing:
			// Acks already handed over still go out, for a short while:
			// what is not acked then comes again, and the watermark drops it.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			for ctx.Err() == nil {
				select {
				case m := <-c.acks:
					c.doubleAck(ctx, m)
				default:
					return
				}
			}
			return
		}
	}
}

func (c *Consumer) doubleAck(ctx context.Context, m jetstream.Msg) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := m.DoubleAck(ctx); err != nil {
		c.ackErrs.Add(1)
		c.log.Warn("the NATS server did not confirm an ack; the segment will come again (the watermark drops it)", "subject", m.Subject(), "err", err)
	}
}

func (c *Consumer) onHello(ctx context.Context, m *natsgo.Msg) {
	t, err := protocol.ParseSubject(m.Subject)
	if err != nil || t.Scope != protocol.ScopeEdge || t.Kind != protocol.KindHello {
		c.log.Warn("ignored a message on the hello subjects", "subject", m.Subject)
		return
	}
	if !protocol.IsNATSInbox(t.ID, m.Reply) && !(c.o.IsolatedReplies && strings.HasPrefix(m.Reply, serviceReplyPrefix)) {
		// The reply subject is the requester's choice. Publishing to one
		// outside the edge's own inbox would let an edge aim the cloud's
		// signed receipt at another edge's subjects, or at the JetStream
		// API ($JS.API.STREAM.PURGE...), with the cloud's user.
		c.badReplies.Add(1)
		c.logBadReply(t.ID, m.Reply)
		return
	}
	c.helloMu.Lock()
	defer c.helloMu.Unlock()
	if c.hellosDone {
		return
	}
	started := c.hellos.TryGo(func() error {
		rc, deliver, err := c.o.Service.AnswerHello(ctx, t.ID, m.Data, c)
		if err != nil {
			c.helloErrs.Add(1)
			c.log.Warn("could not answer a hello", "edge", t.ID, "err", err)
			return nil
		}
		if err := m.Respond(rc); err != nil {
			c.log.Warn("could not send a hello's receipt", "edge", t.ID, "err", err)
			return nil
		}
		c.hellosAnswered.Add(1)
		if deliver != nil {
			deliver(ctx) // the edge's pending commands, after its receipt
		}
		return nil
	})
	if !started {
		// Not blocking here keeps the subscription's callback (and the
		// hellos queued behind it) moving; the edge asks again.
		c.helloDrops.Add(1)
	}
}

// stopHellos lets no more hello handlers start and waits for those
// running (they end with Run's ctx).
func (c *Consumer) stopHellos() {
	c.helloMu.Lock()
	c.hellosDone = true
	c.helloMu.Unlock()
	_ = c.hellos.Wait()
}

// logBadReply logs a refused reply subject at most once per ten seconds:
// a flood of them costs a counter, not megabytes of logs.
func (c *Consumer) logBadReply(edge, reply string) {
	now := time.Now().UnixNano()
	last := c.badReplyLogged.Load()
	if now-last < int64(10*time.Second) || !c.badReplyLogged.CompareAndSwap(last, now) {
		return
	}
	c.log.Warn("refused to answer a hello whose reply subject is not the edge's own inbox (counted in outpost_cloud_nats_bad_reply_subjects_total)",
		"edge", edge, "reply", reply, "want_prefix", protocol.NATSInboxPrefix(edge)+".")
}

// Reply publishes a signed reply to the edge's rcpt subject.
func (c *Consumer) Reply(_ context.Context, edge string, msg []byte) error {
	subj, err := protocol.EdgeSubject(edge, protocol.KindReceipt)
	if err != nil {
		return err
	}
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc == nil {
		return errors.New("not connected")
	}
	return nc.Publish(subj, msg)
}

// PublishCommand publishes a signed command to the edge's cmd subject
// (core NATS) and flushes, so the server has it when it returns. An edge
// that is away misses it and gets it in answer to its next hello.
func (c *Consumer) PublishCommand(ctx context.Context, edge string, signed []byte) error {
	subj, err := protocol.EdgeSubject(edge, protocol.KindCommand)
	if err != nil {
		return err
	}
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc == nil {
		return errors.New("not connected")
	}
	if err := nc.Publish(subj, signed); err != nil {
		return fmt.Errorf("publish to %s: %w", subj, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("publish to %s: flush: %w", subj, err)
	}
	return nil
}

// Connected reports whether the consumer is connected and pulling.
func (c *Consumer) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready && c.nc != nil && c.nc.IsConnected()
}

// Stats returns the counters.
func (c *Consumer) Stats() Stats {
	return Stats{Redelivered: c.redelivered.Load(), AckErrors: c.ackErrs.Load(), Hellos: c.hellosAnswered.Load(), HelloErrors: c.helloErrs.Load(), InProgress: c.kept.Load(),
		BadReplySubjects: c.badReplies.Load(), HellosDropped: c.helloDrops.Load()}
}

// Info asks the server for the consumer's state (NumAckPending,
// NumPending, ...), for metrics and tests.
func (c *Consumer) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	c.mu.Lock()
	cons := c.cons
	c.mu.Unlock()
	if cons == nil {
		return nil, errors.New("nats ingest: not consuming")
	}
	return cons.Info(ctx)
}
