// Package intake is how devices' events get into the edge: an embedded
// mochi-mqtt broker (MQTT 3.1.1 and 5, TCP with optional TLS) and an HTTP
// endpoint (POST /v1/events), both feeding one Appender, the outbox.
//
// A device's identity comes from its connection, never from its payload:
// HTTP Basic or MQTT user name and password (device id and secret, checked
// against a credentials file of argon2id or bcrypt hashes, see AddDevice),
// or a client certificate whose subject CN is a listed device id.
//
// # Acknowledgement pipeline
//
// A QoS 1 PUBACK goes out only after the events it carried are durable.
// mochi calls OnPublish inside the client's read loop and, left alone,
// would send the PUBACK as soon as the hook returned. The intake's hook
// therefore takes the publish over: it judges the payload, queues it on the
// client's pipeline and returns packets.ErrRejectPacket, on which mochi
// sends nothing and forwards nothing, and the read loop goes on to the next
// packet. The pipeline then sends the acknowledgement itself
// (Client.WritePacket with packets.Puback and the reason code):
//
//   - Each publish is handed to the Appender as soon as it is read, and
//     the read loop goes on. The Appender's group commit does the batching:
//     the publishes a client (or many clients) sent while one commit was
//     being fsynced all ride the next one. (Holding a client's publishes
//     back until its previous append completed, to make fewer Append
//     calls, was measured slower: 14-22k against 19-25k msgs/s with 64
//     publishers, and half as many events per commit.)
//   - Each client's publishes also wait in a queue in packet order. When an
//     append completes, its publish is marked done, and one writer
//     goroutine per client writes the acknowledgements of the done prefix
//     of the queue, in packet order (MQTT requires it). The Appender's
//     goroutine never writes to a socket. The writer corks the connection
//     around each round, so that a round's PUBACKs leave in one write (one
//     system call) instead of one each.
//   - A client with MaxPendingPerClient publishes unacknowledged (also its
//     MQTT 5 Receive Maximum) is not read from until acks go out: TCP
//     pushes back. HTTP requests beyond MaxInflightAppends appends in
//     flight get 429.
//
// Device publishes are never forwarded to subscribers or retained: devices
// do not see each other's events, and the broker holds no copy of them.
// The intake's own messages on err topics go through mochi's inline client.
//
// # ACL
//
// Device d may publish only to outpost/v1/dev/d/ev, and subscribe only to
// outpost/v1/dev/d/err and outpost/v1/dev/d/cmd (no wildcards). A publish
// elsewhere is refused (below) like bad input. Its client id is namespaced
// by device id, so one device cannot take over another's session; wills
// are dropped, since mochi publishes them without an ACL check.
//
// # QoS
//
//   - QoS 1: at least once; acknowledged after the fsync. A repeated
//     (device, id) is acknowledged without a new record.
//   - QoS 0: accepted and stored the same way, but at most once: nothing is
//     acknowledged, and an event is lost if the edge stops before its
//     commit. Counted in Metrics.QoS0.
//   - QoS 2: accepted with QoS 1 semantics: the PUBREC is sent after the
//     fsync, and mochi completes PUBREL/PUBCOMP. Exactly-once delivery comes
//     from the (device, id) deduplication, as it does for QoS 1.
//
// # Refusals
//
// Each refusal has a Reason, mapped in one place (reason.go):
//
//	reason          MQTT 5 PUBACK   HTTP   kept as intake.rejected
//	not_authorized  0x87            403    yes for an MQTT publish outside its topic (not an HTTP identity mismatch)
//	invalid         0x99            400    yes
//	too_large       0x99            413    yes (first RejectedPayloadCap bytes;
//	                                              not an HTTP body over MaxBatchBytes, refused unread)
//	quota           0x97            507    no: the device must retry
//	disk_full       0x97            503    no: the device must retry
//	busy            -               429    no (MQTT waits instead)
//	internal        0x83            500    no
//	auth            CONNACK 0x86    401    no (unauthenticated)
//
// CONNACK uses 0x86 (3.1.1: 0x04) for an unknown device or a bad secret
// (one answer for both, over HTTP too, and the same argon2 work, so that
// device ids cannot be probed), 0x87 (3.1.1: 0x05) for a certificate whose
// CN is not listed or does not match the user name, and 0x8B (3.1.1: 0x03)
// once Close has begun.
//
// An MQTT packet over MaxPacketSize (2 MiB, announced as Maximum Packet
// Size in the MQTT 5 CONNACK) is not read: an MQTT 5 device gets
// DISCONNECT 0x95, a 3.1.1 device has its connection closed. Nothing is
// acknowledged or kept, and each try costs the edge one connection.
//
// Every refusal of a publish is also described on the device's err topic
// as JSON (see errMessage: topic, packet_id, code, reason, error,
// what_to_do, acked, accepted, errors per item, rejected record ids), for
// MQTT 5 devices too. An MQTT 3.1.1 device cannot be sent a negative
// acknowledgement, so:
//
//   - bad input (not_authorized, invalid, too_large) is acknowledged, so the
//     device does not resend it forever; the err message says why;
//   - a storage refusal (quota, disk_full, internal) is not acknowledged,
//     and the device is not disconnected: the PUBACK is held (with the
//     acknowledgements of the publishes after it, in order), the err
//     message says so (acked false), and the intake retries the append by
//     itself, after HoldRetry and then at doubling intervals up to 32
//     times it, until it is stored; then the PUBACK goes out. Ledger events
//     are never acknowledged unless stored. (Disconnecting, as the intake
//     once did, is not safe: paho.mqtt.golang with auto-reconnect and a
//     session or store completes the token of every publish it resends on
//     reconnecting without an error, so a till took refused events for
//     delivered ones.)
//
// What a 3.1.1 till must do: treat only a completed token (a PUBACK) as
// delivered, keep unacknowledged messages (paho: a persistent store), and
// bound its publishes in flight (wait on each token, or a few): while the
// edge holds a PUBACK the intake reads up to MaxPendingPerClient more
// publishes of that client, then stops reading it, so its PINGREQ goes
// unanswered and the client drops the connection itself; paho then
// reports its unacknowledged publishes as complete on reconnecting.
//
// A batch with some invalid items: over MQTT, the valid items are stored,
// the PUBACK is a success (0x00, with a reason string in MQTT 5) and the err
// topic lists the bad items. Over HTTP, the request is all or nothing: 400
// with per-item errors, and no event of it stored, so the client can fix
// and resend it as is.
//
// Refused bytes are kept as intake.rejected records (protocol.
// TypeIntakeRejected, class ledger), whose body is {reason, code,
// transport, topic, size, truncated, payload_b64, error, index, items}:
// one record per bad item of a batch (up to 32; beyond, one record of the
// whole payload), the payload cut to RejectedPayloadCap bytes. The id is
// "rej-" and a hash of the topic and bytes, so a device repeating the same
// refused payload makes no new record. A device makes at most
// RejectedPerMinute of them; refusals beyond are answered but not kept
// (Metrics.RejectedDropped). Unauthenticated input is never kept.
//
// # Credentials
//
// The credentials file is JSON, mode 0600 (a looser mode is refused), and
// is rewritten atomically (temp file, fsync, rename, fsync of the
// directory) by AddDevice and RemoveDevice, the functions behind
// `edge devices add|list|remove`. Credentials re-reads it when it changes.
// A successful verification is cached (an HMAC of the secret under a
// per-process key, valid while the stored hash is unchanged), so argon2id's
// cost (19 MiB, tens of milliseconds) is paid once per device, not per
// CONNECT or HTTP request; at most two slow verifications run at once.
//
// # Wiring the outbox
//
// The intake declares the Appender it needs; cmd/edge adapts the outbox to
// it, in the shape:
//
//	type outboxAppender struct{ ob *outbox.Outbox }
//
//	func (a outboxAppender) Append(device string, evs []protocol.Event, done func([]intake.Result, error)) {
//		entries := make([]outbox.Entry, len(evs))
//		for i, ev := range evs {
//			entries[i] = outbox.Entry{Device: device, Event: ev}
//		}
//		// Returns at once; the callback runs once the commit is durable.
//		a.ob.AppendFunc(entries, func(rs []outbox.Result, err error) {
//			out := make([]intake.Result, len(rs))
//			for i, r := range rs {
//				out[i] = intake.Result{Seq: r.Seq, Duplicate: r.Duplicate, Err: r.Err}
//			}
//			done(out, err)
//		})
//	}
//
// Storage errors need no mapping in between: classify (reason.go, the one
// place refusals are mapped) takes an error with a method Quota() bool
// returning true for a full quota (0x97, 507) and one with DiskFull() bool
// for a full disk (0x97, 503), through any wrapping; anything else is
// internal (0x83, 500). The outbox's ErrLedgerQuota, ErrTelemetryQuota and
// ErrDiskFull have those methods; their advice for operators is the
// outbox's (outbox.Error.Advice), the advice for devices is here
// (Reason.advice).
package intake
