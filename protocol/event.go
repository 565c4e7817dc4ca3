package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/outpost-edge/outpost/protocol/pos"
)

// Event is what a device sends: one sale, one reading, one Z report. The
// device's identity is not part of it; it comes from the authenticated
// connection the event arrived on.
//
// An Event decodes from JSON and from CBOR to the same value: the body is
// held as canonical CBOR, so two encodings of the same content compare equal
// byte for byte.
type Event struct {
	ID   string    // device-chosen idempotency key, 1 to 64 bytes
	Type string    // dotted lower-case, such as "sale.completed"
	TS   time.Time // the device's clock, UTC, millisecond precision
	Body Body      // canonical CBOR of a map, or nil for no body
}

// Body is an event body as core deterministic CBOR of a map with text keys,
// holding only the JSON data model: maps, arrays, text, integers, floats,
// booleans and null. Integral floats within ±2^53 are held as integers, so
// that 1 and 1.0 are the same body.
type Body []byte

// ReservedTypePrefixes start the types only the edge itself may create:
// "intake." (a refused payload it kept), "ota." (its updater's steps,
// which the cloud's rollouts count) and "edge." (its own alarms, such as
// edge.epoch_restarted after a restored outbox). A device event with such
// a type is refused.
var ReservedTypePrefixes = []string{"intake.", "ota.", "edge."}

// ReservedType returns the reserved prefix t starts with, if any.
func ReservedType(t string) (prefix string, ok bool) {
	for _, p := range ReservedTypePrefixes {
		if strings.HasPrefix(t, p) {
			return p, true
		}
	}
	return "", false
}

// EdgeDevice is the device name of the records the edge makes itself (its
// updater's ota.* events, its edge.* alarms); no device credential may
// take it.
const EdgeDevice = "_edge"

// TypeIntakeRejected is the record the edge keeps of a refused payload.
const TypeIntakeRejected = "intake.rejected"

// ValidateType checks the dotted lower-case syntax of an event type.
func ValidateType(t string) error {
	if t == "" {
		return fieldf("type", "is required, dotted lower-case such as \"sale.completed\"")
	}
	if len(t) > MaxIDLen {
		return fieldf("type", "is %d bytes; the limit is %d", len(t), MaxIDLen)
	}
	if !dottedLower(t) {
		return fieldf("type", "%q is not dotted lower-case: want segments of [a-z0-9_] starting with a letter, joined by '.', at least two, such as \"sale.completed\"", t)
	}
	return nil
}

// dottedLower matches ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$ without a
// regexp: it runs for every record the cloud verifies.
func dottedLower(t string) bool {
	segs := 0
	start := true
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c == '.':
			if start {
				return false
			}
			start = true
			continue
		case start:
			if c < 'a' || c > 'z' {
				return false
			}
			segs++
			start = false
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
		default:
			return false
		}
	}
	return !start && segs >= 2
}

// CheckTS checks a device time in Unix milliseconds: 1970-01-01 to
// 9999-12-31, the range every record's ts must be in.
func CheckTS(ms int64) error { return checkTS(ms) }

// checkTS is the one range check of a device time, for the int64 and
// uint64 values decoders produce.
func checkTS[T int64 | uint64](ms T) error {
	if ms < minTSms || ms > maxTSms {
		return fieldf("ts", "%d ms is outside 1970-01-01 to 9999-12-31", ms)
	}
	return nil
}

// minTS and maxTS bound a device timestamp: 1970-01-01 to 9999-12-31.
const (
	minTSms = 0
	maxTSms = 253402300799999
)

