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
