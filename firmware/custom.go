package firmware

import (
	"encoding/json"
	"fmt"
)

// Custom is what every Outpost target carries in its TUF "custom" field,
// signed with the rest of the targets role:
//
//	{"version":"1.4.2","release":42,"channel":"stable","min_version":"1.2.0","arch":"linux/arm64"}
//
// TUF's own version checks cover metadata, not what a target is, so these
// fields are ours: Release is the anti-rollback counter (it must only grow
// from one release to the next, whatever the version string says), Version
// is for people and for MinVersion, which is the oldest running version the
// target may be installed over. Arch, when set, is GOOS/GOARCH[/variant].
type Custom struct {
	Version    string `json:"version"`
	Release    uint64 `json:"release"`
	Channel    string `json:"channel"`
	MinVersion string `json:"min_version,omitempty"`
	Arch       string `json:"arch,omitempty"`
}

// maxCustomBytes bounds the custom field; it is a few short strings.
const maxCustomBytes = 4096

// ParseCustom decodes and checks a target's custom field. Unknown fields
// are ignored (a later release may sign more), but every known one must be
// well formed.
func ParseCustom(raw []byte) (Custom, error) {
	var c Custom
	if len(raw) == 0 {
		return c, fmt.Errorf("%w: no custom field; sign the target with version, release and channel", ErrBadCustom)
	}
	if len(raw) > maxCustomBytes {
		return c, fmt.Errorf("%w: custom field is %d bytes, at most %d", ErrBadCustom, len(raw), maxCustomBytes)
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return Custom{}, fmt.Errorf("%w: %v", ErrBadCustom, err)
	}
	if err := c.Check(); err != nil {
		return Custom{}, err
	}
	return c, nil
}

// Check says what is wrong with c, if anything.
func (c Custom) Check() error {
	if _, err := ParseVersion(c.Version); err != nil {
		return fmt.Errorf("%w: version: %v", ErrBadCustom, err)
	}
	if c.Release == 0 {
		return fmt.Errorf("%w: release must be a counter of at least 1", ErrBadCustom)
	}
	if err := checkName("channel", c.Channel, false); err != nil {
		return err
	}
	if c.MinVersion != "" {
		if _, err := ParseVersion(c.MinVersion); err != nil {
			return fmt.Errorf("%w: min_version: %v", ErrBadCustom, err)
		}
	}
	if c.Arch != "" {
		if err := checkName("arch", c.Arch, true); err != nil {
			return err
		}
	}
	return nil
}

func checkName(field, s string, slash bool) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("%w: %s must be 1 to 64 characters", ErrBadCustom, field)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || slash && c == '/') {
			return fmt.Errorf("%w: %s %q has %q (use lower-case letters, digits, - _ .)", ErrBadCustom, field, s, c)
		}
	}
	return nil
}

// JSON is c as the raw custom field of a target.
func (c Custom) JSON() json.RawMessage {
	b, _ := json.Marshal(c) // a struct of strings and an integer always encodes
	return b
}