// Validate checks every rule an event must meet: id, type syntax, time range,
// body size, and for the known POS types (see package pos) the body's schema
// and arithmetic.
func (e *Event) Validate() error {
	if err := ValidateEventID(e.ID); err != nil {
		return err
	}
	if err := ValidateType(e.Type); err != nil {
		return err
	}
	ms := e.TS.UnixMilli() // the zero time is year 1: out of range too
	if err := CheckTS(ms); err != nil {
		return err
	}
	if len(e.Body) > MaxBodyBytes {
		return fieldf("body", "is %d bytes as CBOR; the limit is %d", len(e.Body), MaxBodyBytes)
	}
	if err := pos.Validate(e.Type, e.Body); err != nil {
		var pe *pos.Error
		if errors.As(err, &pe) {
			return &FieldError{Field: joinPath("body", pe.Field), Msg: pe.Msg}
		}
		return prefixField("body", err)
	}
	return nil
}

func joinPath(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	case b[0] == '[':
		return a + b
	}
	return a + "." + b
}

// ItemError is the refusal of one event in a batch.
type ItemError struct {
	Index int    // position in the batch, from 0
	ID    string // the item's id, when it got that far
	Raw   []byte // the item's own bytes as the device sent them (a sub-slice of the payload)
	Err   error
}

func (e *ItemError) Error() string {
	if e.ID != "" {
		return fmt.Sprintf("event [%d] (id %q): %v", e.Index, e.ID, e.Err)
	}
	return fmt.Sprintf("event [%d]: %v", e.Index, e.Err)
}

func (e *ItemError) Unwrap() error { return e.Err }

// Format is the encoding of a device payload.
type Format int

const (
	FormatJSON Format = iota + 1
	FormatCBOR
)

func (f Format) String() string {
	switch f {
	case FormatJSON:
		return "json"
	case FormatCBOR:
		return "cbor"
	}
	return "unknown"
}

// DetectFormat tells JSON from CBOR by the first byte: a JSON event or batch
// starts with '{' or '[' (after white space); a CBOR one with a map (major
// type 5) or an array (major type 4) head. The two sets do not overlap.
func DetectFormat(b []byte) (Format, error) {
	for _, c := range b {
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			continue
		case c == '{' || c == '[':
			return FormatJSON, nil
		case c>>5 == 4 || c>>5 == 5:
			return FormatCBOR, nil
		}
		return 0, fmt.Errorf("payload starts with byte 0x%02x: want a JSON object or array, or a CBOR map or array: %w", c, ErrMalformed)
	}
	return 0, fmt.Errorf("payload is empty: want one event or an array of events: %w", ErrMalformed)
}

// DecodeEvents decodes a device payload: one event, or an array of them,
// in JSON or CBOR. The returned error is non-nil when the payload as a whole
// cannot be read (not JSON or CBOR, over MaxBatchBytes, more than
// MaxBatchEvents); then no event is returned. Otherwise each element either
// decodes to an event or is reported in errs, so one bad item does not
// refuse its neighbours. batch says whether the payload was an array.
func DecodeEvents(payload []byte) (events []Event, errs []*ItemError, batch bool, err error) {
	if len(payload) > MaxBatchBytes {
		return nil, nil, false, tooLarge("payload", len(payload), MaxBatchBytes)
	}
	f, err := DetectFormat(payload)
	if err != nil {
		return nil, nil, false, err
	}
	var items [][]byte
	if f == FormatJSON {
		items, batch, err = splitJSON(payload)
	} else {
		items, batch, err = splitCBOR(payload)
	}
	if err != nil {
		return nil, nil, batch, err
	}
	if !batch && len(payload) > MaxEventBytes {
		return nil, nil, false, tooLarge("event", len(payload), MaxEventBytes)
	}
	if len(items) == 0 {
		return nil, nil, true, fmt.Errorf("batch is empty: %w", ErrMalformed)
	}
	depth := 1 // the nesting level of each event: inside the batch array, if any
	if batch {
		depth = 2
	}
	for i, raw := range items {
		ev, err := decodeItem(f, raw, depth)
		if err == nil {
			err = ev.Validate()
		}
		if p, reserved := ReservedType(ev.Type); err == nil && reserved {
			err = fieldf("type", "%q is reserved for the edge itself; devices may not send %s* types", ev.Type, p)
		}
		if err != nil {
			id := ev.ID
			if id == "" {
				id = itemID(f, raw)
			}
			errs = append(errs, &ItemError{Index: i, ID: id, Raw: raw, Err: err})
			continue
		}
		events = append(events, ev)
	}
	return events, errs, batch, nil
}

