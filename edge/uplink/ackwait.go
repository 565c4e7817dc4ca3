package uplink

import (
	"context"
	"time"
)

// The ack timeout measures the cloud, not the broker. Under overload two
// things are slow, and neither is a loss:
//
//   - the broker has not taken a segment yet (no MQTT PUBACK, no
//     JetStream PubAck): the embedded MQTT broker stops reading an edge's
//     connection while the cloud's ingest holds its maximum (cloud/broker/
//     mqtt, hold.go), so the segment, and anything sent after it on that
//     connection, a hello included, waits there. The ack timeout does not
//     run for a segment the broker has not taken (Accepter), and the hello
//     it leads to is sent only once the broker has taken every segment in
//     flight, so it never waits behind one of the edge's own. A broker
//     that takes nothing at all is the transport's to judge (its publish
//     timeout ends the session).
//   - the cloud has the segments (in the JetStream stream, or queued for
//     ingest) and commits them later than the timeout. The hello then
//     shows the cloud's watermark above where it was at the last look:
//     the cloud is behind, not lossy, and what the broker holds will be
//     committed. Nothing is resent; the session waits again, with the
//     timeout doubled (up to AckTimeoutMax), and a receipt that moves the
//     watermark sets it back to AckTimeout.
//
// Only a watermark stuck across a whole timeout (no receipt, and the
// hello's answer where the last look left it) resends, from the cloud's
// watermark, as does a bound nack (onNack). The doubling applies there
// too, so even a cloud that is stuck for minutes is sent the window again
// only a few times. The resend keeps its message id (only a nack changes
// it: resendGen), so a broker with a duplicate window (Deduplicator:
// JetStream) does not store a second copy. Within that window it drops the
// resend whatever became of the first copy, so a resend then could not
// help: a stuck watermark waits, without resending, until the window of
// the oldest segment in flight has passed, and the look after that
// resends if it is still stuck.

// allAccepted reports whether the broker has taken every segment this
// session published.
func (s *session) allAccepted() bool {
	return s.acc == nil || s.acc.Accepted() >= s.published
}

// noteAccepted stamps the segments in flight the broker has taken since
// the last look.
func (s *session) noteAccepted() {
	if s.acc == nil {
		return
	}
	n, now := s.acc.Accepted(), s.u.o.Now()
	for i := range s.flight {
		f := &s.flight[i]
		if f.pub > n {
			break
		}
		if f.accepted.IsZero() {
			f.accepted = now
		}
	}
}

// ackDeadline is when the ack timeout of the oldest segment in flight
// ends: the timeout after the later of the last progress and the moment
// the broker took that segment. armed is false when nothing is in flight
// or the broker has not taken the oldest segment yet.
func (s *session) ackDeadline() (at time.Time, armed bool) {
	if len(s.flight) == 0 || s.flight[0].accepted.IsZero() {
		return time.Time{}, false
	}
	from := s.flight[0].accepted
	if s.lastProgress.After(from) {
		from = s.lastProgress
	}
	at = from.Add(s.ackTimeout)
	if s.notBefore.After(at) {
		at = s.notBefore
	}
	return at, true
}

// ackDue reports whether the session should ask the cloud where it is: the
// ack deadline has passed and the broker holds none of the session's
// segments back (the hello would wait behind it).
func (s *session) ackDue() bool {
	at, armed := s.ackDeadline()
	return armed && !s.u.o.Now().Before(at) && s.allAccepted()
}

// onAckTimeout runs when the broker took the segments in flight and no
// receipt moved the watermark for the ack timeout: a hello says where the
// cloud is. When its watermark moved since the last look the session
// waits again; when it is stuck, sending resumes from it.
func (s *session) onAckTimeout(ctx context.Context) error {
	u := s.u
	u.log.Warn("no receipt within the ack timeout; asking the cloud where it is", "acked", s.acked, "in_flight", len(s.flight), "timeout", s.ackTimeout)
	hwm, err := u.hello(ctx, s.replies)
	if err != nil {
		return err
	}
	if hwm > s.acked {
		s.advance(hwm)
	}
	moving := s.acked > s.looked
	s.looked = s.acked
	s.lastProgress = u.o.Now()
	s.ackTimeout = min(2*s.ackTimeout, u.o.AckTimeoutMax)
	if moving {
		u.log.Info("the cloud is behind but moving; waiting for what the broker holds", "acked", s.acked, "in_flight", len(s.flight), "next_timeout", s.ackTimeout)
		acked := s.acked
		u.update(func(st *Stats) { st.AckTimeouts++; st.AckWaits++; st.AckedHWM = acked })
		return nil
	}
	if len(s.flight) > 0 && s.dupWindow > 0 {
		if until := s.flight[0].accepted.Add(s.dupWindow); s.lastProgress.Before(until) {
			u.log.Warn("the cloud's watermark is stuck, but the broker would drop a resend as a duplicate yet; waiting", "acked", s.acked, "in_flight", len(s.flight), "until", until)
			s.notBefore = until
			u.update(func(st *Stats) { st.AckTimeouts++; st.DuplicateWaits++ })
			return nil
		}
	}
	u.log.Warn("the cloud's watermark is stuck; resending from it", "acked", s.acked, "in_flight", len(s.flight), "next_timeout", s.ackTimeout)
	s.next, s.flight, s.notBefore = s.acked+1, nil, time.Time{}
	acked, next := s.acked, s.next
	u.update(func(st *Stats) {
		st.AckTimeouts++
		st.Rewinds++
		st.AckedHWM = acked
		st.NextSeq = next
		st.InFlight = 0
	})
	return nil
}
