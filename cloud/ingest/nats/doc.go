// Package nats is cloud ingest's NATS JetStream transport (nats.go and its
// jetstream package). The embedded nats-server that `cloud serve
// --nats-embedded` runs is cloud/broker/nats.
//
// Segments: edges publish to outpost.v1.edge.{edge}.seg through JetStream.
// At start-up the Consumer creates, or checks, a stream over those subjects
// (StreamOptions: name, subjects, work-queue or limits retention, max age,
// replicas) and a durable pull consumer on it. A stream or consumer that
// exists with other settings is an error naming each difference: the
// Consumer never edits a stream that other processes share. Any number of
// `cloud serve` processes pull from the one durable consumer, so JetStream
// spreads segments over them.
//
// Acks: a message is acked with a double ack (AckSync: the server confirms
// it) only after ingest has committed, quarantined or nacked the segment
// (ingest.Delivery.Ack). A crash before that leaves the message unacked, and
// JetStream delivers it again after AckWait; the ledger's watermark makes
// the second delivery harmless. The two consumer settings that matter:
//
//   - AckWait (default 10s) is how long the server waits for that ack
//     before it redelivers. A live process never lets it run out: three
//     times per AckWait it marks every message it holds as in progress
//     (queued, in a commit batch, or a gap waiting for its fill), however
//     long the commit takes. So AckWait only decides how soon the segments
//     of a process that died (or stalled completely) go to another process.
//     (An edge that resends after its ack timeout has rewound, so its
//     resend has a new Nats-Msg-Id and is stored next to the held copy;
//     the watermark drops whichever comes second.) Much shorter, and a
//     process paused by the machine (a VM migration, swapping) would see
//     its segments delivered twice, which is harmless but wasted work.
//   - MaxAckPending (default 256) is how many messages may be delivered and
//     not yet acked, across all processes sharing the consumer. It bounds
//     the cloud's memory (at most MaxAckPending segments of up to 1 MiB are
//     held) and is the backpressure: when the cloud is slow it stops taking
//     segments, edges stop getting receipts, their windows fill, and they
//     keep buffering in their outboxes. It should cover every worker of
//     every process with a batch in hand and one arriving: the default suits
//     two processes of two workers with 64-segment batches.
//
// Hellos are requests on outpost.v1.edge.{edge}.hello, answered through a
// queue group (one process answers each) with the signed receipt of the
// edge's stream. The reply subject is the requester's choice, so a hello is
// answered only when it is the edge's own inbox (protocol.IsNATSInbox):
// never another edge's subjects or the JetStream API. Receipts and nacks are published, core NATS, to
// outpost.v1.edge.{edge}.rcpt: an edge that is away misses them and asks
// again with a hello when it is back. After a hello's receipt the same
// handler sends the edge its pending commands (ingest.Options.Commands),
// core NATS to outpost.v1.edge.{edge}.cmd, flushed one by one so they
// reach the server in order.
//
// Identity: the edge id in a segment's subject is trusted as the sender's,
// as the MQTT topic is, so the server must stop edges from publishing on
// each other's subjects. The embedded server (cloud/broker/nats) does: edges log
// in with their id and a broker token (protocol.VerifyBrokerToken against the
// edge's registered keys), and each is allowed only its own subjects and
// reply inboxes (EdgePermissions), in an account of its own so that the
// replies to its requests reach no one else. On a NATS deployment of your
// own, give each edge equivalent permissions (deploy/nats), and
// Options.IsolatedReplies when each edge also has its own account.
//
// The stream is closed to all but publishing and acking: DenyPurge and
// DenyDelete, a byte cap and a per-edge share (StreamOptions).
package nats
