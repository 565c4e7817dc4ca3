package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/protocol"
)

// Defaults of the stream and consumer settings.
const (
	DefaultStream        = "OUTPOST_SEGMENTS"
	DefaultConsumer      = "outpost-ingest"
	DefaultRetention     = "workqueue"
	DefaultMaxAge        = 24 * time.Hour
	DefaultReplicas      = 1
	DefaultDuplicates    = 2 * time.Minute
	DefaultAckWait       = 10 * time.Second
	DefaultMaxAckPending = 256
	// DefaultMaxBytes caps the whole stream: room for 16k segments of the
	// edges' default 256 KiB, or a window of 8 for 2000 edges.
	DefaultMaxBytes = 4 << 30
	// DefaultMaxPerEdge is how many segments one edge may have in the
	// stream at once: eight windows of the default 8 segments.
	DefaultMaxPerEdge = 64
)

// MaxMsgSize is the largest message the stream stores: a segment of
// protocol.MaxSegmentBytes and room for its headers.
const MaxMsgSize = protocol.NATSMaxPayload

// Sentinel errors.
var (
	// ErrMismatch says a stream or consumer exists with settings other than
	// the ones asked for. The error names every difference.
	ErrMismatch = errors.New("exists with a different configuration")
)

// StreamOptions describe the stream of segments. Zero values take the
// defaults above.
type StreamOptions struct {
	Name string
	// Subjects default to outpost.v1.edge.*.seg. Each must be a segment
	// subject (outpost.v1.edge.{edge or *}.seg), so a deployment can split
	// its edges over several streams.
	Subjects []string
	// Retention is "workqueue" (a message is removed once acked: the
	// stream is only a buffer in front of the ledger) or "limits" (kept
	// for MaxAge, for other consumers to read).
	Retention string
	MaxAge    time.Duration // how long an unconsumed segment is kept; the edge resends after it anyway
	Replicas  int           // 1 on one server; 3 on a 3-node cluster
	// Duplicates is the window in which JetStream drops a publish whose
	// Nats-Msg-Id it has seen. It saves work; the watermark is the dedup.
	Duplicates time.Duration
	// MaxBytes caps the stream's bytes. When it is full, publishes are
	// refused (discard new): edges back off and keep buffering in their
	// outboxes; nothing already stored is dropped.
	MaxBytes int64
	// MaxPerEdge caps the segments one edge has in the stream (a per-subject
	// limit: each edge publishes on its own subject), so one edge cannot
	// take the whole of MaxBytes; with MaxMsgSize it bounds an edge's bytes
	// too. A publish beyond it is refused, and that edge backs off.
	MaxPerEdge int64
}

