package load

import (
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/simulator/verify"
)

func TestCheckStream(t *testing.T) {
	e, _ := withRecords(t, 5)
	rows := func(seqs ...uint64) []verify.Row {
		var out []verify.Row
		for _, s := range seqs {
			out = append(out, verify.Row{Seq: s, Raw: e.raws[s-1], CommittedAt: time.Now()})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		s    verify.Stream
		want string
	}{
		{"complete", verify.Stream{HWM: 5, Rows: rows(1, 2, 3, 4, 5)}, ""},
		{"watermark short", verify.Stream{HWM: 4, Rows: rows(1, 2, 3, 4)}, "watermark is 4"},
		{"missing", verify.Stream{HWM: 5, Rows: rows(1, 2, 4, 5)}, "seq 3 is missing"},
		{"doubled", verify.Stream{HWM: 5, Rows: rows(1, 2, 2, 3, 4, 5)}, "seq 2 is there 2 times"},
		{"swapped", verify.Stream{HWM: 5, Rows: rows(1, 3, 2, 4, 5)}, "row 2 is seq 3"},
		{"altered", verify.Stream{HWM: 5, Rows: append(append(rows(1, 2), verify.Row{Seq: 3, Raw: e.raws[3]}), rows(4, 5)...)}, "chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := checkStream(tc.s, e.stream, e.head, e.hash)
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("checkStream: %q, want %q", got, tc.want)
			}
		})
	}
}