// decodeItem decodes one event of a payload, at nesting level depth. Text
// is checked as the device sent it (valid UTF-8, no lone surrogates), before
// any decoder could replace what it cannot read.
func decodeItem(f Format, raw []byte, depth int) (Event, error) {
	var tree any
	var err error
	if f == FormatJSON {
		tree, err = parseJSONAt(raw, depth-1)
	} else {
		if _, err := walkJSONModel(raw, depth); err != nil {
			return Event{}, itemField(err)
		}
		tree, err = parseCBOR(raw)
	}
	if err != nil {
		return Event{}, itemField(err)
	}
	return eventFromTree(tree)
}

// itemField turns a FieldError about the event item itself (no field) into
// a plain malformed error, so that it does not read ": msg".
func itemField(err error) error {
	var fe *FieldError
	if errors.As(err, &fe) && fe.Field == "" {
		return fmt.Errorf("event: %s: %w", fe.Msg, ErrMalformed)
	}
	return err
}

// DecodeEvent decodes exactly one event (not a batch), in JSON or CBOR.
func DecodeEvent(payload []byte) (Event, error) {
	evs, errs, batch, err := DecodeEvents(payload)
	switch {
	case err != nil:
		return Event{}, err
	case batch:
		return Event{}, fmt.Errorf("want one event, got an array: %w", ErrMalformed)
	case len(errs) > 0:
		return Event{}, errs[0].Err
	}
	return evs[0], nil
}

func eventFromTree(v any) (Event, error) {
	v, err := normalize("", v)
	if err != nil {
		return Event{}, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return Event{}, fmt.Errorf("an event must be a map/object with id, type, ts and body: %w", ErrMalformed)
	}
	var ev Event
	// Take the id first so that later errors can name the event.
	if id, ok := m["id"].(string); ok {
		ev.ID = id
	}
	for k, val := range m {
		switch k {
		case "id":
			if _, ok := val.(string); !ok {
				return ev, fieldf("id", "must be a string, got %s", kindOf(val))
			}
		case "type":
			s, ok := val.(string)
			if !ok {
				return ev, fieldf("type", "must be a string, got %s", kindOf(val))
			}
			ev.Type = s
		case "ts":
			t, err := parseTS(val)
			if err != nil {
				return ev, err
			}
			ev.TS = t
		case "body":
			if val == nil {
				continue
			}
			if _, ok := val.(map[string]any); !ok {
				return ev, fieldf("body", "must be a map/object, got %s", kindOf(val))
			}
			b, err := encMode.Marshal(val)
			if err != nil {
				return ev, fieldf("body", "cannot encode: %v", err)
			}
			ev.Body = b
		default:
			return ev, fieldf(k, "is not an event field; an event has id, type, ts and body")
		}
	}
	if _, ok := m["ts"]; !ok {
		return ev, fieldf("ts", "is required: the device's clock as Unix milliseconds or an RFC 3339 string")
	}
	return ev, nil
}

func parseTS(v any) (time.Time, error) {
	switch x := v.(type) {
	case int64:
		if err := checkTS(x); err != nil {
			return time.Time{}, err
		}
		return time.UnixMilli(x).UTC(), nil
	case uint64:
		if err := checkTS(x); err != nil {
			return time.Time{}, err
		}
		return time.UnixMilli(int64(x)).UTC(), nil
	case string:
		t, err := time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return time.Time{}, fieldf("ts", "%q is not an RFC 3339 time such as \"2026-11-22T10:15:00.250Z\"", x)
		}
		return time.UnixMilli(t.UnixMilli()).UTC(), nil
	}
	return time.Time{}, fieldf("ts", "must be Unix milliseconds (integer) or an RFC 3339 string, got %s", kindOf(v))
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64, uint64:
		return "an integer"
	case float64:
		return "a float"
	case []any:
		return "an array"
	case map[string]any:
		return "a map"
	}
	return fmt.Sprintf("%T", v)
}