func (o *StreamOptions) fill() error {
	if o.Name == "" {
		o.Name = DefaultStream
	}
	if strings.ContainsAny(o.Name, ".*> \t") {
		return fmt.Errorf("nats stream name %q: no dots, wildcards or spaces", o.Name)
	}
	if len(o.Subjects) == 0 {
		o.Subjects = []string{protocol.SegmentFilterNATS}
	}
	for _, s := range o.Subjects {
		if err := checkSegmentSubject(s); err != nil {
			return err
		}
	}
	if o.Retention == "" {
		o.Retention = DefaultRetention
	}
	if _, err := ParseRetention(o.Retention); err != nil {
		return err
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.Replicas <= 0 {
		o.Replicas = DefaultReplicas
	}
	if o.Duplicates <= 0 {
		o.Duplicates = DefaultDuplicates
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxPerEdge <= 0 {
		o.MaxPerEdge = DefaultMaxPerEdge
	}
	if o.MaxBytes < MaxMsgSize {
		return fmt.Errorf("nats stream max bytes %d: must hold at least one segment of %d bytes (--nats-max-bytes)", o.MaxBytes, MaxMsgSize)
	}
	return nil
}

// checkSegmentSubject accepts outpost.v1.edge.*.seg and
// outpost.v1.edge.{edge}.seg.
func checkSegmentSubject(s string) error {
	p := strings.Split(s, ".")
	if len(p) == 5 && p[3] == "*" {
		p[3] = "x"
		s2 := strings.Join(p, ".")
		if t, err := protocol.ParseSubject(s2); err == nil && t.Scope == protocol.ScopeEdge && t.Kind == protocol.KindSegment {
			return nil
		}
	} else if t, err := protocol.ParseSubject(s); err == nil && t.Scope == protocol.ScopeEdge && t.Kind == protocol.KindSegment {
		return nil
	}
	return fmt.Errorf("nats stream subject %q: want %s or outpost.v1.edge.{edge}.seg", s, protocol.SegmentFilterNATS)
}

// ParseRetention maps "workqueue" and "limits" to JetStream's policies.
func ParseRetention(s string) (jetstream.RetentionPolicy, error) {
	switch s {
	case "workqueue", "work-queue", "work_queue":
		return jetstream.WorkQueuePolicy, nil
	case "limits":
		return jetstream.LimitsPolicy, nil
	}
	return 0, fmt.Errorf("nats stream retention %q: want workqueue or limits", s)
}

func (o StreamOptions) config() jetstream.StreamConfig {
	ret, _ := ParseRetention(o.Retention)
	return jetstream.StreamConfig{
		Name:        o.Name,
		Description: "Outpost: segments from edges, waiting for cloud ingest",
		Subjects:    o.Subjects,
		Retention:   ret,
		MaxAge:      o.MaxAge,
		Replicas:    o.Replicas,
		Storage:     jetstream.FileStorage,
		Duplicates:  o.Duplicates,
		MaxMsgs:     -1,
		MaxBytes:    o.MaxBytes,
		MaxMsgSize:  MaxMsgSize,
		// A full stream, or an edge over its share, refuses new segments:
		// the edge backs off and resends, and nothing stored is dropped.
		Discard:              jetstream.DiscardNew,
		MaxMsgsPerSubject:    o.MaxPerEdge,
		DiscardNewPerSubject: true,
		// Nobody empties the stream through the API: an edge that aims a
		// reply at $JS.API.STREAM.PURGE (or an operator's slip) cannot
		// remove other edges' segments. Acks still remove messages from a
		// work queue.
		DenyPurge:  true,
		DenyDelete: true,
	}
}

// EnsureStream creates the stream, or checks the one that exists. Several
// processes may race to create it; the loser checks the winner's.
func EnsureStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Stream, bool, error) {
	if err := o.fill(); err != nil {
		return nil, false, err
	}
	want := o.config()
	s, err := js.Stream(ctx, o.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if err == nil {
			return s, true, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, false, fmt.Errorf("create nats stream %s (subjects %s, %s retention, replicas %d): %w",
				o.Name, strings.Join(o.Subjects, " "), o.Retention, o.Replicas, err)
		}
		s, err = js.Stream(ctx, o.Name)
	}
	if err != nil {
		return nil, false, fmt.Errorf("nats stream %s: %w", o.Name, err)
	}
	if d := streamDiffs(s.CachedInfo().Config, want); len(d) > 0 {
		return nil, false, fmt.Errorf("nats stream %s %w: %s. Give every cloud process the flags that match the stream, "+
			"or change the stream (`nats stream edit %s`; retention cannot change, so that takes a new stream name)",
			o.Name, ErrMismatch, strings.Join(d, "; "), o.Name)
	}
	return s, false, nil
}

func streamDiffs(got, want jetstream.StreamConfig) []string {
	var d []string
	gs, ws := slices.Clone(got.Subjects), slices.Clone(want.Subjects)
	slices.Sort(gs)
	slices.Sort(ws)
	if !slices.Equal(gs, ws) {
		d = append(d, fmt.Sprintf("subjects are %q, want %q (--nats-subjects)", got.Subjects, want.Subjects))
	}
	if got.Retention != want.Retention {
		d = append(d, fmt.Sprintf("retention is %s, want %s (--nats-retention)", retentionName(got.Retention), retentionName(want.Retention)))
	}
	if got.MaxAge != want.MaxAge {
		d = append(d, fmt.Sprintf("max age is %s, want %s (--nats-max-age)", got.MaxAge, want.MaxAge))
	}
	if got.Replicas != want.Replicas {
		d = append(d, fmt.Sprintf("replicas are %d, want %d (--nats-replicas)", got.Replicas, want.Replicas))
	}
	if got.MaxBytes != want.MaxBytes {
		d = append(d, fmt.Sprintf("max bytes are %d, want %d (--nats-max-bytes)", got.MaxBytes, want.MaxBytes))
	}
	if got.MaxMsgsPerSubject != want.MaxMsgsPerSubject {
		d = append(d, fmt.Sprintf("max messages per subject (per edge) are %d, want %d (--nats-max-per-edge)", got.MaxMsgsPerSubject, want.MaxMsgsPerSubject))
	}
	if got.MaxMsgSize != want.MaxMsgSize {
		d = append(d, fmt.Sprintf("max message size is %d, want %d", got.MaxMsgSize, want.MaxMsgSize))
	}
	if got.Discard != want.Discard || got.DiscardNewPerSubject != want.DiscardNewPerSubject {
		d = append(d, fmt.Sprintf("discard policy is %s (per subject %v), want %s (per subject %v)", got.Discard, got.DiscardNewPerSubject, want.Discard, want.DiscardNewPerSubject))
	}
	if !got.DenyPurge {
		d = append(d, "purge is allowed, want denied")
	}
	if !got.DenyDelete {
		d = append(d, "message delete is allowed, want denied")
	}
	return d
}

func retentionName(r jetstream.RetentionPolicy) string {
	switch r {
	case jetstream.WorkQueuePolicy:
		return "workqueue"
	case jetstream.LimitsPolicy:
		return "limits"
	}
	return r.String()
}

// ConsumerOptions describe the durable pull consumer.
type ConsumerOptions struct {
	Name          string        // durable name; default outpost-ingest
	AckWait       time.Duration // default 30s; see the package doc
	MaxAckPending int           // default 256; see the package doc
}

func (o *ConsumerOptions) fill() {
	if o.Name == "" {
		o.Name = DefaultConsumer
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = DefaultMaxAckPending
	}
}

func (o ConsumerOptions) config() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       o.Name,
		Description:   "Outpost cloud ingest: every `cloud serve` process pulls from this consumer",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxAckPending: o.MaxAckPending,
		// Never give up on a segment: one that cannot be decided now (the
		// database is down) is decided later; one that is bad is acked
		// after quarantine, so it cannot loop.
		MaxDeliver: -1,
	}
}

