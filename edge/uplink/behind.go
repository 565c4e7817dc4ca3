package uplink

import (
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/protocol"
)

// A cloud restored to an older point (its database from a backup, or a
// point-in-time recovery) has a watermark behind what it receipted before:
// the outbox has trimmed, or kept only for --retain, records the cloud no
// longer holds. The edge finds out at its next session: the hello's receipt
// is below the outbox's acknowledged watermark (ambiguous: a stale receipt
// from before the hello looks the same, so the session resumes from its
// own watermark), and then for certain from the gap nack for the first
// segment it sends, a signed nack bound to that segment whose hwm is below
// the outbox's watermark. Then (cloudBehind):
//
//   - the source still holds hwm+1 (Retainer: within --retain): resend
//     from there, in the same stream; the receipts up to the outbox's own
//     watermark trim nothing (accept), and sending goes on past it;
//   - it does not: those records are gone from this edge for good, and no
//     stream can carry the gap. The source leaves the stream for a new
//     epoch (Diverger, as for a restored outbox file): what it still holds
//     is kept for an operator, and the new stream's first record says
//     where the cloud was and what was lost.
//
// A source with neither interface holds the backlog and says why.

// Retainer is what a Source may also do: say the first seq it still holds
// (records below it were trimmed). Without it the uplink assumes it holds
// nothing at or below AckedSeq.
type Retainer interface {
	FirstSeq() uint64
}

// cloudBehind acts on a bound nack that shows the cloud behind the
// outbox's acknowledged watermark. handled is false for any other nack
// (onNack takes it); err is ErrNewStream when the source left the stream.
//
// A gap nack's hwm is the cloud's watermark when it judged the segment,
// and a receipt can overtake it on the way back (another worker's, for
// the fill the cloud was waiting for; the broker delivers replies in any
// order, and an attacker on it chooses the order). So the nack shows the
// cloud behind only when its hwm is below what the cloud had receipted
// before the segment was even published (sent.acked): a cloud that
// receipted through acked, and then, judging a segment sent after that
// receipt arrived, stands below it, lost what it committed. A nack below
// the watermark for a segment sent earlier is only overtaken: onNack
// resends from the session's watermark.
func (s *session) cloudBehind(n protocol.Nack, sent sentSegment) (handled bool, err error) {
	u := s.u
	src := u.o.Source
	acked := src.AckedSeq()
	if n.Code != protocol.NackGap || n.HWM >= acked || n.HWM >= sent.acked {
		return false, nil
	}
	now := u.o.Now()
	if s.gapRewind.hwm == n.HWM && !s.gapRewind.at.IsZero() && now.Sub(s.gapRewind.at) < u.o.AckTimeout {
		return true, nil // the other segments in flight bring the same nack: already resending
	}
	s.gapRewind.hwm, s.gapRewind.at = n.HWM, now
	first := acked + 1
	if r, ok := src.(Retainer); ok {
		first = r.FirstSeq()
	}
	u.update(func(st *Stats) {
		st.Nacks++
		st.CloudBehind++
		st.LastError = fmt.Sprintf("the cloud's watermark %d is behind the %d it acknowledged before (its database restored from a backup?)", n.HWM, acked)
	})
	if n.HWM+1 >= first {
		u.log.Error("the cloud's watermark is behind what it acknowledged before (its database restored from an older backup?): resending the records it lacks",
			"stream", s.stream.String(), "cloud_hwm", n.HWM, "acked", acked, "resend_from", n.HWM+1)
		s.acked, s.next, s.flight = n.HWM, n.HWM+1, nil
		s.lastProgress, s.holdUntil, s.nackBackoff = now, now, 0
		s.looked, s.ackTimeout, s.notBefore = n.HWM, u.o.AckTimeout, time.Time{}
		u.resendGen++
		next := s.next
		u.update(func(st *Stats) { st.Rewinds++; st.AckedHWM = n.HWM; st.NextSeq = next; st.InFlight = 0 })
		return true, nil
	}
	d, ok := src.(Diverger)
	if !ok {
		u.log.Error("the cloud lost records this edge no longer holds, and this source cannot start a new stream: holding the backlog",
			"stream", s.stream.String(), "cloud_hwm", n.HWM, "acked", acked, "first_held", first, "retry_in", RefusedHold)
		s.holdUntil = now.Add(RefusedHold)
		return true, nil
	}
	u.log.Error("the cloud lost records this edge no longer holds (its database restored from a backup older than --retain): starting a new epoch; the records still held are kept for an operator",
		"stream", s.stream.String(), "cloud_hwm", n.HWM, "acked", acked, "lost_from", n.HWM+1, "lost_to", first-1)
	rc := protocol.Receipt{Edge: n.Edge, Epoch: n.Epoch, HWM: n.HWM, Head: n.Head, KID: n.KID}
	if err := d.Diverged(rc); err != nil {
		return true, fmt.Errorf("the cloud lost records this edge no longer holds, and a new epoch could not start: %w", err)
	}
	u.update(func(st *Stats) { st.NewStreams++ })
	return true, ErrNewStream
}