var typeOfMapStringAny = reflect.TypeOf(map[string]any(nil))

// maxSafeInt is 2^53: integral floats within it are held as integers.
const maxSafeInt = 1 << 53

// normalize walks a decoded tree and enforces the JSON data model, turning
// integral floats into integers. Its result encodes to canonical CBOR.
func normalize(path string, v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, string, int64, uint64:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fieldf(path, "NaN and infinities are not allowed")
		}
		if x == math.Trunc(x) && math.Abs(x) <= maxSafeInt {
			return int64(x), nil
		}
		return x, nil
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
			return u, nil
		}
		if !strings.ContainsAny(string(x), ".eE") {
			// An integer a float64 cannot hold exactly: refused, never rounded.
			return nil, fieldf(path, "integer %s is outside the 64-bit range (-9223372036854775808 to 18446744073709551615); send it as a string, or in a smaller unit", x)
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return nil, fieldf(path, "number %s is out of range", x)
		}
		return normalize(path, f)
	case []any:
		for i := range x {
			n, err := normalize(fmt.Sprintf("%s[%d]", path, i), x[i])
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
		return x, nil
	case map[string]any:
		for k, e := range x {
			n, err := normalize(joinPath(path, k), e)
			if err != nil {
				return nil, err
			}
			x[k] = n
		}
		return x, nil
	case []byte:
		return nil, fieldf(path, "byte strings are not allowed: bodies hold the JSON data model only")
	}
	return nil, fieldf(path, "CBOR value of type %T is not allowed: bodies hold the JSON data model only", v)
}

func parseCBOR(b []byte) (any, error) {
	var v any
	if err := anyDecMode.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("cbor: %s: %w", cborErrText(err), ErrMalformed)
	}
	return v, nil
}

// cborErrText is a decoder error's text without the "cbor: " its package
// starts every error with, so that ours say it once.
func cborErrText(err error) string { return strings.TrimPrefix(err.Error(), "cbor: ") }

// parseJSON reads JSON into a tree with the same limits as the CBOR decoder:
// bounded nesting, map and array sizes, and no duplicate keys.
func parseJSON(b []byte) (any, error) { return parseJSONAt(b, 0) }

// parseJSONAt is parseJSON for a value at nesting level depth (from 0).
// Syntactically valid input takes the fast path (jsonfast.go).
func parseJSONAt(b []byte, depth int) (any, error) {
	if json.Valid(b) {
		p := &fastJSON{b: b}
		return p.value(nil, depth)
	}
	return parseJSONSlow(b, depth)
}

// parseJSONSlow is parseJSONAt through encoding/json's tokens: the path
// of input that is not valid JSON, whose errors it words.
func parseJSONSlow(b []byte, depth int) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	r := &jsonReader{d: d, b: b}
	v, err := r.value("", depth)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("json: data after the top-level value: %w", ErrMalformed)
	}
	return v, nil
}

// jsonReader reads tokens and checks each string against the bytes it came
// from (encoding/json replaces invalid UTF-8 and lone surrogates silently).
type jsonReader struct {
	d *json.Decoder
	b []byte
}

// token returns the next token and, for a string, what is wrong with its
// raw text ("" when nothing is).
func (r *jsonReader) token() (json.Token, string, error) {
	from := r.d.InputOffset()
	tok, err := r.d.Token()
	if err != nil {
		return nil, "", fmt.Errorf("json: %v: %w", err, ErrMalformed)
	}
	if _, ok := tok.(string); ok {
		seg := r.b[from:r.d.InputOffset()] // separators, then the literal
		return tok, checkJSONText(seg[bytes.IndexByte(seg, '"'):]), nil
	}
	return tok, "", nil
}

