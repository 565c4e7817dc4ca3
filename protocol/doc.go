// Package protocol is Outpost's wire contract: what devices send, what the
// edge stores and signs, and what edge and cloud say to each other. It is
// pure: no I/O, no goroutines, no clocks it does not take as arguments. Every
// other package depends on it, and it depends on nothing of Outpost's.
//
// # The messages
//
//   - Event: what a device publishes or POSTs, in JSON or CBOR; either form
//     decodes to the same value (DecodeEvents). The device's identity comes
//     from its connection, never from the payload.
//   - Record: an Event as the edge accepted it, with its stream (edge,
//     epoch), a gapless seq, the device id, a hybrid-logical-clock edge_time,
//     a class (ledger or telemetry) and prev, the hash of the record before.
//     Its bytes are core deterministic CBOR (RFC 8949 §4.2.1); its hash is
//     SHA-256 of those bytes as stored. A tombstone replaces a shed
//     telemetry record and keeps the chain whole.
//   - Checkpoint: a COSE_Sign1 (RFC 9052) by the edge's Ed25519 key over
//     {edge, epoch, seq, head, edge_time, kid}. The edge signs one per
//     durable commit.
//   - Segment: the uplink unit, records first..last and the checkpoint for
//     last, optionally zstd-compressed, at most MaxSegmentBytes.
//   - Hello: the edge's greeting on every connect; the cloud answers with its
//     latest receipt.
//   - Receipt and Nack: COSE_Sign1 by the cloud's key. A receipt lets the
//     edge forget records up to its hwm; a nack makes it resend from hwm+1.
//
// # Invariants
//
//   - A stream's seqs start at 1 and have no gaps; record n's prev is the
//     link hash of record n-1 (VerifyChain).
//   - Decoders of outside bytes enforce explicit limits (sizes, nesting,
//     counts), refuse duplicate map keys, indefinite lengths and tags, and
//     each is fuzzed.
//   - Bytes a device sent are taken exactly or refused, never rewritten:
//     text must be valid UTF-8 as sent (in JSON, no escaped lone
//     surrogates), CBOR undefined is refused, integers must fit 64 bits. A
//     refusal names the field; in a batch it refuses only its item, whose
//     own bytes come back with it (ItemError.Raw).
//   - Money is int64 minor units with an ISO 4217 code; quantities are int64
//     thousandths (package pos).
//
// docs/PROTOCOL.md is the byte-level specification; testdata/vectors holds
// fixed vectors that other implementations can check themselves against.
package protocol
