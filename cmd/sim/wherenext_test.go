package main

import (
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/simulator"
)

// TestWhereNextEndsWithBackOffice: the demo's output ends with the back
// office's page URL and the token to log in with.
func TestWhereNextEndsWithBackOffice(t *testing.T) {
	out, errs := newSyncBuffer(), newSyncBuffer()
	m := NewMain(out, errs)
	m.whereNext(&simulator.Report{API: "http://127.0.0.1:18080", AdminToken: "oa_demo", Dir: t.TempDir()}, false)
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{"http://127.0.0.1:18080/today", "log in with the admin token oa_demo"} {
		if !strings.Contains(last, want) {
			t.Fatalf("last line %q does not say %q; output:\n%s", last, want, out.String())
		}
	}
}
