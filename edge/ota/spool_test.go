package ota_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/edge/ota"
)

func TestSpool(t *testing.T) {
	sp := ota.Spool{Path: filepath.Join(t.TempDir(), "ota", "events.jsonl")}
	if err := sp.Drain(func([]ota.Event) error { t.Fatal("delivered from an empty spool"); return nil }); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for i, k := range []string{"ota.started", "ota.committed"} {
		if err := sp.Add(ota.Event{Kind: k, Version: "1.1.0", Release: 2, At: at.Add(time.Duration(i))}); err != nil {
			t.Fatal(err)
		}
	}
	// A torn last line (a crash mid-write) is skipped, not fatal.
	f, _ := os.OpenFile(sp.Path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"kind":"ota.comm`)
	f.Close()

	boom := errors.New("outbox closed")
	if err := sp.Drain(func([]ota.Event) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed delivery: %v", err)
	}
	var got []ota.Event
	if err := sp.Drain(func(evs []ota.Event) error { got = evs; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Kind != "ota.started" || got[1].Kind != "ota.committed" || got[0].ID == "" || got[0].ID == got[1].ID {
		t.Fatalf("delivered %+v", got)
	}
	if err := sp.Drain(func(evs []ota.Event) error { t.Fatalf("delivered twice: %+v", evs); return nil }); err != nil {
		t.Fatal(err)
	}
}

// Adds racing drains are each delivered exactly once.
func TestSpoolConcurrent(t *testing.T) {
	sp := ota.Spool{Path: filepath.Join(t.TempDir(), "events.jsonl")}
	const n = 50
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			if err := sp.Add(ota.Event{Kind: "ota.started", Version: "1.0.0", At: time.Unix(0, int64(i+1))}); err != nil {
				t.Error(err)
			}
		}
	}()
	seen := map[string]int{}
	drain := func() {
		if err := sp.Drain(func(evs []ota.Event) error {
			for _, e := range evs {
				seen[e.ID]++
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	for adding := true; adding; {
		select {
		case <-done:
			adding = false
		default:
		}
		drain()
	}
	if len(seen) != n {
		t.Fatalf("delivered %d distinct events, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("event %s delivered %d times", id, c)
		}
	}
}