func (r *jsonReader) value(path string, depth int) (any, error) {
	d := r.d
	tok, bad, err := r.token()
	if err != nil {
		return nil, err
	}
	if bad != "" {
		return nil, fieldf(path, "%s", bad)
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	if depth >= MaxNesting {
		return nil, fieldf(path, "nesting is deeper than %d", MaxNesting)
	}
	switch delim {
	case '{':
		m := map[string]any{}
		for d.More() {
			kt, bad, err := r.token()
			if err != nil {
				return nil, err
			}
			if bad != "" {
				return nil, fieldf(path, "a key %s", bad)
			}
			k := kt.(string)
			if _, dup := m[k]; dup {
				return nil, fieldf(joinPath(path, k), "duplicate key")
			}
			if len(m) >= maxMapPairs {
				return nil, fieldf(path, "has more than %d keys", maxMapPairs)
			}
			v, err := r.value(joinPath(path, k), depth+1)
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		if _, err := d.Token(); err != nil {
			return nil, fmt.Errorf("json: %v: %w", err, ErrMalformed)
		}
		return m, nil
	case '[':
		a := []any{}
		for d.More() {
			if len(a) >= maxArrayElems {
				return nil, fieldf(path, "has more than %d elements", maxArrayElems)
			}
			v, err := r.value(fmt.Sprintf("%s[%d]", path, len(a)), depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		if _, err := d.Token(); err != nil {
			return nil, fmt.Errorf("json: %v: %w", err, ErrMalformed)
		}
		return a, nil
	}
	return nil, fmt.Errorf("json: unexpected %v: %w", delim, ErrMalformed)
}

// NewBody makes a canonical Body from a Go value (a struct with json tags, or
// a map): it goes through JSON so that it is exactly what a device sending
// that JSON would produce.
func NewBody(v any) (Body, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	tree, err := parseJSON(j)
	if err == nil {
		tree, err = normalize("", tree)
	}
	if err != nil {
		return nil, err
	}
	if _, ok := tree.(map[string]any); !ok {
		return nil, fieldf("body", "must be a map/object, got %s", kindOf(tree))
	}
	b, err := encMode.Marshal(tree)
	return Body(b), err
}

// Decode decodes the body into v (a pointer to a struct with cbor or json
// field tags, or to a map).
func (b Body) Decode(v any) error {
	if len(b) == 0 {
		return fieldf("body", "is empty")
	}
	return unmarshal("body", b, v)
}

// MarshalJSON renders the body as JSON. A nil body is null.
func (b Body) MarshalJSON() ([]byte, error) {
	if len(b) == 0 {
		return []byte("null"), nil
	}
	var v any
	if err := anyDecMode.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	return json.Marshal(v)
}

// eventWire is the encoded form of an Event that devices send.
type eventWire struct {
	ID   string          `json:"id"`
	Type string          `json:"type"`
	TS   int64           `json:"ts"`
	Body json.RawMessage `json:"body,omitempty"`
}

// MarshalJSON encodes the event as a device would send it, with ts as
// Unix milliseconds.
func (e Event) MarshalJSON() ([]byte, error) {
	w := eventWire{ID: e.ID, Type: e.Type, TS: e.TS.UnixMilli()}
	if len(e.Body) > 0 {
		j, err := e.Body.MarshalJSON()
		if err != nil {
			return nil, err
		}
		w.Body = j
	}
	return json.Marshal(w)
}

// MarshalCBOR encodes the event as a device would send it in CBOR.
func (e Event) MarshalCBOR() ([]byte, error) {
	w := struct {
		ID   string          `cbor:"id"`
		Type string          `cbor:"type"`
		TS   int64           `cbor:"ts"`
		Body cbor.RawMessage `cbor:"body,omitempty"`
	}{e.ID, e.Type, e.TS.UnixMilli(), cbor.RawMessage(e.Body)}
	return encMode.Marshal(w)
}
