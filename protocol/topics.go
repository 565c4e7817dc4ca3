package protocol

import (
	"fmt"
	"strings"
)

// Kind is the last level of a topic or subject: what the message is.
type Kind string

// Topic kinds. Devices use ev, err and cmd under outpost/v1/dev/{device}/;
// edges use seg, hello, rcpt, cmd and status under outpost/v1/edge/{edge}/.
const (
	KindEvent   Kind = "ev"
	KindError   Kind = "err"
	KindCommand Kind = "cmd"
	KindSegment Kind = "seg"
	KindHello   Kind = "hello"
	KindReceipt Kind = "rcpt"
	KindStatus  Kind = "status"
)

var (
	deviceKinds = map[Kind]bool{KindEvent: true, KindError: true, KindCommand: true}
	edgeKinds   = map[Kind]bool{KindSegment: true, KindHello: true, KindReceipt: true, KindCommand: true, KindStatus: true}
)

// Scope says whose topic a topic is.
type Scope string

const (
	ScopeDevice Scope = "dev"
	ScopeEdge   Scope = "edge"
)

// Topic is a parsed Outpost MQTT topic or NATS subject.
type Topic struct {
	Scope Scope  // dev or edge
	ID    string // the device or edge id
	Kind  Kind   // ev, err, cmd, seg, hello, rcpt, status
}

// MQTT returns the topic's MQTT form, such as outpost/v1/edge/e1/seg.
func (t Topic) MQTT() string {
	return "outpost/v1/" + string(t.Scope) + "/" + t.ID + "/" + string(t.Kind)
}

// NATS returns the topic's NATS subject form, such as outpost.v1.edge.e1.seg.
func (t Topic) NATS() string {
	return "outpost.v1." + string(t.Scope) + "." + t.ID + "." + string(t.Kind)
}

// DeviceTopic returns the MQTT topic of kind (ev, err, cmd) for a device.
func DeviceTopic(device string, kind Kind) (string, error) {
	t := Topic{Scope: ScopeDevice, ID: device, Kind: kind}
	if err := t.check(); err != nil {
		return "", err
	}
	return t.MQTT(), nil
}

// EdgeTopic returns the MQTT topic of kind (seg, hello, rcpt, cmd, status)
// for an edge.
func EdgeTopic(edge string, kind Kind) (string, error) {
	t := Topic{Scope: ScopeEdge, ID: edge, Kind: kind}
	if err := t.check(); err != nil {
		return "", err
	}
	return t.MQTT(), nil
}

// EdgeSubject returns the NATS subject of kind for an edge.
func EdgeSubject(edge string, kind Kind) (string, error) {
	t := Topic{Scope: ScopeEdge, ID: edge, Kind: kind}
	if err := t.check(); err != nil {
		return "", err
	}
	return t.NATS(), nil
}

// SharedSegmentFilter is the MQTT shared-subscription filter by which a
// group of cloud workers share all edges' segments.
func SharedSegmentFilter(group string) (string, error) {
	if err := ValidateName("group", group); err != nil {
		return "", err
	}
	return "$share/" + group + "/outpost/v1/edge/+/" + string(KindSegment), nil
}

// MaxEdgePacketBytes bounds one MQTT packet between an edge and the cloud's
// broker: the largest segment (MaxSegmentBytes) plus what a PUBLISH adds
// around it (fixed header, topic, packet id, MQTT 5 properties), with room
// to spare. The cloud's broker refuses anything larger and advertises it in
// the MQTT 5 CONNACK.
const MaxEdgePacketBytes = MaxSegmentBytes + 16<<10

// SegmentFilterMQTT and the other filters match a kind for all edges.
const (
	SegmentFilterMQTT = "outpost/v1/edge/+/seg"
	HelloFilterMQTT   = "outpost/v1/edge/+/hello"
	StatusFilterMQTT  = "outpost/v1/edge/+/status"
	SegmentFilterNATS = "outpost.v1.edge.*.seg"
	HelloFilterNATS   = "outpost.v1.edge.*.hello"
	StatusFilterNATS  = "outpost.v1.edge.*.status"
)

// InternalUser is the user name of the cloud's own clients on the cloud's
// embedded brokers (MQTT and NATS). The brokers let it log in only with
// their per-process password.
const InternalUser = "outpost-cloud"

// NATSInboxRoot starts every edge's NATS reply inboxes; see NATSInboxPrefix.
const NATSInboxRoot = "_INBOX.edge"

// NATSInboxFilter matches the reply inboxes of all edges. The cloud's NATS
// user may publish only there (hello replies), to the edges' rcpt and cmd
// subjects, and to the JetStream API it uses itself.
const NATSInboxFilter = NATSInboxRoot + ".*.>"

// NATSInboxPrefix is the prefix of an edge's NATS reply inboxes,
// _INBOX.edge.{edge}: the edge's connection takes its request and PubAck
// inboxes under it, a server lets only that edge subscribe under it, and the
// cloud answers a hello only to a reply subject under it (IsNATSInbox).
func NATSInboxPrefix(edge string) string { return NATSInboxRoot + "." + edge }

// IsNATSInbox reports whether subject is a reply inbox of edge: under
// NATSInboxPrefix(edge), with no wildcards and no empty tokens. A reply
// subject a requester chose is published to only when it is its own
// inbox, never to a subject someone else (or the JetStream API) listens on.
func IsNATSInbox(edge, subject string) bool {
	if ValidateName("edge", edge) != nil {
		return false
	}
	rest, ok := strings.CutPrefix(subject, NATSInboxPrefix(edge)+".")
	if !ok || rest == "" {
		return false
	}
	for tok := range strings.SplitSeq(rest, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return false
		}
	}
	return true
}

// NATSMaxPayload is the largest NATS message Outpost sends: a segment of
// MaxSegmentBytes and room for its headers. The cloud's embedded server
// advertises it as max_payload and the cloud's stream takes messages up to
// it.
const NATSMaxPayload = MaxSegmentBytes + 64<<10

// ParseTopic parses an MQTT topic of the form outpost/v1/{dev|edge}/{id}/{kind}.
func ParseTopic(topic string) (Topic, error) { return parseTopic(topic, "/", "topic") }

// ParseSubject parses a NATS subject of the form outpost.v1.{dev|edge}.{id}.{kind}.
func ParseSubject(subject string) (Topic, error) { return parseTopic(subject, ".", "subject") }

func parseTopic(s, sep, what string) (Topic, error) {
	parts := strings.Split(s, sep)
	if len(parts) != 5 || parts[0] != "outpost" || parts[1] != "v1" {
		return Topic{}, fmt.Errorf("%s %q is not outpost%sv1%s{dev|edge}%s{id}%s{kind}: %w", what, s, sep, sep, sep, sep, ErrMalformed)
	}
	t := Topic{Scope: Scope(parts[2]), ID: parts[3], Kind: Kind(parts[4])}
	if err := t.check(); err != nil {
		return Topic{}, fmt.Errorf("%s %q: %w", what, s, err)
	}
	return t, nil
}

func (t Topic) check() error {
	var kinds map[Kind]bool
	switch t.Scope {
	case ScopeDevice:
		kinds = deviceKinds
		if err := ValidateName("device", t.ID); err != nil {
			return err
		}
	case ScopeEdge:
		kinds = edgeKinds
		if err := ValidateName("edge", t.ID); err != nil {
			return err
		}
	default:
		return fieldf("scope", "%q is neither dev nor edge", t.Scope)
	}
	if !kinds[t.Kind] {
		return fieldf("kind", "%q is not a %s topic kind", t.Kind, t.Scope)
	}
	return nil
}
