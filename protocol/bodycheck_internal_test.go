package protocol

import (
	"encoding/hex"
	"testing"
)

// refCheckBody is the straightforward check checkBody replaced: decode into
// values with the limited decoder, then normalize. checkBody must accept
// nothing that it refuses.
func refCheckBody(b []byte) error {
	if len(b) == 0 || b[0]>>5 != 5 {
		return fieldf("body", "must be a CBOR map")
	}
	var v any
	if err := anyDecMode.Unmarshal(b, &v); err != nil {
		return fieldf("body", "%v", err)
	}
	_, err := normalize("body", v)
	return err
}

func TestCheckBody(t *testing.T) {
	for _, c := range []struct {
		hex string
		ok  bool
	}{
		{"a0", true},                    // {}
		{"a16161f5", true},              // {"a": true}
		{"a2616101616202", true},        // {"a":1,"b":2}
		{"a2616201616101", true},        // keys out of canonical order, still no duplicates
		{"a2616101616102", false},       // duplicate key
		{"a3616101616202616103", false}, // duplicate key after an out-of-order one
		{"a1616183010203", true},        // {"a":[1,2,3]}
		{"a16161f93e00", true},          // 1.5 as a half float
		{"a16161f97e00", false},         // NaN
		{"a16161f97c00", false},         // +Inf
		{"a1616141ff", false},           // byte string
		{"a16161c101", false},           // tag
		{"a16161f7", false},             // undefined
		{"a10101", false},               // integer key
		{"bf6161f5ff", false},           // indefinite map
		{"a1616162c328", false},         // invalid UTF-8 text
		{"83010203", false},             // not a map
		{"a16161", false},               // truncated
		{"a16161f600", false},           // trailing byte
	} {
		b, _ := hex.DecodeString(c.hex)
		err := checkBody(b)
		if (err == nil) != c.ok {
			t.Errorf("%s: ok=%v, err=%v", c.hex, c.ok, err)
		}
		if err == nil && refCheckBody(b) != nil {
			t.Errorf("%s: accepted here, refused by the reference: %v", c.hex, refCheckBody(b))
		}
	}
}

func FuzzCheckBody(f *testing.F) {
	for _, s := range []string{"a0", "a2616101616202", "a1616183010203", "a16161a16162f93e00", "a2616201616101",
		"a261610178016102", "a278016101616102"} { // the last two: "a" twice, once with a long head
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkBody(b) == nil {
			if err := refCheckBody(b); err != nil {
				t.Fatalf("checkBody accepted %x, which the reference refuses: %v", b, err)
			}
		}
	})
}
