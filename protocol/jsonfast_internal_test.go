package protocol

import (
	"reflect"
	"strings"
	"testing"
)

// jsonFastSeeds cover what the fast path must agree with the slow one on:
// every JSON kind, escapes, bad text (invalid UTF-8, lone surrogates),
// duplicate keys, nesting, and input that is not valid JSON at all.
var jsonFastSeeds = []string{
	`{"id":"a","type":"x.y","ts":1}`,
	`{"id":"a","type":"sale.completed","ts":"2026-11-22T10:15:00.250Z","body":{"lines":[{"sku":"A-1","qty":1000,"price":{"amount":250,"currency":"EUR"}}],"ok":true,"n":null,"f":1.5,"e":-2E+3}}`,
	` [ 1 , -0.5e-3 , "x" , [ ] , { } , true , false , null ] `,
	`{"a":"\u00e9\n\t\"\\\/","b":"\ud83d\ude00"}`,
	`{"a":"\ud83d"}`,
	`{"a":"\udc00x"}`,
	"{\"a\":\"\xff\"}",
	"{\"\xc3\":1}",
	`{"a":1,"a":2}`,
	`{"a":{"b":[{"c":1,"c":2}]}}`,
	`{"": {"": 1, "": 2}}`,
	`{"a":[1,2,{"b":"\udd00"}]}`,
	strings.Repeat("[", MaxNesting+1) + strings.Repeat("]", MaxNesting+1),
	strings.Repeat(`{"a":`, MaxNesting) + "1" + strings.Repeat("}", MaxNesting),
	`{"a":1,}`,
	`{"a":1} x`,
	`"just a string"`,
	`12345678901234567890123`,
	``,
	`{"a":tru}`,
}

func FuzzJSONFastPath(f *testing.F) {
	for _, s := range jsonFastSeeds {
		f.Add([]byte(s), 0)
		f.Add([]byte(s), MaxNesting-2)
	}
	f.Fuzz(func(t *testing.T, b []byte, depth int) {
		depth = max(0, min(depth, MaxNesting))
		fast, ferr := parseJSONAt(b, depth)
		slow, serr := parseJSONSlow(b, depth)
		switch {
		case (ferr == nil) != (serr == nil):
			t.Fatalf("%q: fast path error %v, slow path error %v", b, ferr, serr)
		case ferr != nil && ferr.Error() != serr.Error():
			t.Fatalf("%q: fast path error %q, slow path error %q", b, ferr, serr)
		case ferr == nil && !reflect.DeepEqual(fast, slow):
			t.Fatalf("%q: fast path %#v, slow path %#v", b, fast, slow)
		}
	})
}

func TestJSONFastPathLimits(t *testing.T) {
	many := func(n int, item func(i int) string, open, close string) []byte {
		var sb strings.Builder
		sb.WriteString(open)
		for i := range n {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(item(i))
		}
		sb.WriteString(close)
		return []byte(sb.String())
	}
	for name, b := range map[string][]byte{
		"keys":     many(maxMapPairs+1, func(i int) string { return `"k` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + `":1` }, "{", "}"),
		"distinct": many(maxMapPairs+1, func(i int) string { return `"` + strings.Repeat("k", 1+i/26) + string(rune('a'+i%26)) + `":1` }, "{", "}"),
		"elems":    many(maxArrayElems+1, func(int) string { return "0" }, "[", "]"),
	} {
		fast, ferr := parseJSONAt(b, 0)
		slow, serr := parseJSONSlow(b, 0)
		if (ferr == nil) != (serr == nil) || ferr != nil && ferr.Error() != serr.Error() || ferr == nil && !reflect.DeepEqual(fast, slow) {
			t.Errorf("%s: fast %v / slow %v", name, ferr, serr)
		}
		if name != "keys" && ferr == nil {
			t.Errorf("%s: over the limit, and no error", name)
		}
	}
}
