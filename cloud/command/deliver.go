package command

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Publisher publishes a signed command to an edge's cmd topic or subject on
// one transport (cloud/ingest/mqtt, cloud/ingest/nats), and returns once the
// broker has it (an MQTT PUBACK, a NATS flush): the commands of one burst
// must reach the edge in the order they are published.
type Publisher interface {
	PublishCommand(ctx context.Context, edge string, signed []byte) error
}

// DelivererOptions configure a Deliverer. Zero values take the defaults
// noted.
type DelivererOptions struct {
	DB *pgxpool.Pool
	// ServeFor is how long after an edge's last hello to this process the
	// process pushes the edge's new commands; 0 (the default): as long as
	// it runs. A push to an edge that has since gone (or went to another
	// replica's embedded broker) is a publish nobody gets, and marks the
	// command delivered, so a cancel errs towards "may have it"; the
	// edge's next hello gets it in any case.
	ServeFor time.Duration
	// Sweep is how often, besides the notifications, the Deliverer looks
	// for commands never delivered to the edges it serves (a notification
	// lost while the LISTEN connection was down); default 30s.
	Sweep   time.Duration
	Workers int // pushes at once; default 4
	// PushDelay is how long a push waits after the notification that
	// starts it, gathering the next ones for the same edge into one burst;
	// default 250ms.
	PushDelay time.Duration
	RetryMax  time.Duration // the longest wait before listening again; default 10s
	Now       func() time.Time
	Logger    *slog.Logger
}

// Deliverer sends each edge its commands: all pending ones in reply to
// each hello (Hello), and a new one as soon as Enqueue's transaction
// commits to the edges that said hello to this process (Run: LISTEN on
// NotifyChannel).
type Deliverer struct {
	o   DelivererOptions
	log *slog.Logger

	mu      sync.Mutex // guards served, queued
	served  map[string]served
	queued  map[string]push // edges waiting for a push
	kick    chan struct{}   // a push is queued
	running atomic.Bool

	published, failed, pushes, bursts atomic.Uint64
}

// push is a queued push: due at at, the attempt'th retry.
type push struct {
	at      time.Time
	attempt int
}

type served struct {
	pub Publisher
	at  time.Time // its last hello
}

// DeliveryStats are counters for metrics.
type DeliveryStats struct {
	Published     uint64 `json:"commands_published"`
	PublishErrors uint64 `json:"command_publish_errors"`
	Bursts        uint64 `json:"command_bursts"` // hellos and pushes that found commands to send
	Pushes        uint64 `json:"command_pushes"` // pushes started by a notification or the sweep
	Served        int    `json:"edges_served"`
}

// NewDeliverer checks opts.
func NewDeliverer(opts DelivererOptions) (*Deliverer, error) {
	if opts.DB == nil {
		return nil, errors.New("command deliverer: DB is required")
	}
	if opts.Sweep <= 0 {
		opts.Sweep = 30 * time.Second
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.PushDelay <= 0 {
		opts.PushDelay = 250 * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Deliverer{o: opts, log: opts.Logger.With("component", "commands"),
		served: map[string]served{}, queued: map[string]push{}, kick: make(chan struct{}, 1)}, nil
}

// Stats returns the counters.
func (d *Deliverer) Stats() DeliveryStats {
	d.mu.Lock()
	n := len(d.served)
	d.mu.Unlock()
	return DeliveryStats{Published: d.published.Load(), PublishErrors: d.failed.Load(),
		Bursts: d.bursts.Load(), Pushes: d.pushes.Load(), Served: n}
}

// Hello is called once a hello of edge (authenticated by the broker,
// accepted by ingest) is answered: it records the hello's cmd, and
// publishes through pub, in seq order, every command after cmd that is
// neither cancelled nor expired. From now on this process also pushes
// edge's new commands through pub.
func (d *Deliverer) Hello(ctx context.Context, edge string, cmd uint64, pub Publisher) error {
	d.mu.Lock()
	d.served[edge] = served{pub: pub, at: d.o.Now()}
	d.mu.Unlock()
	pending, err := NoteHello(ctx, d.o.DB, edge, cmd, d.o.Now())
	if err != nil || !pending {
		return err
	}
	return d.burst(ctx, edge, &cmd, pub)
}

// burst publishes, in seq order, edge's commands after *after (nil: after
// its last hello's cmd).
//
// Why no lock between bursts: every burst starts at or below the edge's
// last accepted seq + 1 (after is a cmd the edge itself said, and an
// edge's accepted seq only grows) and has every kept seq from there on, in
// order (seqs commit in order). Whatever way two such bursts interleave on
// the wire, the first seq the edge has not accepted that reaches it is the
// next kept one, never a later one: so the edge never skips a command,
// and the rest of the other burst is dropped as replays. (An edge whose
// state was reset, and says a lower cmd than before, may lose a command to
// a push racing its first hello; its next hello brings the rest.)
func (d *Deliverer) burst(ctx context.Context, edge string, after *uint64, pub Publisher) error {
	var err error
	from := uint64(0)
	if after != nil {
		from = *after
	} else if from, err = LastHello(ctx, d.o.DB, edge); err != nil {
		return fmt.Errorf("deliver commands to %s: %w", edge, err)
	}
	cmds, err := Take(ctx, d.o.DB, edge, from, d.o.Now())
	if err != nil {
		return fmt.Errorf("deliver commands to %s: %w", edge, err)
	}
	if len(cmds) == 0 {
		return nil
	}
	d.bursts.Add(1)
	for _, c := range cmds {
		if err := pub.PublishCommand(ctx, edge, c.Signed); err != nil {
			// Stop here: a later command arriving first would make the
			// edge drop this one as a replay. The next hello sends both.
			d.failed.Add(1)
			return fmt.Errorf("deliver command %d to %s: %w", c.Seq, edge, err)
		}
		d.published.Add(1)
	}
	d.log.Debug("delivered commands", "edge", edge, "after", from, "first", cmds[0].Seq, "last", cmds[len(cmds)-1].Seq)
	return nil
}

// Run listens for new commands and pushes them to the edges this process
// serves, until ctx ends. It reconnects, with backoff, when the listening
// connection is lost, and then sweeps for what it may have missed.
func (d *Deliverer) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("command deliverer: Run called twice")
	}
	var wg sync.WaitGroup
	for range d.o.Workers {
		wg.Go(func() { d.worker(ctx) })
	}
	defer wg.Wait()
	wait := 100 * time.Millisecond
	for {
		listened, err := d.listen(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if listened {
			wait = 100 * time.Millisecond
		}
		d.log.Warn("not listening for new commands; listening again (edges get them at their next hello meanwhile)", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
		wait = min(2*wait, d.o.RetryMax)
	}
}

// listen is one LISTEN connection: it sweeps once listening (what was
// enqueued while it was not is found), then queues a push per
// notification, and sweeps every Sweep.
func (d *Deliverer) listen(ctx context.Context) (listened bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, d.o.DB.Config().ConnConfig.Copy())
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, `LISTEN `+NotifyChannel); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	d.sweep(ctx)
	next := time.Now().Add(d.o.Sweep)
	for {
		wctx, cancel := context.WithDeadline(ctx, next)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return true, ctx.Err()
		case err == nil:
			d.queue(n.Payload)
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			d.sweep(ctx)
			next = time.Now().Add(d.o.Sweep)
		default:
			return true, fmt.Errorf("wait for notifications: %w", err)
		}
	}
}

