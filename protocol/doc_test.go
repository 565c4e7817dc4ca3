package protocol_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/protocol"
)

// TestProtocolDoc checks every example in docs/PROTOCOL.md that is marked
// with <!-- check: … -->, so the spec cannot drift from the code:
//
//	check: vector FILE PATH       the block equals that value of a vector file
//	check: event-ok               the block decodes with no refusal
//	check: event-refused FIELD    the block's one event is refused naming FIELD
func TestProtocolDoc(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "PROTOCOL.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- check: ([^>]*?) -->\n```[a-z]*\n(.*?)\n```")
	blocks := re.FindAllSubmatch(doc, -1)
	if len(blocks) < 8 {
		t.Fatalf("found %d checked examples in PROTOCOL.md; the markers may be broken", len(blocks))
	}
	for _, b := range blocks {
		args := strings.Fields(string(b[1]))
		body := string(b[2])
		name := strings.Join(args, " ")
		t.Run(name, func(t *testing.T) {
			switch args[0] {
			case "vector":
				want := vectorValue(t, args[1], args[2])
				if got := strings.Join(strings.Fields(body), ""); got != want {
					t.Fatalf("PROTOCOL.md shows\n%s\nthe vector is\n%s", got, want)
				}
			case "event-ok":
				_, errs, _, err := protocol.DecodeEvents([]byte(body))
				if err != nil || len(errs) > 0 {
					t.Fatalf("refused: %v %v", err, errs)
				}
			case "event-refused":
				_, errs, _, err := protocol.DecodeEvents([]byte(body))
				if err != nil || len(errs) != 1 {
					t.Fatalf("want one refused event, got %v %v", err, errs)
				}
				var fe *protocol.FieldError
				if !errors.As(errs[0].Err, &fe) || fe.Field != args[1] {
					t.Fatalf("refused with %v, want field %s", errs[0], args[1])
				}
			default:
				t.Fatalf("unknown check %q", args[0])
			}
		})
	}
}

func vectorValue(t *testing.T, file, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "vectors", file))
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\[(\d+)\]|([A-Za-z_]+)`).FindAllStringSubmatch(path, -1) {
		if m[1] != "" {
			i, _ := strconv.Atoi(m[1])
			v = v.([]any)[i]
		} else {
			v = v.(map[string]any)[m[2]]
		}
	}
	s, ok := v.(string)
	if !ok {
		t.Fatalf("%s %s is not a string", file, path)
	}
	return s
}
