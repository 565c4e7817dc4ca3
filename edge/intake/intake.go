package intake

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/outpost-edge/outpost/internal/mochiutil"
	"github.com/outpost-edge/outpost/protocol"
)

// Appender makes events durable. The outbox satisfies it through a small
// adapter in cmd/edge (see the package doc).
type Appender interface {
	// Append hands events from device to the store and returns at once.
	// done is called exactly once, from another goroutine, after the
	// events are durable (fsync) or have failed: either err is non-nil and
	// nothing was stored, or results has one entry per event, in order.
	// Append may be called concurrently; concurrent calls should share a
	// group commit. done must not block for long: it runs the intake's
	// bookkeeping and then returns.
	Append(device string, events []protocol.Event, done func(results []Result, err error))
}

// Result is the outcome of one appended event.
type Result struct {
	Seq       uint64 // the record's seq (of the earlier record, for a duplicate)
	Duplicate bool   // (device, id) was already stored within the dedup window: no new record
	// Err refuses this event alone. The intake maps it by behaviour: an
	// error with a method Quota() bool returning true is a full ledger
	// quota; DiskFull() bool, a full disk; anything else is internal.
	Err error
}

// Server is the device intake: an embedded MQTT broker and an optional HTTP
// endpoint, both feeding one Appender. Set the exported fields after New and
// before Start.
type Server struct {
	// MQTTAddr is the broker's TCP listen address. Default ":1883".
	MQTTAddr string
	// MQTTTLS, when set, serves MQTT over TLS. With ClientAuth at least
	// tls.VerifyClientCertIfGiven and ClientCAs set, a verified client
	// certificate authenticates the device named by its subject CN.
	MQTTTLS *tls.Config
	// HTTPAddr is the HTTP intake's listen address (POST /v1/events).
	// Empty (the default) serves no HTTP; Handler still works.
	HTTPAddr string
	// HTTPTLS, when set, serves HTTPS; client certificates as for MQTT.
	HTTPTLS *tls.Config
	// MaxInflightAppends bounds Append calls in flight (one per MQTT
	// publish or HTTP request), MQTT and HTTP together. HTTP requests over
	// it get 429; MQTT clients are bounded by MaxPendingPerClient instead.
	// Default 4096.
	MaxInflightAppends int
	// MaxPendingPerClient bounds one MQTT client's publishes awaiting their
	// acknowledgement. At the bound the intake stops reading from that
	// client (TCP backpressure) until acks go out. It is also the Receive
	// Maximum announced to MQTT 5 clients. Default 1024.
	MaxPendingPerClient int
	// RejectedPayloadCap is the number of refused bytes kept in a rejected
	// record. Default 4096.
	RejectedPayloadCap int
	// RejectedPerMinute bounds the rejected records one device can make per
	// minute; refusals beyond it are answered but not kept. Default 600.
	RejectedPerMinute int
	// HoldRetry is how soon the intake tries again to store an MQTT 3.1.1
	// publish it could not store (full quota or disk): 3.1.1 has no negative
	// acknowledgement, so the PUBACK is held, and the append retried, first
	// after HoldRetry, then at doubling intervals up to 32 times it. Default 1s.
	HoldRetry time.Duration
	// CloseTimeout bounds how long Close waits for appends in flight.
	// Default 10s.
	CloseTimeout time.Duration
	// Logger receives the intake's logs (never secrets). Default
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock stamped on rejected records. Default time.Now.
	Now func() time.Time

	app     Appender
	creds   *Credentials
	metrics Metrics
	log     *slog.Logger

	broker    *mqtt.Server
	mqttLn    net.Listener
	mqttConns *mochiutil.Conns // the TCP connections, for Close
	httpSrv   *http.Server
	httpLn    net.Listener

	closed    atomic.Bool
	closeOnce sync.Once
	// wg counts appends in flight, ack writers and the HTTP server. An
	// append's count is held until its ack writer, if any, has been added.
	wg sync.WaitGroup

	// Lock order: Server.mu, then conn.mu. Neither is held while calling
	// the Appender or writing to a network connection.
	mu            sync.Mutex
	conns         map[*mqtt.Client]*conn
	rejectWindows map[string]*rejectWindow
}

// New returns a Server that authenticates devices with creds and stores
// their events with app, with its exported fields at their defaults.
func New(app Appender, creds *Credentials) *Server {
	return &Server{
		MQTTAddr:            ":1883",
		MaxInflightAppends:  4096,
		MaxPendingPerClient: 1024,
		RejectedPayloadCap:  4096,
		RejectedPerMinute:   600,
		HoldRetry:           time.Second,
		CloseTimeout:        10 * time.Second,
		Logger:              slog.Default(),
		Now:                 time.Now,
		app:                 app,
		creds:               creds,
		conns:               map[*mqtt.Client]*conn{},
		rejectWindows:       map[string]*rejectWindow{},
	}
}

// Metrics returns the server's counters.
func (s *Server) Metrics() *Metrics { return &s.metrics }

