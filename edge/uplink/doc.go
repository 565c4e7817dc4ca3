// Package uplink carries the outbox to the cloud and forgets records only on
// a signed receipt.
//
// One Uplink runs one session at a time over a Transport (MQTT in package
// uplink/mqtt, NATS in uplink/nats; the uplink logic does not know which):
//
//  1. Connect, then send a hello and wait for the cloud's receipt. The
//     session resumes from that receipt's hwm+1: the cloud's watermark, not
//     the edge's own guess.
//  2. Keep up to Window segments in flight, each at most MaxSegmentBytes,
//     optionally zstd-compressed and held to a byte-rate cap (token bucket).
//     New records wake the session through Source.Changed; the only timer
//     is the next deadline (the ack timeout, or the end of a hold). Nothing
//     polls.
//  3. On a receipt that verifies against the pinned cloud key, names this
//     stream and moves the watermark forward: trim the outbox up to its hwm.
//     A forged, replayed or wrong-stream receipt is ignored, counted and
//     logged, and trims nothing.
//  4. On a nack bound to a segment this session sent (nack version 2: its
//     first, last, checkpoint kid and hash match one not yet covered by a
//     receipt, and it is not a replay of a nack already acted on): resend
//     from the nack's hwm+1, after a backoff unless it reports a gap (the
//     cloud waited for the gap to fill before nacking); the nacks of the
//     other segments behind the same gap cause no more rewinds. Any other
//     nack (replayed, stale, about a forged segment on the edge's topic or
//     another key) is counted in IgnoredNacks and changes nothing.
//  5. When no receipt moves the watermark for AckTimeout after the broker
//     took the oldest segment in flight (Accepter), and the broker holds
//     none of them back, say hello again. When the answer shows the cloud's
//     watermark moved since the last look, the cloud is behind, not lossy:
//     wait again. Only when it is stuck resend from it. The timeout doubles
//     at each ack timeout up to AckTimeoutMax, and a receipt resets it
//     (ackwait.go). A segment's message id changes only on a nack, so a
//     broker with a duplicate window drops an ack-timeout resend while it
//     holds the first copy.
//  6. When the session is lost, reconnect with exponential backoff and full
//     jitter, and start again at 1.
//  7. When a bound gap nack shows the cloud behind the outbox's own
//     acknowledged watermark (its database restored to an older point),
//     resend from the cloud's watermark what the source still holds
//     (Retainer), or have the source leave the stream for a new one when it
//     holds none of it (Diverger); a hello receipt below the watermark only
//     resumes the session from the outbox's watermark (behind.go). Only a
//     nack for a segment published after the outbox's watermark had
//     reached above the nack's hwm shows that: a nack for one sent before
//     the receipt that moved it may just have been overtaken by it.
//
// Commands (cloud to edge, docs/OTA.md): with OnCommand set in its options,
// a transport subscribes to the edge's own cmd topic (MQTT) or subject
// (NATS) in every session, before the hello, and hands each message to the
// callback as it comes; the hello (version 3) carries Options.Cmd, the last
// command the edge accepted, so the cloud sends the ones above it. What a
// command says is checked by the caller (ota.CommandGate), never here.
//
// Delivery is at-least-once: a segment may be sent more than once, and the
// cloud's watermark drops what it already has. Nothing is trimmed that the
// cloud has not signed for.
package uplink
