package main

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/outbox"
	"github.com/outpost-edge/outpost/protocol"
)

// TestReenterResumesAfterCrash: a crash in the middle of entering the lost
// stream's records again (two of five entered) leaves the marker; the next
// start enters the other three, each record once, and removes the marker.
func TestReenterResumesAfterCrash(t *testing.T) {
	dir := t.TempDir()
	path := outboxPath(dir)
	s, _, err := loadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	open := func() *outbox.Outbox {
		ob, err := outbox.Open(path, outbox.Options{Edge: "shop-1", Signer: s, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return ob
	}
	body, _ := protocol.NewBody(map[string]any{"store": "s1"})
	entry := func(id string) outbox.Entry {
		return outbox.Entry{Device: "till-1", Event: protocol.Event{ID: id, Type: "till.opened", TS: time.UnixMilli(1_700_000_000_000), Body: body}}
	}
	ob := open()
	ids := []string{"a", "b", "c", "d", "e"}
	for _, id := range ids {
		if _, err := ob.Append(context.Background(), []outbox.Entry{entry(id)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := markReenter(path, outbox.StuckPath(path, ob.Stream().Epoch)); err != nil {
		t.Fatal(err)
	}
	if _, err := ob.NewEpoch("test: the cloud is behind"); err != nil {
		t.Fatal(err)
	}
	// The crash: only a and b were entered again.
	if _, err := ob.Append(context.Background(), []outbox.Entry{entry("a"), entry("b")}); err != nil {
		t.Fatal(err)
	}
	if err := ob.Close(); err != nil {
		t.Fatal(err)
	}

	ob = open()
	defer ob.Close()
	if err := resumeReenter(ob, path, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := ob.Wait(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	seg, err := ob.Segment(1, 0)
	if err != nil || seg == nil {
		t.Fatalf("segment: %v %v", seg, err)
	}
	var got []string
	for _, b := range seg.Records {
		r, err := protocol.DecodeRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.ID)
	}
	if len(got) != len(ids) {
		t.Fatalf("the new stream holds %v; want each of %v once", got, ids)
	}
	for i, id := range ids {
		if got[i] != id {
			t.Fatalf("the new stream holds %v; want %v", got, ids)
		}
	}
	if _, err := os.Stat(reenterMarkerPath(path)); !os.IsNotExist(err) {
		t.Fatalf("the marker is still there after the re-entry finished: %v", err)
	}
}

// TestReenterMarkerWithoutKeptFile: a crash after the marker was written
// but before the new epoch began leaves a marker whose kept file does not
// exist; the start removes it and enters nothing.
func TestReenterMarkerWithoutKeptFile(t *testing.T) {
	dir := t.TempDir()
	path := outboxPath(dir)
	s, _, err := loadSigner(dir)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.Open(path, outbox.Options{Edge: "shop-1", Signer: s, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	if err := markReenter(path, outbox.StuckPath(path, protocol.Epoch{1, 2, 3})); err != nil {
		t.Fatal(err)
	}
	if err := resumeReenter(ob, path, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(reenterMarkerPath(path)); !os.IsNotExist(err) {
		t.Fatalf("marker left: %v", err)
	}
	if h := ob.State().Head; h != 0 {
		t.Fatalf("head %d: entered something", h)
	}
	// A marker that names a path outside the directory is refused, not followed.
	if err := os.WriteFile(reenterMarkerPath(path), []byte(`{"stuck":"../../etc/passwd"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := resumeReenter(ob, path, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a marker naming ../../etc/passwd was followed")
	}
}
