package rollout

import (
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/outpost-edge/outpost/protocol"
)

// FuzzOTAFold feeds the fold ota.* records with any body bytes (an edge's
// own, so outside bytes): it never panics, keeps only bounded, printable
// text, and folds the same records to the same rows whatever their order.
func FuzzOTAFold(f *testing.F) {
	for _, b := range []map[string]any{
		{"version": "1.1.0", "release": 11, "target": "edge-1.1.0-linux-amd64"},
		{"version": "1.1.0", "release": 11, "reason": "health check failed: \x1b[31mred\u202e"},
		{"reason": "command 7"},
		{"version": strings.Repeat("v", 300), "target": strings.Repeat("t", 600)},
	} {
		body, err := protocol.NewBody(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(0), []byte(body))
	}
	f.Add(uint8(1), []byte{0xa1, 0x61})
	kinds := []string{"ota.command_accepted", "ota.downloaded", "ota.installed", "ota.committed", "ota.rolled_back", "ota.refused", "ota.cancelled", "ota.bogus"}
	f.Fuzz(func(t *testing.T, k uint8, body []byte) {
		at := time.Unix(1700000000, 0)
		recs := []protocol.Record{
			{Device: protocol.EdgeDevice, Type: kinds[int(k)%len(kinds)], Body: body},
			{Device: protocol.EdgeDevice, Type: kinds[int(k/8)%len(kinds)], Body: body},
			{Device: "till-1", Type: "ota.committed", Body: body},
		}
		fwd, rev := newFold(), newFold()
		for i, r := range recs {
			fwd.add("e1", int64(i+1), at, r)
		}
		for i := len(recs) - 1; i >= 0; i-- {
			rev.add("e1", int64(i+1), at, recs[i])
		}
		if d := diffFolds(fwd, rev); len(d) != 0 {
			t.Fatalf("the fold depends on the order: %v", d)
		}
		for _, v := range fwd.versions {
			if len(v.Version) > maxVersionBytes || len(v.Target) > maxTargetBytes || len(v.Reason) > maxReasonBytes {
				t.Fatalf("unbounded row %+v", v)
			}
			for _, r := range v.Reason {
				if r == utf8.RuneError || !unicode.IsPrint(r) {
					t.Fatalf("reason %q keeps %q", v.Reason, r)
				}
			}
		}
	})
}

// FuzzParseAgent: a hello's agent field is the edge's own text; whatever
// it is, ParseAgent does not panic, and what it accepts names an arch
// with a slash and no space.
func FuzzParseAgent(f *testing.F) {
	for _, s := range []string{"outpost-edge/1.4.2 (linux/arm64)", "outpost-edge/1.0.0 (linux/arm/v7)", "outpost-edge/ (x)", "curl/8", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, arch, ok := ParseAgent(s)
		if ok && (v == "" || !strings.Contains(arch, "/") || strings.Contains(arch, " ")) {
			t.Fatalf("ParseAgent(%q) = %q, %q", s, v, arch)
		}
	})
}
