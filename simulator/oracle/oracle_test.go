package oracle_test

import (
	"crypto/sha256"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/protocol"
	"github.com/outpost-edge/outpost/simulator/oracle"
)

func TestOracle(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	body, err := protocol.NewBody(map[string]any{"sensor": "s1", "metric": "temp", "value": 3.5})
	if err != nil {
		t.Fatal(err)
	}
	ev := protocol.Event{ID: "s1-1", Type: "telemetry.reading", TS: t0.Add(-26 * time.Hour), Body: body}
	o := oracle.New()
	o.Sent("shop-1", "s1", ev, t0)
	o.Sent("shop-1", "s1", ev, t0.Add(time.Second)) // a retransmit
	o.Acked("s1", "s1-1", t0.Add(2*time.Second))
	o.Acked("s1", "s1-1", t0.Add(3*time.Second)) // the retransmit's ack
	o.Sent("shop-1", "s2", protocol.Event{ID: "s2-1", Type: "note.taken", TS: t0}, t0)

	if c := o.Counts(); c != (oracle.Counts{Events: 2, Acked: 1, Sends: 3}) {
		t.Errorf("counts %+v", c)
	}
	es := o.Entries()
	want := oracle.Entry{Edge: "shop-1", Device: "s1", ID: "s1-1", Type: "telemetry.reading", TS: ev.TS.UnixMilli(),
		BodyHash: sha256.Sum256(body), FirstSent: t0, Acked: t0.Add(2 * time.Second), Sends: 2}
	if len(es) != 2 || !reflect.DeepEqual(es[0], want) || es[1].IsAcked() {
		t.Fatalf("entries %+v", es)
	}

	path := filepath.Join(t.TempDir(), "oracle.jsonl")
	if err := oracle.Save(path, es); err != nil {
		t.Fatal(err)
	}
	back, err := oracle.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range es {
		if !back[i].FirstSent.Equal(es[i].FirstSent) || !back[i].Acked.Equal(es[i].Acked) {
			t.Errorf("entry %d times: %v %v", i, back[i].FirstSent, back[i].Acked)
		}
		back[i].FirstSent, back[i].Acked = es[i].FirstSent, es[i].Acked
	}
	if !reflect.DeepEqual(back, es) {
		t.Errorf("Load(Save) = %+v, want %+v", back, es)
	}

	defer func() {
		if recover() == nil {
			t.Error("an ack of an event never sent did not panic")
		}
	}()
	o.Acked("s9", "nope", t0)
}
