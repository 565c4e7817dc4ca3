package protocol_test

import (
	"errors"
	"testing"

	"github.com/outpost-edge/outpost/protocol"
)

func TestAssignmentRoundTrip(t *testing.T) {
	a := protocol.Assignment{Rollout: "r-1", Channel: "stable", Target: "edge-1.4.2-linux-arm64", Version: "1.4.2", NotAfter: 1, Window: "02:00-05:00", Zone: "Europe/Paris"}
	got, err := protocol.DecodeAssignment(protocol.EncodeAssignment(a))
	if err != nil || got != a {
		t.Fatalf("got %+v, %v; want %+v", got, err, a)
	}
	c := protocol.Cancel{Rollout: "r-1", Reason: "paused: 3 failures"}
	gotC, err := protocol.DecodeCancel(protocol.EncodeCancel(c))
	if err != nil || gotC != c {
		t.Fatalf("cancel: got %+v, %v", gotC, err)
	}
	for name, body := range map[string]string{
		"unknown field": `{"rollout":"r","channel":"c","target":"t","version":"1","not_after":1,"run":"rm -rf /"}`,
		"no rollout":    `{"channel":"c","target":"t","version":"1","not_after":1}`,
		"bad rollout":   `{"rollout":"../r","channel":"c","target":"t","version":"1","not_after":1}`,
		"no deadline":   `{"rollout":"r","channel":"c","target":"t","version":"1"}`,
		"bad window":    `{"rollout":"r","channel":"c","target":"t","version":"1","not_after":1,"window":"2-5"}`,
		"space":         `{"rollout":"r","channel":"c","target":"t x","version":"1","not_after":1}`,
		"trailing":      `{"rollout":"r","channel":"c","target":"t","version":"1","not_after":1} {}`,
		"not json":      `ota`,
	} {
		if _, err := protocol.DecodeAssignment([]byte(body)); err == nil {
			t.Errorf("%s: accepted", name)
		} else if name == "unknown field" && !errors.Is(err, protocol.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzDecodeAssignment(f *testing.F) {
	f.Add(protocol.EncodeAssignment(protocol.Assignment{Rollout: "r", Channel: "c", Target: "t", Version: "1", NotAfter: 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := protocol.DecodeAssignment(b)
		if err != nil {
			return
		}
		if again, err := protocol.DecodeAssignment(protocol.EncodeAssignment(a)); err != nil || again != a {
			t.Fatalf("%+v does not round-trip: %+v, %v", a, again, err)
		}
	})
}
