package fault_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/simulator/fault"
)

func TestParse(t *testing.T) {
	got, err := fault.Parse(" edge-kill:shop-1@25s, cut:shop-2@10s+8s,cloud-kill@40s+2s,slow@5s+10s,throttle:shop-3@1m+30s,blackhole:*@2m+15s")
	if err != nil {
		t.Fatal(err)
	}
	want := []fault.Fault{
		{Kind: fault.Slow, Target: "*", At: 5 * time.Second, For: 10 * time.Second, Latency: fault.DefaultLatency, Jitter: fault.DefaultJitter},
		{Kind: fault.Cut, Target: "shop-2", At: 10 * time.Second, For: 8 * time.Second},
		{Kind: fault.EdgeKill, Target: "shop-1", At: 25 * time.Second},
		{Kind: fault.CloudKill, At: 40 * time.Second, For: 2 * time.Second},
		{Kind: fault.Throttle, Target: "shop-3", At: time.Minute, For: 30 * time.Second, RateKBps: fault.DefaultRateKBps},
		{Kind: fault.Blackhole, Target: "*", At: 2 * time.Minute, For: 15 * time.Second},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	again, err := fault.Parse(fault.Format(got))
	if err != nil || !reflect.DeepEqual(again, got) {
		t.Errorf("Format then Parse: %v %+v", err, again)
	}
	for _, bad := range []struct{ in, says string }{
		{"cut:shop-1", "want kind[:target]@at"},
		{"flood:shop-1@1s+1s", "not one of"},
		{"cut:shop-1@soon+1s", "start"},
		{"cut:shop-1@1s+long", "length"},
		{"cut:shop-1@1s", "needs a length"},
		{"cloud-kill:shop-1@1s", "takes no target"},
	} {
		_, err := fault.Parse(bad.in)
		if err == nil || !strings.Contains(err.Error(), bad.says) {
			t.Errorf("Parse(%q): %v, want an error saying %q", bad.in, err, bad.says)
		}
	}
	if fs, err := fault.Parse(""); err != nil || len(fs) != 0 {
		t.Errorf("empty schedule: %v %v", fs, err)
	}
}

func TestJSON(t *testing.T) {
	f := fault.Fault{Kind: fault.Slow, Target: "shop-1", At: 1500 * time.Millisecond, For: time.Minute, Latency: fault.DefaultLatency, Jitter: fault.DefaultJitter}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"at":"1.5s"`) {
		t.Errorf("JSON %s", b)
	}
	var back fault.Fault
	if err := json.Unmarshal(b, &back); err != nil || back != f {
		t.Errorf("round trip: %v %+v", err, back)
	}
}

// TestSoak checks that the soak schedule runs every kind of fault, on
// every edge and on all at once, inside the run, and is the same for the
// same seed.
func TestSoak(t *testing.T) {
	edges := []string{"shop-1", "shop-2", "shop-3"}
	d := 10 * time.Minute
	fs := fault.Soak(1, d, edges, 30*time.Second)
	kinds := map[fault.Kind]int{}
	targets := map[string]int{}
	for i, f := range fs {
		kinds[f.Kind]++
		targets[f.Target]++
		if f.At+f.For > d {
			t.Errorf("fault %s ends after the run", f)
		}
		if i > 0 && f.At < fs[i-1].At+fs[i-1].For {
			t.Errorf("fault %s starts before %s ends", f, fs[i-1])
		}
	}
	for _, k := range fault.Kinds {
		if kinds[k] == 0 {
			t.Errorf("no %s in %s", k, fault.Format(fs))
		}
	}
	for _, e := range append(edges, "*") {
		if targets[e] == 0 {
			t.Errorf("nothing happens to %s", e)
		}
	}
	if again := fault.Soak(1, d, edges, 30*time.Second); !reflect.DeepEqual(again, fs) {
		t.Error("the same seed made another schedule")
	}
	if parsed, err := fault.Parse(fault.Format(fs)); err != nil || len(parsed) != len(fs) {
		t.Errorf("the soak schedule does not parse back: %v", err)
	}
}