// Start opens the listeners and starts serving. ctx bounds start-up only;
// stop the server with Close.
func (s *Server) Start(ctx context.Context) error {
	if s.app == nil || s.creds == nil {
		return errors.New("start intake: New needs an Appender and Credentials")
	}
	if s.RejectedPayloadCap <= 0 || s.RejectedPayloadCap > maxRejectedPayloadCap {
		return fmt.Errorf("start intake: RejectedPayloadCap %d is outside 1..%d (a rejected record's body must stay under protocol.MaxBodyBytes)", s.RejectedPayloadCap, maxRejectedPayloadCap)
	}
	if s.HoldRetry <= 0 {
		return fmt.Errorf("start intake: HoldRetry %s must be positive", s.HoldRetry)
	}
	if s.MaxPendingPerClient <= 0 || s.MaxPendingPerClient > 65535 {
		return fmt.Errorf("start intake: MaxPendingPerClient %d is outside 1..65535", s.MaxPendingPerClient)
	}
	s.log = s.Logger.With("component", "intake")
	var lc net.ListenConfig

	tcp, err := lc.Listen(ctx, "tcp", s.MQTTAddr)
	if err != nil {
		return fmt.Errorf("start intake: listen mqtt %s: %w", s.MQTTAddr, err)
	}
	s.mqttConns = mochiutil.Track(tcp)
	var ln net.Listener = s.mqttConns
	if s.MQTTTLS != nil {
		ln = tls.NewListener(ln, s.MQTTTLS)
	}
	ln = sizeListener{ln}
	s.mqttLn = ln

	caps := mqtt.NewDefaultServerCapabilities()
	caps.ReceiveMaximum = uint16(s.MaxPendingPerClient)
	// A publish may carry a whole batch; anything larger is refused by the
	// broker before it is buffered (see MaxPacketSize).
	caps.MaximumPacketSize = MaxPacketSize
	// Sessions of devices that went away (MQTT 3.1.1 clean=false, or MQTT 5
	// asking for more) are forgotten after a day, so that client ids that
	// change do not grow the broker's memory forever.
	caps.MaximumSessionExpiryInterval = 24 * 60 * 60
	s.broker = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true, // the intake publishes refusals on devices' err topics
		Logger:       s.log.With("component", "intake.mqtt"),
	})
	if err := s.broker.AddHook(&hook{s: s}, nil); err != nil {
		ln.Close()
		return fmt.Errorf("start intake: %w", err)
	}
	if err := s.broker.AddListener(mochiutil.NewListener(mqttListenerID, ln)); err != nil {
		ln.Close()
		return fmt.Errorf("start intake: %w", err)
	}

	if s.HTTPAddr != "" {
		hl, err := lc.Listen(ctx, "tcp", s.HTTPAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("start intake: listen http %s: %w", s.HTTPAddr, err)
		}
		if s.HTTPTLS != nil {
			hl = tls.NewListener(hl, s.HTTPTLS)
		}
		s.httpLn = hl
		s.httpSrv = &http.Server{
			Handler:           s.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       60 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.httpSrv.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("http intake stopped", "err", err)
			}
		}()
	}

	if err := s.broker.Serve(); err != nil {
		s.Close()
		return fmt.Errorf("start intake: %w", err)
	}
	s.log.Info("intake started", "mqtt", s.MQTTAddrActual(), "http", s.HTTPAddrActual(), "mqtt_tls", s.MQTTTLS != nil)
	return nil
}

// MQTTAddrActual returns the address the broker listens on (with the port
// chosen when MQTTAddr ended in :0).
func (s *Server) MQTTAddrActual() string {
	if s.mqttLn == nil {
		return ""
	}
	return s.mqttLn.Addr().String()
}

// HTTPAddrActual returns the address the HTTP intake listens on, or "".
func (s *Server) HTTPAddrActual() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// mqttListenerID names the intake's one mochi listener.
const mqttListenerID = "mqtt"

// OpenConnections returns how many MQTT connections are open, counting
// those that have not finished their CONNECT.
func (s *Server) OpenConnections() int {
	if s.mqttConns == nil {
		return 0
	}
	return s.mqttConns.Open()
}

// Close stops accepting devices, refuses CONNECTs that complete after it
// began (CONNACK 0x8B, 3.1.1: 0x03), disconnects every device, including one
// in the middle of its CONNECT, and waits for the appends in flight to
// complete, so that the Appender can be closed after it. All of it is
// bounded by CloseTimeout. Acknowledgements that could not be sent are not
// lost work: the events are durable, and devices resend unacknowledged
// publishes, which the Appender deduplicates.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), s.CloseTimeout)
		defer cancel()
		if s.httpSrv != nil {
			if e := s.httpSrv.Shutdown(ctx); e != nil {
				err = errors.Join(err, fmt.Errorf("close http intake: %w", e))
			}
		}
		// Wake read loops waiting for room in their client's queue.
		s.mu.Lock()
		for _, c := range s.conns {
			c.kill()
		}
		s.mu.Unlock()
		if s.broker != nil {
			if e := mochiutil.Shutdown(ctx, s.broker, []string{mqttListenerID}, s.mqttConns); e != nil {
				err = errors.Join(err, fmt.Errorf("close intake broker: %w", e))
			}
		}
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = errors.Join(err, fmt.Errorf("close intake: %d appends still in flight after %s", s.metrics.Inflight.Load(), s.CloseTimeout))
		}
	})
	return err
}

// appendEvents calls the Appender, keeping the in-flight gauge and the
// WaitGroup. done runs before the append's WaitGroup count is released.
func (s *Server) appendEvents(device string, events []protocol.Event, done func([]Result, error)) {
	s.wg.Add(1)
	s.metrics.Inflight.Add(1)
	s.metrics.Appends.Add(1)
	var once atomic.Bool
	s.app.Append(device, events, func(res []Result, err error) {
		if !once.CompareAndSwap(false, true) {
			s.log.Error("appender called done twice", "device", device)
			return
		}
		if err == nil && len(res) != len(events) {
			err = fmt.Errorf("appender returned %d results for %d events", len(res), len(events))
		}
		s.metrics.Inflight.Add(-1)
		done(res, err)
		s.wg.Done()
	})
}
