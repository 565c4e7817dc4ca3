package web

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzSafeNext: whatever the sign-in form's next parameter holds (it is
// outside input), the redirect after sign-in stays on this site: a path
// that a browser resolves against this origin.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"", "/fleet", "//evil.example", "/\\evil.example", "https://evil.example/", "javascript:alert(1)",
		"/events?edge=a&type=b", "\t//evil", "/\t/evil.example", "/\n/x", "/%2F%2Fevil", " /x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		// What a browser makes of it: tabs and newlines dropped, \ as /.
		seen := strings.ReplaceAll(strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(got), "\\", "/")
		if !strings.HasPrefix(seen, "/") || strings.HasPrefix(seen, "//") {
			t.Fatalf("safeNext(%q) = %q: not a path on this site", next, got)
		}
		u, err := url.Parse(got)
		if err == nil && (u.Host != "" || u.Scheme != "") {
			t.Fatalf("safeNext(%q) = %q names host %q scheme %q", next, got, u.Host, u.Scheme)
		}
	})
}

// FuzzCSVSafe: a defused cell never starts with a character a spreadsheet
// reads as a formula, unless it is a plain number; nothing is lost.
func FuzzCSVSafe(f *testing.F) {
	for _, s := range []string{"", "=1+1", "-12", "-1e3", "+x", "@SUM(A1)", "\tx", "plain"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := csvSafe(v)
		if got != v && got != "'"+v {
			t.Fatalf("csvSafe(%q) = %q: changed more than a leading apostrophe", v, got)
		}
		if got == v && v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) && !isNumber(v) {
			t.Fatalf("csvSafe(%q) left a formula", v)
		}
	})
}
