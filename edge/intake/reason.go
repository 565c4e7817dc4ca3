package intake

import (
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Sentinel errors.
var (
	// ErrUnknownDevice: the device id is not in the credentials file.
	ErrUnknownDevice = errors.New("unknown device")
	// ErrBadSecret: the device is listed but the secret does not match.
	ErrBadSecret = errors.New("bad secret")
	// ErrDeviceExists: AddDevice was asked to add a device already listed.
	ErrDeviceExists = errors.New("device already exists")
	// ErrClosed: the server was closed before the operation finished.
	ErrClosed = errors.New("intake closed")
)

// Reason is why the intake refused a publish, a request or part of one.
// Its mapping to MQTT 5 reason codes, HTTP statuses and advice lives here
// and nowhere else.
type Reason int

const (
	ReasonNone          Reason = iota
	ReasonAuth                 // unknown device or bad secret (CONNACK 0x86, HTTP 401)
	ReasonNotAuthorized        // topic not the device's own, or identity mismatch (0x87, 403)
	ReasonInvalid              // payload or item is not a valid event (0x99, 400)
	ReasonTooLarge             // over protocol.MaxBatchBytes or MaxEventBytes (0x99, 413)
	ReasonQuota                // the ledger quota is full (0x97, 507)
	ReasonDiskFull             // the disk is full: the edge only drains (0x97, 503)
	ReasonBusy                 // too many appends in flight (HTTP 429; MQTT waits instead)
	ReasonInternal             // anything else (0x83, 500)
	numReasons
)

var reasonNames = [numReasons]string{"none", "auth", "not_authorized", "invalid", "too_large", "quota", "disk_full", "busy", "internal"}

// String returns the reason's name, as used in error bodies and metrics
// labels.
func (r Reason) String() string {
	if r < 0 || r >= numReasons {
		return "unknown"
	}
	return reasonNames[r]
}

// Reasons lists every refusal reason, for exporters.
func Reasons() []Reason {
	out := make([]Reason, 0, numReasons-1)
	for r := ReasonAuth; r < numReasons; r++ {
		out = append(out, r)
	}
	return out
}

// transient reports whether the same input may succeed later: an MQTT 5
// device must keep it and retry; for an MQTT 3.1.1 device the intake holds
// the PUBACK and retries the append itself.
func (r Reason) transient() bool {
	return r == ReasonQuota || r == ReasonDiskFull || r == ReasonBusy || r == ReasonInternal
}

// mqtt5 returns the PUBACK (or PUBREC) reason code for r.
func (r Reason) mqtt5() packets.Code {
	switch r {
	case ReasonNone:
		return packets.CodeSuccess
	case ReasonAuth:
		return packets.ErrBadUsernameOrPassword
	case ReasonNotAuthorized:
		return packets.ErrNotAuthorized
	case ReasonInvalid, ReasonTooLarge:
		return packets.ErrPayloadFormatInvalid
	case ReasonQuota:
		return packets.ErrQuotaExceeded
	case ReasonDiskFull:
		return packets.Code{Code: packets.ErrQuotaExceeded.Code, Reason: "quota exceeded: the edge's disk is full"}
	}
	return packets.ErrImplementationSpecificError
}

// httpStatus returns the HTTP status for r.
func (r Reason) httpStatus() int {
	switch r {
	case ReasonNone:
		return statusStored
	case ReasonAuth:
		return http.StatusUnauthorized
	case ReasonNotAuthorized:
		return http.StatusForbidden
	case ReasonInvalid:
		return http.StatusBadRequest
	case ReasonTooLarge:
		return http.StatusRequestEntityTooLarge
	case ReasonQuota:
		return http.StatusInsufficientStorage
	case ReasonDiskFull:
		return http.StatusServiceUnavailable
	case ReasonBusy:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// The HTTP intake's other statuses, here with the Reasons' so that this
// file is the one place that maps outcomes to statuses.
const (
	statusStored      = http.StatusCreated              // at least one new record
	statusAllRepeats  = http.StatusOK                   // every event of the request was already stored
	statusBadMethod   = http.StatusMethodNotAllowed     // not a POST
	statusBadMedia    = http.StatusUnsupportedMediaType // neither application/json nor application/cbor
	statusUnreadable  = http.StatusBadRequest           // the body could not be read
	statusCannotWrite = http.StatusInternalServerError  // the answer could not be encoded
)

// advice says what the device or its integrator should do about r.
func (r Reason) advice() string {
	switch r {
	case ReasonAuth:
		return "authenticate as a device listed on this edge: user name = device id, password = the secret printed by `edge devices add` (or present a client certificate whose CN is the device id)"
	case ReasonNotAuthorized:
		return "publish only to outpost/v1/dev/{your device id}/ev and subscribe only to .../err and .../cmd; over HTTP, use one identity (Basic user and certificate CN must match a listed device)"
	case ReasonInvalid:
		return "fix the listed items and send them again; the valid items of an MQTT batch were stored, an HTTP request stores nothing unless every item is valid; the refused bytes are kept on the edge as intake.rejected records"
	case ReasonTooLarge:
		return "split the batch: at most 1 MiB and 1000 events per payload, 64 KiB per event"
	case ReasonQuota:
		return "keep the events and retry later: the edge's ledger quota is full until its uplink drains it to the cloud"
	case ReasonDiskFull:
		return "keep the events and retry later: the edge's disk is full and it only drains until space is freed"
	case ReasonBusy:
		return "retry after the Retry-After delay, with fewer requests in flight"
	}
	return "keep the events and retry later; if this persists, check the edge's logs"
}

// classify maps an error from the Appender to a reason, by behaviour: an
// error with Quota() true is a full ledger quota, one with DiskFull() true a
// full disk, anything else internal.
func classify(err error) Reason {
	if err == nil {
		return ReasonNone
	}
	var q interface{ Quota() bool }
	if errors.As(err, &q) && q.Quota() {
		return ReasonQuota
	}
	var d interface{ DiskFull() bool }
	if errors.As(err, &d) && d.DiskFull() {
		return ReasonDiskFull
	}
	return ReasonInternal
}

// worse returns the reason that decides an outcome when a payload's items
// fail for different reasons: storage refusals before bad input.
func worse(a, b Reason) Reason {
	rank := func(r Reason) int {
		switch r {
		case ReasonNone:
			return 0
		case ReasonInvalid, ReasonTooLarge, ReasonNotAuthorized, ReasonAuth:
			return 1
		case ReasonQuota:
			return 3
		case ReasonDiskFull:
			return 4
		}
		return 2
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// Metrics counts what the intake did. cmd/edge exports it as
// outpost_edge_intake_* Prometheus metrics (published_total, events_total,
// acked_total, qos0_total, duplicates_total, rejected_kept_total,
// connect_refused_total, and refused_total with a reason label); reads are
// atomic and need no lock.
type Metrics struct {
	Published       atomic.Uint64 // MQTT publishes and HTTP requests from authenticated devices
	Events          atomic.Uint64 // device events handed to the appender
	Acked           atomic.Uint64 // PUBACKs and PUBRECs sent (any reason code), HTTP 2xx answers
	QoS0            atomic.Uint64 // QoS 0 publishes (at most once: never acknowledged)
	Duplicates      atomic.Uint64 // events the appender found already stored
	Appends         atomic.Uint64 // Append calls
	Inflight        atomic.Int64  // Append calls not yet completed (a gauge)
	RejectedKept    atomic.Uint64 // intake.rejected records made durable
	RejectedDropped atomic.Uint64 // refused payloads not kept (per-device rate limit, or the append failed)
	ConnectRefused  atomic.Uint64 // MQTT CONNECTs refused
	refused         [numReasons]atomic.Uint64
}

// Refused returns how many publishes, requests or items were refused for r.
func (m *Metrics) Refused(r Reason) uint64 {
	if r <= ReasonNone || r >= numReasons {
		return 0
	}
	return m.refused[r].Load()
}

func (m *Metrics) refuse(r Reason) {
	if r > ReasonNone && r < numReasons {
		m.refused[r].Add(1)
	}
}
