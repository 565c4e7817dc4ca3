package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/internal/pgtest"
)

// `cloud edges add` and `rotate-key` refuse a small-order key with a usage
// error that says why, and register nothing.
func TestEdgesAddRefusesSmallOrderKey(t *testing.T) {
	url := pgtest.New(t)
	var out, errb bytes.Buffer
	if code := Run([]string{"migrate", "--database-url", url}, &out, &errb); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errb.String())
	}
	ident := "01" + strings.Repeat("00", 31)
	for _, cmd := range [][]string{{"edges", "add"}, {"edges", "rotate-key"}} {
		errb.Reset()
		args := append(cmd, "--database-url", url, "--id", "shop-1", "--public-key", ident)
		if code := Run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "small order") || !strings.Contains(errb.String(), "--public-key") {
			t.Fatalf("%s: exit %d, %q; want 2 and the reason", strings.Join(cmd, " "), code, errb.String())
		}
	}
	out.Reset()
	if code := Run([]string{"edges", "list", "--database-url", url}, &out, &errb); code != 0 || strings.Contains(out.String(), "shop-1") {
		t.Fatalf("edges list: exit %d, %q", code, out.String())
	}
}