// sweep queues a push for every served edge that has a command never
// delivered.
func (d *Deliverer) sweep(ctx context.Context) {
	edges := d.servedEdges()
	if len(edges) == 0 {
		return
	}
	rows, err := d.o.DB.Query(ctx, `SELECT DISTINCT edge FROM edge_commands
		WHERE edge = ANY($1) AND delivered_at IS NULL AND acked_at IS NULL AND cancelled_at IS NULL AND expires_at > $2`,
		edges, d.o.Now().UTC())
	if err == nil {
		edges, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		d.log.Warn("could not sweep for undelivered commands", "err", err)
		return
	}
	for _, e := range edges {
		d.queue(e)
	}
}

func (d *Deliverer) servedEdges() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.o.Now()
	out := make([]string, 0, len(d.served))
	for e, s := range d.served {
		if d.o.ServeFor > 0 && now.Sub(s.at) > d.o.ServeFor {
			delete(d.served, e)
			continue
		}
		out = append(out, e)
	}
	return out
}

// queue asks a worker to push edge's commands, if this process serves it.
// The push waits PushDelay, so that the notifications of a transaction
// that enqueued several commands for the edge, or of a few transactions in
// a row, make one burst rather than one each.
func (d *Deliverer) queue(edge string) { d.queueAt(edge, d.o.Now().Add(d.o.PushDelay), 0) }

func (d *Deliverer) queueAt(edge string, at time.Time, attempt int) {
	d.mu.Lock()
	s, ok := d.served[edge]
	if ok && d.o.ServeFor > 0 && d.o.Now().Sub(s.at) > d.o.ServeFor {
		delete(d.served, edge)
		ok = false
	}
	if ok {
		if q, queued := d.queued[edge]; !queued || at.Before(q.at) {
			d.queued[edge] = push{at: at, attempt: attempt}
		}
	}
	d.mu.Unlock()
	if ok {
		d.wake()
	}
}

func (d *Deliverer) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// next takes a queued edge that is due, with its publisher; or says how
// long until the next one is due (0: none is queued).
func (d *Deliverer) next() (edge string, p push, pub Publisher, wait time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.o.Now()
	for e, q := range d.queued {
		if !q.at.After(now) {
			delete(d.queued, e)
			if s, ok := d.served[e]; ok {
				return e, q, s.pub, 0
			}
			continue
		}
		if w := q.at.Sub(now); wait == 0 || w < wait {
			wait = w
		}
	}
	return "", push{}, nil, wait
}

// pushRetries is how many times a push that failed is tried again (after
// 1, 2, 4 s) before the edge's next hello is left to bring its commands.
const pushRetries = 3

func (d *Deliverer) worker(ctx context.Context) {
	for {
		edge, p, pub, wait := d.next()
		if pub == nil {
			var timer <-chan time.Time
			var t *time.Timer
			if wait > 0 {
				t = time.NewTimer(wait)
				timer = t.C
			}
			select {
			case <-d.kick:
			case <-timer:
			case <-ctx.Done():
				return
			}
			if t != nil {
				t.Stop()
			}
			continue
		}
		d.wake() // another worker may take the next edge meanwhile
		d.pushes.Add(1)
		err := d.burst(ctx, edge, nil, pub)
		if err == nil || ctx.Err() != nil {
			continue
		}
		if p.attempt < pushRetries {
			d.queueAt(edge, d.o.Now().Add(time.Second<<p.attempt), p.attempt+1)
			d.log.Info("could not push commands to an edge; trying again", "edge", edge, "attempt", p.attempt+1, "err", err)
		} else {
			d.log.Warn("could not push commands to an edge; its next hello gets them", "edge", edge, "err", err)
		}
	}
}