// EnsureConsumer creates the durable pull consumer, or checks the one that
// exists.
func EnsureConsumer(ctx context.Context, s jetstream.Stream, o ConsumerOptions) (jetstream.Consumer, bool, error) {
	o.fill()
	want := o.config()
	stream := s.CachedInfo().Config.Name
	c, err := s.Consumer(ctx, o.Name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		c, err = s.CreateConsumer(ctx, want)
		if err == nil {
			return c, true, nil
		}
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			return nil, false, fmt.Errorf("create nats consumer %s on stream %s: %w", o.Name, stream, err)
		}
		c, err = s.Consumer(ctx, o.Name)
	}
	if err != nil {
		return nil, false, fmt.Errorf("nats consumer %s on stream %s: %w", o.Name, stream, err)
	}
	if d := consumerDiffs(c.CachedInfo().Config, want); len(d) > 0 {
		return nil, false, fmt.Errorf("nats consumer %s on stream %s %w: %s. Give every cloud process the same flags, "+
			"or change the consumer (`nats consumer edit %s %s`)", o.Name, stream, ErrMismatch, strings.Join(d, "; "), stream, o.Name)
	}
	return c, false, nil
}

func consumerDiffs(got, want jetstream.ConsumerConfig) []string {
	var d []string
	if got.DeliverSubject != "" {
		d = append(d, fmt.Sprintf("it is a push consumer (deliver subject %q), want a pull consumer", got.DeliverSubject))
	}
	if got.AckPolicy != want.AckPolicy {
		d = append(d, fmt.Sprintf("ack policy is %s, want explicit", got.AckPolicy))
	}
	if got.AckWait != want.AckWait {
		d = append(d, fmt.Sprintf("ack wait is %s, want %s (--nats-ack-wait)", got.AckWait, want.AckWait))
	}
	if got.MaxAckPending != want.MaxAckPending {
		d = append(d, fmt.Sprintf("max ack pending is %d, want %d (--nats-max-ack-pending)", got.MaxAckPending, want.MaxAckPending))
	}
	if got.FilterSubject != "" || len(got.FilterSubjects) > 0 {
		d = append(d, fmt.Sprintf("it filters subjects %q %q, want the whole stream", got.FilterSubject, got.FilterSubjects))
	}
	return d
}
