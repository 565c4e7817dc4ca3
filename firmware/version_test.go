package firmware_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/firmware"
)

func TestVersionOrder(t *testing.T) {
	// semver.org's precedence example, in order.
	order := []string{"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0"}
	for i := range order {
		for j := range order {
			a, err := firmware.ParseVersion(order[i])
			if err != nil {
				t.Fatal(err)
			}
			b, _ := firmware.ParseVersion(order[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := a.Compare(b); got != want {
				t.Errorf("%s vs %s: %d, want %d", order[i], order[j], got, want)
			}
		}
	}
	a, _ := firmware.ParseVersion("1.2.3+build.7")
	b, _ := firmware.ParseVersion("1.2.3")
	if a.Compare(b) != 0 || a.String() != "1.2.3+build.7" {
		t.Fatalf("build metadata: %v %s", a.Compare(b), a)
	}
}

func TestVersionRefused(t *testing.T) {
	for _, s := range []string{"", "1", "1.2", "v1.2.3", "1.2.3.4", "01.2.3", "1.2.3-", "1.2.3-a..b", "1.2.3-01", "1.2.3+", "1.2.x", "1.2.3-ä", "1.2.-3", "99999999999999999999.0.0"} {
		if _, err := firmware.ParseVersion(s); err == nil {
			t.Errorf("ParseVersion(%q) accepted", s)
		}
	}
}

func TestParseCustom(t *testing.T) {
	good := `{"version":"1.4.2","release":42,"channel":"stable","min_version":"1.2.0","arch":"linux/arm/v7","later":"ignored"}`
	c, err := firmware.ParseCustom([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Release != 42 || c.Arch != "linux/arm/v7" || c.MinVersion != "1.2.0" {
		t.Fatalf("%+v", c)
	}
	for name, tc := range map[string]struct{ raw, mention string }{
		"missing":         {``, "no custom field"},
		"not json":        {`{`, "unexpected end"},
		"no version":      {`{"release":1,"channel":"stable"}`, "version"},
		"bad version":     {`{"version":"1.x","release":1,"channel":"stable"}`, "version"},
		"release zero":    {`{"version":"1.0.0","release":0,"channel":"stable"}`, "release"},
		"negative":        {`{"version":"1.0.0","release":-1,"channel":"stable"}`, "release"},
		"no channel":      {`{"version":"1.0.0","release":1}`, "channel"},
		"channel case":    {`{"version":"1.0.0","release":1,"channel":"Stable"}`, "channel"},
		"bad min_version": {`{"version":"1.0.0","release":1,"channel":"s","min_version":"1"}`, "min_version"},
		"bad arch":        {`{"version":"1.0.0","release":1,"channel":"s","arch":"Linux AMD64"}`, "arch"},
		"huge":            {`{"version":"1.0.0","release":1,"channel":"s","x":"` + strings.Repeat("a", 5000) + `"}`, "bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := firmware.ParseCustom([]byte(tc.raw))
			if !errors.Is(err, firmware.ErrBadCustom) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("got %v, want ErrBadCustom mentioning %q", err, tc.mention)
			}
		})
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"1.0.0", "1.0.0-alpha.1+b.2", "0.0.0", "01.0.0", "1.2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := firmware.ParseVersion(s)
		if err != nil {
			return
		}
		w, err := firmware.ParseVersion(v.String())
		if err != nil || w.Compare(v) != 0 || w.String() != v.String() {
			t.Fatalf("%q round-trips to %q (%v)", s, v.String(), err)
		}
	})
}

func FuzzParseCustom(f *testing.F) {
	f.Add([]byte(`{"version":"1.4.2","release":42,"channel":"stable","min_version":"1.2.0"}`))
	f.Add([]byte(`{"version":"1.0.0","release":1,"channel":"s","arch":"linux/arm64"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := firmware.ParseCustom(raw)
		if err != nil {
			return
		}
		if err := c.Check(); err != nil {
			t.Fatalf("accepted %q but Check says %v", raw, err)
		}
		if _, err := firmware.ParseCustom(c.JSON()); err != nil {
			t.Fatalf("re-encoding of %q refused: %v", raw, err)
		}
	})
}
