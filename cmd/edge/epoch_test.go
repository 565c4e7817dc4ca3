package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
)

// TestDivergedStartsEpoch: the adapter the uplink calls when the cloud is
// past the outbox's stream starts a new epoch whose first record is an
// edge.epoch_restarted event (the cloud's copy of the alarm), the status
// shows the kept file, and the outbox tools read it with --file.
func TestDivergedStartsEpoch(t *testing.T) {
	dir := t.TempDir()
	s, _, err := loadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.Open(outboxPath(dir), outbox.Options{Edge: "shop-1", Signer: s, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ob.Close() }()
	body, _ := protocol.NewBody(map[string]any{"store": "s1"})
	for _, id := range []string{"a", "b"} {
		if _, err := ob.Append(context.Background(), []outbox.Entry{{Device: "till-1", Event: protocol.Event{ID: id, Type: "till.opened", TS: time.Now(), Body: body}}}); err != nil {
			t.Fatal(err)
		}
	}
	old := ob.Stream()
	src := outboxSource{ob: ob}
	r := protocol.Receipt{Edge: old.Edge, Epoch: old.Epoch, HWM: 40}
	if d, err := src.Diverges(r); !d || err != nil {
		t.Fatalf("diverges: %v %v", d, err)
	}
	if err := src.Diverged(r); err != nil {
		t.Fatal(err)
	}
	if err := ob.Wait(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	seg, err := ob.Segment(1, 0)
	if err != nil || seg == nil || seg.Stream() == old {
		t.Fatalf("new epoch's first segment: %+v %v", seg, err)
	}
	rec, err := protocol.DecodeRecord(seg.Records[0])
	if err != nil || rec.Type != epochRestartedType || rec.Device != protocol.EdgeDevice {
		t.Fatalf("first record of the new epoch: %+v %v", rec, err)
	}
	m := &Main{ob: ob, Config: Config{DataDir: dir}}
	st := m.Status()
	if len(st.StuckOutboxes) != 1 || st.EpochRestarts != 1 || st.Epoch == old.Epoch.String() {
		t.Fatalf("status %+v", st)
	}
	stuck := st.StuckOutboxes[0]
	if err := ob.Close(); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := Run([]string{"outbox", "export", "--data-dir", dir, "--file", stuck}, &out, &errb); code != 0 {
		t.Fatalf("export the kept file: exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var first map[string]any
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &first) != nil || first["id"] != "a" {
		t.Fatalf("the kept file's records: %q", out.String())
	}
	out.Reset()
	if code := Run([]string{"outbox", "verify", "--data-dir", dir, "--file", stuck}, &out, &errb); code != 0 {
		t.Fatalf("verify the kept file: exit %d: %s%s", code, out.String(), errb.String())
	}
	if filepath.Dir(stuck) != dir {
		t.Fatalf("kept in %s", stuck)
	}
}
