package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Command kinds the cloud sends and the edge acts on.
const (
	// CommandAssign is a rollout assignment: "install target T of channel
	// C by time D" (Uptane's director: the edge installs only a target that
	// is both in the signed TUF targets and in a valid assignment for it).
	// Its body is an Assignment.
	CommandAssign = "ota.assign"
	// CommandCancel withdraws the assignments of a rollout that was paused
	// or aborted: an edge that has not installed yet must not. Its body is
	// a Cancel.
	CommandCancel = "ota.cancel"
)

// Assignment is the body of an ota.assign command, as JSON.
type Assignment struct {
	Rollout  string `json:"rollout"`          // the rollout's id
	Channel  string `json:"channel"`          // the TUF channel the target is signed for
	Target   string `json:"target"`           // the TUF target's name
	Version  string `json:"version"`          // the target's version
	NotAfter int64  `json:"not_after"`        // Unix ms: do not start the install later than this
	Window   string `json:"window,omitempty"` // HH:MM-HH:MM in the store's time zone, empty for any time
	Zone     string `json:"zone,omitempty"`   // the store's IANA time zone for Window; empty for the edge's local time
}

// Cancel is the body of an ota.cancel command, as JSON.
type Cancel struct {
	Rollout string `json:"rollout"`
	Reason  string `json:"reason,omitempty"`
}

// EncodeAssignment returns a's JSON body.
func EncodeAssignment(a Assignment) []byte { b, _ := json.Marshal(a); return b }

// EncodeCancel returns c's JSON body.
func EncodeCancel(c Cancel) []byte { b, _ := json.Marshal(c); return b }

// DecodeAssignment decodes and checks an ota.assign body. Unknown fields are
// refused: an edge must not act on a part of an assignment it cannot read.
func DecodeAssignment(body []byte) (Assignment, error) {
	var a Assignment
	if err := decodeStrictJSON("assignment", body, &a); err != nil {
		return a, err
	}
	if err := ValidateName("assignment.rollout", a.Rollout); err != nil {
		return a, err
	}
	if err := checkPrintable("assignment.channel", a.Channel, 64); err != nil {
		return a, err
	}
	if err := checkPrintable("assignment.target", a.Target, 255); err != nil {
		return a, err
	}
	if err := checkPrintable("assignment.version", a.Version, 64); err != nil {
		return a, err
	}
	if a.NotAfter <= 0 {
		return a, fieldf("assignment.not_after", "is %d; want a Unix time in ms", a.NotAfter)
	}
	if a.Window != "" {
		if _, _, err := ParseWindow(a.Window); err != nil {
			return a, fieldf("assignment.window", "%v", err)
		}
	}
	if len(a.Zone) > 64 {
		return a, fieldf("assignment.zone", "is %d bytes; the limit is 64", len(a.Zone))
	}
	return a, nil
}

// DecodeCancel decodes and checks an ota.cancel body.
func DecodeCancel(body []byte) (Cancel, error) {
	var c Cancel
	if err := decodeStrictJSON("cancel", body, &c); err != nil {
		return c, err
	}
	if err := ValidateName("cancel.rollout", c.Rollout); err != nil {
		return c, err
	}
	if len(c.Reason) > 512 {
		return c, fieldf("cancel.reason", "is %d bytes; the limit is 512", len(c.Reason))
	}
	return c, nil
}

// ParseWindow parses a daily window "HH:MM-HH:MM" into its start and end
// after midnight. A window whose end is before its start runs past midnight
// (22:00-04:00). edge/ota schedules downloads and installs by it.
func ParseWindow(s string) (start, end time.Duration, err error) {
	var h1, m1, h2, m2 int
	if n, err := fmt.Sscanf(s, "%d:%d-%d:%d", &h1, &m1, &h2, &m2); err != nil || n != 4 ||
		fmt.Sprintf("%02d:%02d-%02d:%02d", h1, m1, h2, m2) != s {
		return 0, 0, fmt.Errorf("window %q: want HH:MM-HH:MM in local time, such as 02:00-05:00", s)
	}
	if h1 > 23 || m1 > 59 || h2 > 23 || m2 > 59 || h1 < 0 || m1 < 0 || h2 < 0 || m2 < 0 {
		return 0, 0, fmt.Errorf("window %q: hours 00-23, minutes 00-59", s)
	}
	start = time.Duration(h1)*time.Hour + time.Duration(m1)*time.Minute
	end = time.Duration(h2)*time.Hour + time.Duration(m2)*time.Minute
	if start == end {
		return 0, 0, fmt.Errorf("window %q is empty", s)
	}
	return start, end, nil
}

func decodeStrictJSON(what string, body []byte, v any) error {
	if len(body) > MaxCommandBodyBytes {
		return fieldf(what, "is %d bytes; the limit is %d", len(body), MaxCommandBodyBytes)
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%s: %v: %w", what, err, ErrMalformed)
	}
	if d.More() {
		return fmt.Errorf("%s: trailing data after the JSON object: %w", what, ErrMalformed)
	}
	return nil
}

func checkPrintable(field, s string, max int) error {
	if s == "" {
		return fieldf(field, "is empty")
	}
	if len(s) > max {
		return fieldf(field, "is %d bytes; the limit is %d", len(s), max)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '/' && field != "assignment.target" {
			return fieldf(field, "%q has %q at byte %d; use printable ASCII without spaces", s, c, i)
		}
	}
	return nil
}
